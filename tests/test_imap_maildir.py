"""The IMAP session over the real Maildir++ store: the protocol and the disk together, with no sockets."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from servers import mailstore
from servers.imap.session import ImapSession
from servers.imap.store_api import AuthOutcome, AuthStatus
from servers.maildir import ensure_maildir
from servers.mailfolders import MaildirAccount

# No database here: the store on temporary directories; nothing to prove on a second backend.
pytestmark = pytest.mark.backend_independent

MESSAGE = b"From: bob@example.com\r\nSubject: hello\r\n\r\nHello Alice\r\n"


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    return ensure_maildir(tmp_path / "Mailbox" / "example.com" / "alice")


def signed_in(maildir: Path) -> ImapSession:
    def authenticate(user: str, password: str) -> AuthOutcome:
        account = MaildirAccount(maildir, "alice@example.com", quota_octets=10_000)
        return AuthOutcome(AuthStatus.OK, account)

    session = ImapSession(
        hostname="imap.example.com",
        authenticator=authenticate,
        default_domain="example.com",
        tls_available=True,
        tls_active=True,
        plaintext_requires_tls=True,
    )
    assert b"a0 OK" in send(session, 'a0 LOGIN alice "secret"')
    return session


def send(session: ImapSession, line: str) -> bytes:
    return session.receive_data(line.encode() + b"\r\n").data


def test_select_fetch_store_and_expunge_change_the_files_on_disk(maildir):
    keys = [mailstore.deliver(maildir, [MESSAGE]) for _ in range(3)]
    session = signed_in(maildir)

    selected = send(session, "s SELECT INBOX")
    fetched = send(session, "f UID FETCH 1:* (UID FLAGS RFC822.SIZE)")
    send(session, "t UID STORE 2 +FLAGS.SILENT (\\Deleted \\Seen)")
    expunged = send(session, "e EXPUNGE")

    assert b"* 3 EXISTS" in selected and re.search(rb"\[UIDVALIDITY \d+\]", selected)
    assert b"[UIDNEXT 4]" in selected
    assert fetched.count(b"RFC822.SIZE %d" % len(MESSAGE)) == 3
    assert b"* 2 EXPUNGE" in expunged
    assert sorted(os.listdir(maildir / "new")) == sorted([keys[0], keys[2]])


def test_append_copy_and_move_answer_with_the_uids_the_store_gave(maildir):
    mailstore.deliver(maildir, [MESSAGE])
    session = signed_in(maildir)

    appended = send(session, f"a APPEND Archive (\\Seen) {{{len(MESSAGE)}+}}\r\n" + MESSAGE.decode())
    send(session, "s SELECT INBOX")
    copied = send(session, "c UID COPY 1 Archive")
    moved = send(session, "m UID MOVE 1 Trash")

    uidvalidity = re.search(rb"\[APPENDUID (\d+) 1\]", appended)
    assert uidvalidity is not None
    assert b"[COPYUID %s 1 2]" % uidvalidity.group(1) in copied
    assert re.search(rb"COPYUID \d+ 1 1\]", moved) and b"* 1 EXPUNGE" in moved
    assert len(os.listdir(maildir / ".Archive" / "cur") + os.listdir(maildir / ".Archive" / "new")) == 2
    assert os.listdir(maildir / "new") == os.listdir(maildir / "cur") == []


def test_a_second_session_hears_of_new_mail_and_of_a_pop3_deletion(maildir):
    (first,) = [mailstore.deliver(maildir, [MESSAGE])]
    watcher = signed_in(maildir)
    send(watcher, "s SELECT INBOX")

    mailstore.deliver(maildir, [MESSAGE])
    arrived = send(watcher, "n NOOP")
    mailstore.MaildirMailbox(maildir).commit_deletions([first])  # POP3's DELE 1 and QUIT
    gone = send(watcher, "n NOOP")

    assert b"* 2 EXISTS" in arrived
    assert b"* 1 EXPUNGE" in gone
