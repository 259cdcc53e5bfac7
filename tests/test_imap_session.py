"""The IMAP session state machine, driven with bytes and no sockets, over the in-memory store."""

from __future__ import annotations

import base64
import calendar

import pytest

from servers.imap import responses
from servers.imap.session import ImapSession, Reply
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


# Greeting, capabilities, the not-authenticated state.


def test_greeting_names_the_host_and_the_capabilities(session):
    greeting = session.greeting()
    assert greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 IMAP4rev2 LITERAL+ ")
    assert greeting.endswith(b"] imap.example.com IMAP4rev1 ready\r\n")


def test_capability_lists_what_works_before_login(session):
    data = send(session, "c1 CAPABILITY")
    assert untagged_lines(data) == [b"* CAPABILITY " + session.capabilities().encode()]
    words = session.capabilities().split()
    for word in ["IMAP4rev2", "AUTH=PLAIN", "SASL-IR", "IDLE", "MOVE", "UIDPLUS", "ESEARCH", "QUOTA", "LIST-STATUS"]:
        assert word in words
    assert "STARTTLS" not in words  # TLS is already active
    assert "LOGINDISABLED" not in words
    assert last_line(data) == b"c1 OK CAPABILITY completed"


def test_starttls_is_offered_only_when_available_and_not_active(directory):
    assert "STARTTLS" in make_session(directory, tls_active=False).capabilities().split()
    assert "STARTTLS" not in make_session(directory, tls_active=False, tls_available=False).capabilities().split()


def test_without_tls_login_is_disabled_and_refused(directory):
    session = make_session(directory, tls_active=False)
    words = session.capabilities().split()
    assert "LOGINDISABLED" in words and "AUTH=PLAIN" not in words
    assert last_line(send(session, f'a1 LOGIN alice "{ALICE_PASSWORD}"')) == b"a1 NO " + (
        responses.NO_PRIVACY_REQUIRED.encode()
    )
    assert last_line(send(session, "a2 AUTHENTICATE PLAIN")) == b"a2 NO " + responses.NO_PRIVACY_REQUIRED.encode()
    assert directory.attempts == []


def test_plaintext_login_is_allowed_without_tls_when_the_policy_says_so(directory):
    session = make_session(directory, tls_active=False, plaintext_requires_tls=False)
    assert last_line(send(session, f'a1 LOGIN alice "{ALICE_PASSWORD}"')).startswith(b"a1 OK")


def test_unknown_commands_are_bad(session):
    assert send(session, "x1 XYZZY") == b"x1 BAD Unknown command\r\n"


@pytest.mark.parametrize(
    "command", ["SELECT INBOX", 'LIST "" *', "FETCH 1 FLAGS", "APPEND INBOX {1+}\r\nx", "IDLE", "EXPUNGE"]
)
def test_commands_before_login_are_in_the_wrong_state(session, command):
    assert send(session, f"w1 {command}") == b"w1 BAD Command not valid in this state\r\n"


@pytest.mark.parametrize("command", ["FETCH 1 FLAGS", "STORE 1 +FLAGS (\\Seen)", "EXPUNGE", "CLOSE", "UID FETCH 1 UID"])
def test_selected_state_commands_without_a_folder_are_in_the_wrong_state(logged_in, command):
    assert send(logged_in, f"w1 {command}") == b"w1 BAD Command not valid in this state\r\n"


@pytest.mark.parametrize("command", [f'LOGIN alice "{ALICE_PASSWORD}"', "AUTHENTICATE PLAIN", "STARTTLS"])
def test_sign_in_commands_after_login_are_in_the_wrong_state(logged_in, command):
    assert send(logged_in, f"w1 {command}") == b"w1 BAD Command not valid in this state\r\n"


def test_noop_id_and_namespace(logged_in):
    assert send(logged_in, "n1 NOOP") == b"n1 OK NOOP completed\r\n"
    assert send(logged_in, 'n2 ID ("name" "imaplib")') == b'* ID ("name" "MailConsole")\r\nn2 OK ID completed\r\n'
    assert send(logged_in, "n3 NAMESPACE") == b'* NAMESPACE (("" ".")) NIL NIL\r\nn3 OK NAMESPACE completed\r\n'


# LOGIN and AUTHENTICATE.


def test_login_signs_in_and_says_the_new_capabilities(session, store):
    data = send(session, f'a1 LOGIN alice "{ALICE_PASSWORD}"')
    assert data == f"a1 OK [CAPABILITY {session.capabilities()}] Logged in\r\n".encode()
    assert "AUTH=PLAIN" not in session.capabilities()
    assert session.user == ALICE
    assert session.selected_folder is None


def test_a_bare_user_name_belongs_to_the_default_domain(session, directory):
    send(session, f'a1 LOGIN alice "{ALICE_PASSWORD}"')
    assert directory.attempts == [(ALICE, ALICE_PASSWORD)]


def test_a_wrong_password_fails_after_the_authenticators_delay(session):
    reply = session.receive_data(b"a1 LOGIN alice wrong\r\n")
    assert reply == Reply(b"a1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n", delay_s=FAILURE_DELAY_S)
    assert session.user is None


def test_a_locked_account_is_refused(session):
    assert send(session, "a1 LOGIN bob bobs") == b"a1 NO " + responses.NO_LOCKED.encode() + b"\r\n"


def test_three_failed_sign_ins_end_the_session(session):
    send(session, "a1 LOGIN alice wrong")
    send(session, "a2 LOGIN alice wrong")
    reply = session.receive_data(b"a3 LOGIN alice wrong\r\n")
    assert reply.close
    assert reply.data.endswith(b"* BYE Too many failed sign-ins\r\n")
    assert session.receive_data(b"a4 NOOP\r\n") == Reply(close=True)


def test_login_password_in_a_literal(session):
    assert send(session, "a1 LOGIN alice {13}") == b"+ Ready for literal\r\n"
    assert last_line(send(session, ALICE_PASSWORD)).startswith(b"a1 OK")


def plain(authzid: str, authcid: str, password: str) -> str:
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()).decode()


def test_authenticate_plain_with_an_initial_response(session):
    data = send(session, f"a1 AUTHENTICATE PLAIN {plain('', 'alice', ALICE_PASSWORD)}")
    assert last_line(data).startswith(b"a1 OK [CAPABILITY")
    assert session.user == ALICE


def test_authenticate_plain_with_a_continuation(session):
    assert send(session, "a1 AUTHENTICATE PLAIN") == b"+ \r\n"
    assert last_line(send(session, plain(ALICE, ALICE, ALICE_PASSWORD))).startswith(b"a1 OK")


def test_a_star_cancels_authenticate(session):
    send(session, "a1 AUTHENTICATE PLAIN")
    assert send(session, "*") == b"a1 BAD Authentication cancelled\r\n"
    assert send(session, "a2 NOOP") == b"a2 OK NOOP completed\r\n"


@pytest.mark.parametrize("response", ["not-base64!", base64.b64encode(b"no-nuls").decode(), plain("", "", "x")])
def test_malformed_plain_responses_are_bad(session, response):
    assert send(session, f"a1 AUTHENTICATE PLAIN {response}") == b"a1 BAD Malformed authentication response\r\n"


def test_nobody_authenticates_as_someone_else(session, directory):
    data = send(session, f"a1 AUTHENTICATE PLAIN {plain('bob', 'alice', ALICE_PASSWORD)}")
    assert data == b"a1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    assert directory.attempts == []


def test_other_sasl_mechanisms_are_refused(session):
    assert send(session, "a1 AUTHENTICATE CRAM-MD5") == b"a1 NO Unsupported authentication mechanism\r\n"


def test_big_literals_are_refused_before_login(session):
    assert send(session, "a1 LOGIN alice {100000}") == b"a1 NO [TOOBIG] Literal too large\r\n"


# STARTTLS.


@pytest.fixture
def plaintext(directory: FakeDirectory) -> ImapSession:
    return make_session(directory, tls_active=False)


def test_starttls_asks_the_adapter_to_upgrade(plaintext):
    reply = plaintext.receive_data(b"t1 STARTTLS\r\n")
    assert reply == Reply(b"t1 OK Begin TLS negotiation now\r\n", start_tls=True)
    plaintext.tls_started()
    assert "STARTTLS" not in plaintext.capabilities().split()
    assert last_line(send(plaintext, f'a1 LOGIN alice "{ALICE_PASSWORD}"')).startswith(b"a1 OK")


def test_commands_pipelined_after_starttls_are_never_executed(plaintext, directory):
    reply = plaintext.receive_data(f't1 STARTTLS\r\na1 LOGIN alice "{ALICE_PASSWORD}"\r\nn1 NOOP\r\n'.encode())
    assert reply.data == b"t1 OK Begin TLS negotiation now\r\n"
    assert plaintext.receive_data(b"n2 NOOP\r\n") == Reply()  # before the handshake: dropped
    plaintext.tls_started()
    assert send(plaintext, "n3 NOOP") == b"n3 OK NOOP completed\r\n"
    assert directory.attempts == []
    assert plaintext.user is None


def test_tls_started_discards_a_half_received_command(plaintext):
    plaintext.receive_data(b"t1 STARTTLS\r\n")
    plaintext.tls_started()
    plaintext._parser.feed(b"x1 LOGIN alice {5}\r\nal")  # as if it arrived just before the handshake
    plaintext.tls_started()
    assert send(plaintext, "n1 NOOP") == b"n1 OK NOOP completed\r\n"


def test_starttls_is_refused_when_active_or_unavailable(directory):
    assert send(make_session(directory), "t1 STARTTLS") == b"t1 BAD TLS already active\r\n"
    unavailable = make_session(directory, tls_active=False, tls_available=False)
    assert send(unavailable, "t1 STARTTLS") == b"t1 NO TLS not available\r\n"


# Ending the session.


def test_logout_says_bye_and_closes(logged_in, store):
    reply = logged_in.receive_data(b"z1 LOGOUT\r\n")
    assert reply == Reply(b"* BYE IMAP4rev1 server logging out\r\nz1 OK LOGOUT completed\r\n", close=True)
    assert account_of(store).release_count == 1


@pytest.mark.parametrize("ending", ["LOGOUT", "drop", "autologout"])
def test_the_account_and_folder_are_released_once_however_the_session_ends(selected, store, ending):
    if ending == "LOGOUT":
        send(selected, "z1 LOGOUT")
    elif ending == "autologout":
        assert selected.autologout() == b"* BYE Autologout; idle too long\r\n"
    selected.connection_lost()
    selected.connection_lost()
    assert account_of(store).release_count == 1
    assert account_of(store).opened[0].closed


# Errors: StoreError codes, unexpected failures.


def test_store_errors_become_no_with_their_response_code(logged_in):
    assert send(logged_in, "e1 SELECT Nowhere") == b"e1 NO [NONEXISTENT] No such folder\r\n"
    assert logged_in.selected_folder is None


def test_an_unexpected_failure_is_a_serverbug_and_the_session_goes_on(logged_in, store, caplog):
    store.fail_next = RuntimeError("disk on fire")
    assert send(logged_in, 'e1 LIST "" *') == b"e1 NO [SERVERBUG] Internal error, try again\r\n"
    assert "disk on fire" in caplog.text
    assert last_line(send(logged_in, 'e2 LIST "" *')) == b"e2 OK LIST completed"


def test_syntax_errors_in_arguments_are_bad(selected):
    assert send(selected, "b1 FETCH 1:x FLAGS") == b"b1 BAD Invalid sequence set\r\n"
    assert send(selected, "b2 FETCH 1 (FLAGS") == b"b2 BAD Unbalanced parentheses\r\n"
    assert send(selected, "b3 FETCH 1 NONSENSE") == b"b3 BAD Unknown FETCH item NONSENSE\r\n"
    assert send(selected, "b4 FETCH 9 FLAGS") == b"b4 BAD Invalid message sequence number\r\n"
    assert send(selected, "b5 SELECT") == b"b5 BAD Wrong number of arguments\r\n"


def test_an_overlong_line_is_bad_and_the_session_goes_on(logged_in):
    assert send(logged_in, b"l1 NOOP " + b"x" * (70 * 1024) + b"\r\n") == b"l1 BAD Line too long\r\n"
    assert send(logged_in, "l2 NOOP") == b"l2 OK NOOP completed\r\n"


def test_a_literal_over_the_limit_is_refused_without_a_continuation(directory):
    session = make_session(directory, max_literal_octets=1000)
    send(session, f'a0 LOGIN alice "{ALICE_PASSWORD}"')
    assert send(session, "p1 APPEND INBOX {1001}") == b"p1 NO [TOOBIG] Literal too large\r\n"
    reply = session.receive_data(b"p2 APPEND INBOX {1001+}\r\n")
    assert reply == Reply(b"p2 BAD Literal too large\r\n", close=True)
