"""FETCH's cache of rendered ENVELOPEs and BODYSTRUCTUREs: bounded, and never stale over the real Maildir store."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from servers import mailstore
from servers.imap import fetch_cache
from servers.imap.fetch_cache import ENTRY_OVERHEAD_OCTETS, FetchCaches
from servers.imap.session import ImapSession
from servers.imap.store_api import AuthOutcome, AuthStatus
from servers.maildir import ensure_maildir
from servers.mailfolders import MaildirAccount, MaildirFolder


def message(subject: str) -> bytes:
    return f"From: bob@example.com\r\nSubject: {subject}\r\n\r\nHello Alice\r\n".encode()


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    return ensure_maildir(tmp_path / "Mailbox" / "example.com" / "alice")


@pytest.fixture(autouse=True)
def fresh_process_caches(monkeypatch: pytest.MonkeyPatch) -> FetchCaches:
    caches = FetchCaches()
    monkeypatch.setattr(fetch_cache, "process_caches", caches)
    return caches


def signed_in(maildir: Path) -> ImapSession:
    def authenticate(user: str, password: str) -> AuthOutcome:
        return AuthOutcome(AuthStatus.OK, MaildirAccount(maildir, "alice@example.com", quota_octets=None))

    session = ImapSession(
        hostname="imap.example.com",
        authenticator=authenticate,
        tls_available=False,
        tls_active=False,
        plaintext_requires_tls=False,
    )
    send(session, "a0 LOGIN alice secret")
    return session


def send(session: ImapSession, line: str) -> bytes:
    return session.receive_data(line.encode() + b"\r\n").data


def subjects(data: bytes) -> list[bytes]:
    return re.findall(rb'ENVELOPE \((?:NIL|"[^"]*") "([^"]*)"', data)


# --- the bound ---------------------------------------------------------------------------------------


def test_the_least_recently_used_folders_are_forgotten_past_the_bound():
    caches = FetchCaches(max_octets=10 * (100 + ENTRY_OVERHEAD_OCTETS))
    old, recent = caches.cache("old"), caches.cache("recent")
    old.put(1, b"x" * 100)
    recent.put(1, b"y" * 100)
    caches.cache("old")  # used again: now "recent" is the least recently used
    newest = caches.cache("newest")
    for uid in range(1, 10):
        newest.put(uid, b"z" * 100)

    assert caches.octets <= caches.max_octets
    assert caches.cache("old").get(1) == b"x" * 100
    assert caches.cache("recent").get(1) is None


def test_one_folder_bigger_than_the_bound_keeps_its_newest_values():
    caches = FetchCaches(max_octets=10 * (100 + ENTRY_OVERHEAD_OCTETS))
    big = caches.cache("big")
    for uid in range(1, 101):
        big.put(uid, b"z" * 100)

    assert caches.octets <= caches.max_octets
    assert big.octets == caches.octets
    assert big.get(100) == b"z" * 100
    assert big.get(1) is None


# --- over the Maildir store -------------------------------------------------------------------------


def test_a_second_fetch_of_envelopes_reads_no_message_file(maildir, monkeypatch):
    for n in range(3):
        mailstore.deliver(maildir, [message(f"number {n}")])
    first = signed_in(maildir)
    send(first, "s SELECT INBOX")
    fetched = send(first, "f FETCH 1:* (UID ENVELOPE)")

    def no_reads(self: MaildirFolder, uid: int) -> bytes:
        raise AssertionError("read a message file")

    monkeypatch.setattr(MaildirFolder, "read_header", no_reads)
    monkeypatch.setattr(MaildirFolder, "read", no_reads)
    second = signed_in(maildir)
    send(second, "s SELECT INBOX")

    assert subjects(fetched) == [b"number 0", b"number 1", b"number 2"]
    assert send(second, "f FETCH 1:* (UID ENVELOPE)") == fetched


def test_a_message_that_comes_back_under_the_same_name_shows_its_own_envelope(maildir):
    key = mailstore.deliver(maildir, [message("the first")])
    session = signed_in(maildir)
    send(session, "s SELECT INBOX")
    before = send(session, "f FETCH 1 (UID ENVELOPE)")
    # Another program removes the file and writes a different message under the same unique name.
    os.unlink(maildir / "new" / key)
    send(session, "n NOOP")
    (maildir / "new" / key).write_bytes(message("the second"))
    send(session, "n NOOP")
    after = send(session, "f FETCH 1 (UID ENVELOPE)")

    assert subjects(before) == [b"the first"]
    assert subjects(after) == [b"the second"]
    assert b"UID 1 " in before and b"UID 2 " in after


def test_a_folder_made_again_under_the_same_name_does_not_show_the_old_envelopes(maildir):
    account = MaildirAccount(maildir, "alice@example.com", quota_octets=None)
    account.create_folder("Work")
    account.append("Work", message("old work"), frozenset(), None)
    session = signed_in(maildir)
    send(session, "s SELECT Work")
    before = send(session, "f FETCH 1 ENVELOPE")
    send(session, "c CLOSE")
    account.delete_folder("Work")
    account.create_folder("Work")
    account.append("Work", message("new work"), frozenset(), None)
    send(session, "s SELECT Work")

    assert subjects(before) == [b"old work"]
    assert subjects(send(session, "f FETCH 1 ENVELOPE")) == [b"new work"]


def test_bodystructure_is_cached_and_served_with_the_body_section(maildir):
    mailstore.deliver(maildir, [message("structured")])
    session = signed_in(maildir)
    send(session, "s SELECT INBOX")
    first = send(session, "f FETCH 1 (BODYSTRUCTURE BODY.PEEK[TEXT])")
    again = send(session, "f FETCH 1 (BODYSTRUCTURE BODY.PEEK[TEXT])")

    assert b'BODYSTRUCTURE ("TEXT" "PLAIN"' in first and b"BODY[TEXT] {13}\r\nHello Alice\r\n" in first
    assert again == first
    assert len(fetch_cache.process_caches) == 2  # the folder's ENVELOPE and BODYSTRUCTURE caches
