"""The IMAP session tests' world: alice's three messages in an in-memory store, sessions, and ways to talk to them."""

from __future__ import annotations

import calendar

import pytest

from servers.imap.session import ImapSession
from servers.imap.store_api import AuthOutcome, AuthStatus
from tests.imap_fake_store import FakeAccount, FakeMailStore

HOSTNAME = "imap.example.com"
ALICE = "alice@example.com"
ALICE_PASSWORD = "correct horse"
FAILURE_DELAY_S = 2.0
JAN_15 = float(calendar.timegm((2026, 1, 15, 10, 0, 0, 0, 0, 0)))
FEB_20 = float(calendar.timegm((2026, 2, 20, 23, 30, 0, 0, 0, 0)))

PLAIN = (
    b"From: Bob Example <bob@example.com>\r\n"
    b"To: alice@example.com\r\n"
    b"Subject: Hello Alice\r\n"
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"\r\n"
    b"Lunch on Friday?\r\n"
)
MULTIPART = (
    b"From: carol@example.com\r\n"
    b"To: alice@example.com\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Date: Tue, 10 Feb 2026 08:00:00 +0100\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--outer\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Sch=C3=B6ne Gr=C3=BC=C3=9Fe\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"Content-Disposition: attachment\r\n"
    b"\r\n"
    b"Subject: forwarded\r\n"
    b"From: dave@example.com\r\n"
    b"\r\n"
    b"inner body\r\n"
    b"--outer--\r\n"
)
REPLY = (
    b"From: dave@example.com\r\n"
    b"To: alice@example.com\r\n"
    b"Cc: carol@example.com\r\n"
    b"Subject: Re: budget\r\n"
    b"X-Priority: 1\r\n"
    b"\r\n"
    b"The numbers are in.\r\n"
)


class FakeDirectory:
    """alice signs in; bob's password is right but his account is locked; anything else fails."""

    def __init__(self, store: FakeMailStore) -> None:
        self.store = store
        self.attempts: list[tuple[str, str]] = []

    def __call__(self, user: str, password: str) -> AuthOutcome:
        self.attempts.append((user, password))
        if user == ALICE and password == ALICE_PASSWORD:
            return AuthOutcome(AuthStatus.OK, self.store.account())
        if user == "bob@example.com" and password == "bobs":
            return AuthOutcome(AuthStatus.LOCKED)
        return AuthOutcome(AuthStatus.BAD_CREDENTIALS, failure_delay_s=FAILURE_DELAY_S)


@pytest.fixture
def store() -> FakeMailStore:
    store = FakeMailStore(ALICE)
    store.deliver(PLAIN, flags=["\\Seen"], date=JAN_15)
    store.deliver(MULTIPART, flags=["\\Flagged"], date=FEB_20)
    store.deliver(REPLY, flags=["\\Answered", "$Work"], date=FEB_20)
    return store


@pytest.fixture
def directory(store: FakeMailStore) -> FakeDirectory:
    return FakeDirectory(store)


def make_session(directory: FakeDirectory, **options) -> ImapSession:
    options = {"tls_available": True, "tls_active": True, "plaintext_requires_tls": True, **options}
    return ImapSession(hostname=HOSTNAME, authenticator=directory, default_domain="example.com", **options)


@pytest.fixture
def session(directory: FakeDirectory) -> ImapSession:
    return make_session(directory)


def send(session: ImapSession, text: str | bytes) -> bytes:
    return session.receive_data(text if isinstance(text, bytes) else text.encode() + b"\r\n").data


def last_line(data: bytes) -> bytes:
    return data.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1]


def untagged_lines(data: bytes) -> list[bytes]:
    return [line for line in data.split(b"\r\n") if line.startswith(b"* ")]


@pytest.fixture
def logged_in(session: ImapSession) -> ImapSession:
    assert last_line(send(session, f'a0 LOGIN alice "{ALICE_PASSWORD}"')).startswith(b"a0 OK")
    return session


@pytest.fixture
def selected(logged_in: ImapSession) -> ImapSession:
    assert last_line(send(logged_in, "s0 SELECT INBOX")).startswith(b"s0 OK")
    return logged_in


def account_of(store: FakeMailStore, index: int = 0) -> FakeAccount:
    return store.accounts[index]


def fetch(session: ImapSession, text: str) -> bytes:
    data = send(session, text)
    assert last_line(data).split(b" ")[1] == b"OK", data
    return data[: data.rindex(b"\r\n", 0, len(data) - 2) + 2] if data.count(b"\r\n") > 1 else b""
