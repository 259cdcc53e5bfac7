"""The POP3 session state machine, driven line by line with no sockets and an in-memory mailbox."""

from __future__ import annotations

import base64
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from servers import pop3_replies as replies
from servers.maildir import ensure_maildir
from servers.mailstore import MaildirMailbox, deliver
from servers.pop3 import AuthOutcome, AuthStatus, POP3Session, Reply, SessionState

HOSTNAME = "pop.example.com"
ALICE = "alice@example.com"
ALICE_PASSWORD = "correct horse"

ALICE_MESSAGES = {
    "uid-1": b"Subject: first\r\n\r\nHello Alice\r\n",
    "uid-2": b"Subject: second\r\nFrom: bob@example.com\r\n\r\n.hidden dot\r\n..two dots\r\n.\r\nend\r\n",
    "uid-3": b"Subject: third\r\n\r\nline 1\r\nline 2\r\nline 3\r\n",
}


def line(text: str) -> bytes:
    return text.encode() + b"\r\n"


def sasl_plain(authzid: str, authcid: str, password: str) -> str:
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()).decode()


def retr_body(reply: Reply) -> bytes:
    """Undo the multi-line framing of a RETR/TOP reply: what the client stores."""
    _, rest = reply.data.split(b"\r\n", 1)
    assert rest.endswith(b"\r\n.\r\n") or rest == b".\r\n"
    lines = rest[: -len(b".\r\n")].split(b"\r\n")[:-1]
    return b"".join((ln[1:] if ln.startswith(b".") else ln) + b"\r\n" for ln in lines)


@dataclass(frozen=True)
class FakeMessage:
    uid: str
    size_octets: int


@dataclass
class FakeMailbox:
    contents: dict[str, bytes]
    committed: list[list[str]] = field(default_factory=list)
    release_count: int = 0
    fail_reads: bool = False
    fail_commit: bool = False
    fail_listing: bool = False

    def messages(self) -> list[FakeMessage]:
        if self.fail_listing:
            raise OSError("disk gone")
        return [FakeMessage(uid, len(content)) for uid, content in self.contents.items()]

    def read(self, uid: str) -> bytes:
        if self.fail_reads:
            raise OSError("disk gone")
        return self.contents[uid]

    def commit_deletions(self, uids: Collection[str]) -> None:
        if self.fail_commit:
            raise OSError("disk gone")
        self.committed.append(list(uids))
        for uid in uids:
            del self.contents[uid]

    def release(self) -> None:
        self.release_count += 1


class FakeDirectory:
    """The authenticator's side: alice with her mailbox, a locked bob and a busy carol."""

    def __init__(self, mailbox: FakeMailbox) -> None:
        self.mailbox = mailbox
        self.attempts: list[tuple[str, str]] = []

    def __call__(self, username: str, password: str) -> AuthOutcome:
        self.attempts.append((username, password))
        if username == ALICE and password == ALICE_PASSWORD:
            return AuthOutcome(AuthStatus.OK, self.mailbox)
        if username == "bob@example.com" and password == "bobs":
            return AuthOutcome(AuthStatus.LOCKED)
        if username == "carol@example.com" and password == "carols":
            return AuthOutcome(AuthStatus.IN_USE)
        return AuthOutcome(AuthStatus.BAD_CREDENTIALS)


@pytest.fixture
def mailbox() -> FakeMailbox:
    return FakeMailbox(dict(ALICE_MESSAGES))


@pytest.fixture
def directory(mailbox: FakeMailbox) -> FakeDirectory:
    return FakeDirectory(mailbox)


def make_session(directory: FakeDirectory, **options) -> POP3Session:
    options = {"tls_active": True, "default_domain": "example.com", **options}
    return POP3Session(authenticator=directory, hostname=HOSTNAME, **options)


@pytest.fixture
def session(directory: FakeDirectory) -> POP3Session:
    return make_session(directory)


def send(session: POP3Session, text: str | bytes) -> Reply:
    return session.receive_line(text if isinstance(text, bytes) else text.encode() + b"\r\n")


def log_in(session: POP3Session) -> None:
    send(session, f"USER {ALICE}")
    assert send(session, f"PASS {ALICE_PASSWORD}").data.startswith(b"+OK")


@pytest.fixture
def logged_in(session: POP3Session) -> POP3Session:
    log_in(session)
    return session


# The happy path and the UPDATE state.


def test_greeting_names_the_host(session):
    assert session.greeting() == [line(replies.GREETING.format(hostname=HOSTNAME))]


def test_a_full_session_retrieves_and_deletes_a_message_on_quit(session, mailbox):
    sizes = [len(content) for content in ALICE_MESSAGES.values()]
    assert send(session, f"USER {ALICE}").data == line(replies.USER_ACCEPTED)
    assert send(session, f"PASS {ALICE_PASSWORD}").data == line(replies.LOGGED_IN.format(count=3, octets=sum(sizes)))
    assert session.state is SessionState.TRANSACTION
    assert send(session, "STAT").data == line(replies.MAILDROP_STAT.format(count=3, octets=sum(sizes)))
    assert send(session, "LIST").data == (
        line(replies.SCAN_LISTING_FOLLOWS.format(count=3, octets=sum(sizes)))
        + b"".join(b"%d %d\r\n" % (n, size) for n, size in enumerate(sizes, start=1))
        + b".\r\n"
    )
    assert send(session, "LIST 2").data == line(replies.SCAN_LISTING.format(number=2, octets=sizes[1]))
    assert send(session, "UIDL").data == line(replies.UID_LISTING_FOLLOWS) + b"1 uid-1\r\n2 uid-2\r\n3 uid-3\r\n.\r\n"
    assert send(session, "UIDL 3").data == line(replies.UID_LISTING.format(number=3, uid="uid-3"))
    retr = send(session, "RETR 1")
    assert retr.data == line(replies.MESSAGE_FOLLOWS.format(octets=sizes[0])) + ALICE_MESSAGES["uid-1"] + b".\r\n"
    assert send(session, "DELE 1").data == line(replies.MESSAGE_DELETED.format(number=1))
    assert send(session, "NOOP").data == line(replies.OK)
    assert mailbox.committed == []

    quit_reply = send(session, "QUIT")

    assert quit_reply == Reply(line(replies.BYE.format(hostname=HOSTNAME)), close=True)
    assert mailbox.committed == [["uid-1"]]
    assert list(mailbox.contents) == ["uid-2", "uid-3"]
    assert session.state is SessionState.CLOSED


def test_rset_undoes_the_deletion_marks(logged_in, mailbox):
    send(logged_in, "DELE 1")
    send(logged_in, "DELE 3")
    total = sum(len(content) for content in ALICE_MESSAGES.values())

    assert send(logged_in, "RSET").data == line(replies.MAILDROP_RESET.format(count=3, octets=total))
    assert send(logged_in, "STAT").data == line(replies.MAILDROP_STAT.format(count=3, octets=total))
    send(logged_in, "QUIT")
    assert mailbox.committed == []


def test_dele_is_undone_when_the_connection_drops(logged_in, mailbox):
    send(logged_in, "DELE 1")
    send(logged_in, "DELE 2")

    logged_in.connection_lost()

    assert mailbox.committed == []
    assert list(mailbox.contents) == list(ALICE_MESSAGES)
    assert logged_in.state is SessionState.CLOSED


def test_quit_without_deletions_commits_nothing(logged_in, mailbox):
    send(logged_in, "RETR 1")
    assert send(logged_in, "QUIT").close
    assert mailbox.committed == []


def test_quit_before_login_just_says_goodbye(session, directory):
    assert send(session, "QUIT") == Reply(line(replies.BYE.format(hostname=HOSTNAME)), close=True)
    assert directory.attempts == []


@pytest.mark.parametrize("ending", ["QUIT", "drop", "junk"])
def test_the_mailbox_is_released_once_however_the_session_ends(directory, mailbox, ending):
    session = make_session(directory, max_bad_commands=2)
    log_in(session)
    if ending == "QUIT":
        send(session, "QUIT")
    elif ending == "drop":
        session.connection_lost()
    else:
        send(session, "XYZZY")
        assert send(session, "XYZZY").close
    session.connection_lost()  # the adapter reports the closed socket as well

    assert mailbox.release_count == 1


def test_a_failed_commit_says_some_messages_were_not_removed(logged_in, mailbox):
    mailbox.fail_commit = True
    send(logged_in, "DELE 1")

    assert send(logged_in, "QUIT") == Reply(line(replies.DELETIONS_NOT_COMMITTED), close=True)
    assert mailbox.release_count == 1


def test_lines_after_the_session_closed_get_no_reply(session):
    send(session, "QUIT")
    assert send(session, "NOOP") == Reply(b"", close=True)


# Deleted messages and message numbers.


def test_deleted_messages_are_hidden_from_stat_list_and_uidl(logged_in):
    send(logged_in, "DELE 2")
    sizes = {uid: len(content) for uid, content in ALICE_MESSAGES.items()}
    remaining = sizes["uid-1"] + sizes["uid-3"]

    assert send(logged_in, "STAT").data == line(replies.MAILDROP_STAT.format(count=2, octets=remaining))
    assert send(logged_in, "LIST").data == (
        line(replies.SCAN_LISTING_FOLLOWS.format(count=2, octets=remaining))
        + b"1 %d\r\n3 %d\r\n.\r\n" % (sizes["uid-1"], sizes["uid-3"])
    )
    assert send(logged_in, "UIDL").data == line(replies.UID_LISTING_FOLLOWS) + b"1 uid-1\r\n3 uid-3\r\n.\r\n"


@pytest.mark.parametrize("command", ["RETR 2", "LIST 2", "UIDL 2", "DELE 2", "TOP 2 0"])
def test_commands_on_a_deleted_message_say_it_is_already_deleted(logged_in, command):
    send(logged_in, "DELE 2")
    assert send(logged_in, command).data == line(replies.MESSAGE_ALREADY_DELETED.format(number=2))


@pytest.mark.parametrize("number", ["0", "4", "99999999999999999999999"])
def test_numbers_outside_the_maildrop_are_no_such_message(logged_in, number):
    for command in ("RETR", "LIST", "UIDL", "DELE"):
        assert send(logged_in, f"{command} {number}").data == line(replies.NO_SUCH_MESSAGE)


@pytest.mark.parametrize("token", ["-1", "abc", "1.5", "+1", "\u0663"])
def test_tokens_that_are_not_numbers_are_invalid_message_numbers(logged_in, token):
    assert send(logged_in, f"RETR {token}").data == line(replies.INVALID_MESSAGE_NUMBER)


@pytest.mark.parametrize("command", ["RETR", "DELE", "TOP 1", "TOP 1 x", "STAT 1", "LIST 1 2", "NOOP x", "UIDL 1 2"])
def test_wrong_argument_counts_are_syntax_errors(logged_in, command):
    assert send(logged_in, command).data == line(replies.SYNTAX_ERROR)


def test_a_failed_read_is_reported_as_temporary(logged_in, mailbox):
    mailbox.fail_reads = True
    assert send(logged_in, "RETR 1").data == line(replies.MESSAGE_UNREADABLE.format(number=1))
    assert logged_in.state is SessionState.TRANSACTION


# Commands in the wrong state, junk and limits.


@pytest.mark.parametrize("command", ["STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1", "UIDL"])
def test_transaction_commands_before_login_are_in_the_wrong_state(session, command):
    assert send(session, command).data == line(replies.WRONG_STATE)


@pytest.mark.parametrize("command", [f"USER {ALICE}", "PASS x", "AUTH PLAIN", "STLS"])
def test_login_commands_after_login_are_in_the_wrong_state(logged_in, command):
    assert send(logged_in, command).data == line(replies.WRONG_STATE)


@pytest.mark.parametrize("command", ["", "XYZZY", "APOP alice abc", "LAST", "   "])
def test_unknown_commands_are_refused(session, command):
    assert send(session, command).data == line(replies.UNKNOWN_COMMAND)


def test_commands_are_case_insensitive(logged_in):
    assert send(logged_in, "stat").data.startswith(b"+OK")


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe\xfd\r\n", b"USER \xc3(\r\n", b"\x00\x01\x02\r\n", b"NOOP\x00\r\n", b"NO\rOP\r\n", b"NOOP\tx\r\n"],
)
def test_junk_bytes_get_an_error_not_an_exception(logged_in, raw):
    assert send(logged_in, raw).data == line(replies.INVALID_CHARACTERS)


def test_non_ascii_letters_do_not_uppercase_into_a_command(logged_in):
    # "ſ" (long s) uppercases to "S".
    assert send(logged_in, "\u017ftat").data == line(replies.UNKNOWN_COMMAND)


def test_overlong_lines_are_refused(directory):
    session = make_session(directory, max_line_length=20)
    assert send(session, "USER " + "a" * 100).data == line(replies.LINE_TOO_LONG)
    assert send(session, b"NOOP" + b"x" * 10_000).data == line(replies.LINE_TOO_LONG)


def test_a_line_at_the_length_limit_is_accepted(directory):
    session = make_session(directory, max_line_length=20)
    assert send(session, "USER " + "a" * 15).data == line(replies.USER_ACCEPTED)


def test_lines_with_bare_lf_or_no_terminator_are_accepted(logged_in):
    assert send(logged_in, b"NOOP\n").data == line(replies.OK)
    assert send(logged_in, b"NOOP").data == line(replies.OK)


def test_the_bad_command_limit_closes_the_session(directory):
    session = make_session(directory, max_bad_commands=3)
    assert not send(session, "XYZZY").close
    assert not send(session, b"\xff\r\n").close

    reply = send(session, "STAT")

    assert reply == Reply(line(replies.TOO_MANY_ERRORS), close=True)
    assert session.state is SessionState.CLOSED


def test_a_good_command_resets_the_bad_command_count(directory):
    session = make_session(directory, max_bad_commands=3)
    send(session, "XYZZY")
    send(session, "XYZZY")
    send(session, "CAPA")
    send(session, "XYZZY")
    assert not send(session, "XYZZY").close


def test_repeated_failed_logins_count_as_bad_commands(directory):
    session = make_session(directory, max_bad_commands=2)
    send(session, f"USER {ALICE}")
    send(session, "PASS wrong")
    send(session, f"USER {ALICE}")  # +OK resets the count; only consecutive errors close
    send(session, "PASS wrong")
    assert send(session, "PASS wrong").close


# USER/PASS and AUTH PLAIN.


def test_unknown_user_and_wrong_password_get_identical_replies(session):
    send(session, "USER nobody@example.com")
    unknown_user = send(session, f"PASS {ALICE_PASSWORD}")
    send(session, f"USER {ALICE}")
    wrong_password = send(session, "PASS guess")
    unknown_user_sasl = send(session, f"AUTH PLAIN {sasl_plain('', 'nobody@example.com', 'x')}")
    wrong_password_sasl = send(session, f"AUTH PLAIN {sasl_plain('', ALICE, 'x')}")

    assert unknown_user == wrong_password == unknown_user_sasl == wrong_password_sasl
    assert unknown_user.data == line(replies.AUTH_FAILED)
    assert session.state is SessionState.AUTHORIZATION


def test_user_gets_the_same_reply_whether_or_not_the_user_exists(session):
    assert send(session, "USER nobody@example.com") == send(session, f"USER {ALICE}")


def test_pass_without_user_is_refused(session):
    assert send(session, f"PASS {ALICE_PASSWORD}").data == line(replies.USER_FIRST)


def test_a_failed_pass_needs_a_new_user(session):
    send(session, f"USER {ALICE}")
    send(session, "PASS guess")
    assert send(session, f"PASS {ALICE_PASSWORD}").data == line(replies.USER_FIRST)


def test_a_password_may_contain_spaces(session, directory):
    send(session, f"USER {ALICE}")
    send(session, "PASS  two  spaces ")
    assert directory.attempts == [(ALICE, " two  spaces ")]


def test_a_locked_mailbox_is_reported(session):
    send(session, "USER bob@example.com")
    assert send(session, "PASS bobs").data == line(replies.MAILBOX_LOCKED)


def test_a_mailbox_in_use_is_reported(session):
    assert send(session, f"AUTH PLAIN {sasl_plain('', 'carol', 'carols')}").data == line(replies.MAILBOX_IN_USE)
    assert session.state is SessionState.AUTHORIZATION


def test_a_bare_user_name_gets_the_default_domain(session, directory):
    send(session, "USER alice")
    reply = send(session, f"PASS {ALICE_PASSWORD}")
    assert directory.attempts == [(ALICE, ALICE_PASSWORD)]
    assert reply.data.startswith(b"+OK")


def test_a_qualified_user_name_is_kept(session, directory):
    send(session, "USER alice@other.example")
    send(session, "PASS x")
    assert directory.attempts == [("alice@other.example", "x")]


def test_a_listing_failure_at_login_is_temporary_and_releases_the_mailbox(session, mailbox):
    mailbox.fail_listing = True
    send(session, f"USER {ALICE}")
    assert send(session, f"PASS {ALICE_PASSWORD}").data == line(replies.MAILBOX_UNAVAILABLE)
    assert session.state is SessionState.AUTHORIZATION
    assert mailbox.release_count == 1


def test_auth_plain_with_an_initial_response_logs_in(session, directory):
    reply = send(session, f"AUTH PLAIN {sasl_plain('', ALICE, ALICE_PASSWORD)}")
    assert reply.data.startswith(b"+OK")
    assert session.state is SessionState.TRANSACTION
    assert session.username == ALICE


def test_auth_plain_with_a_continuation_logs_in(session):
    assert send(session, "AUTH PLAIN").data == line(replies.SASL_CONTINUE)
    assert send(session, sasl_plain("", "alice", ALICE_PASSWORD)).data.startswith(b"+OK")
    assert session.username == ALICE


def test_auth_plain_is_cancelled_with_a_star(session, directory):
    send(session, "AUTH PLAIN")
    assert send(session, "*").data == line(replies.AUTH_CANCELLED)
    assert directory.attempts == []
    # Back to ordinary commands, not waiting for another response.
    assert send(session, "CAPA").data.startswith(b"+OK")


def test_auth_plain_may_name_the_same_user_as_authorization_identity(session):
    assert send(session, f"AUTH PLAIN {sasl_plain(ALICE, 'alice', ALICE_PASSWORD)}").data.startswith(b"+OK")


def test_auth_plain_refuses_to_log_in_as_someone_else(session, directory):
    reply = send(session, f"AUTH PLAIN {sasl_plain('bob@example.com', ALICE, ALICE_PASSWORD)}")
    assert reply.data == line(replies.AUTH_FAILED)
    assert directory.attempts == []


@pytest.mark.parametrize(
    "response",
    [
        "not-base64!",
        "=",
        base64.b64encode(b"no separators").decode(),
        base64.b64encode(b"\0alice\0").decode(),
        base64.b64encode(b"\0\xff\0pw").decode(),
        base64.b64encode(b"a\0b\0c\0d").decode(),
    ],
)
def test_malformed_auth_plain_responses_are_refused(session, response):
    assert send(session, f"AUTH PLAIN {response}").data == line(replies.AUTH_MALFORMED)
    send(session, "AUTH PLAIN")
    assert send(session, response).data == line(replies.AUTH_MALFORMED)


def test_auth_plain_takes_a_utf8_password(session, directory):
    send(session, f"AUTH PLAIN {sasl_plain('', ALICE, 'pässwörd')}")
    assert directory.attempts == [(ALICE, "pässwörd")]


@pytest.mark.parametrize("command", ["AUTH LOGIN", "AUTH CRAM-MD5 abc", "AUTH"])
def test_other_auth_mechanisms_are_refused(session, command):
    expected = replies.SYNTAX_ERROR if command == "AUTH" else replies.AUTH_MECHANISM_UNSUPPORTED
    assert send(session, command).data == line(expected)


# TLS and capabilities.


def capabilities(reply: Reply) -> list[str]:
    status, *lines = reply.data.decode().split("\r\n")
    assert status == replies.CAPABILITIES_FOLLOW
    assert lines[-2:] == [".", ""]
    return lines[:-2]


@pytest.mark.parametrize(
    "command", [f"USER {ALICE}", "PASS x", "AUTH PLAIN", f"AUTH PLAIN {sasl_plain('', ALICE, 'x')}"]
)
def test_plaintext_login_is_refused_before_stls_when_tls_is_required(directory, command):
    session = make_session(directory, tls_active=False, tls_available=True, plaintext_login_requires_tls=True)
    assert send(session, command).data == line(replies.PLAINTEXT_NEEDS_TLS)
    assert directory.attempts == []


def test_plaintext_login_works_without_tls_when_allowed(directory):
    session = make_session(directory, tls_active=False, plaintext_login_requires_tls=False)
    log_in(session)
    assert replies.CAPABILITY_USER in capabilities(send(session, "CAPA"))


def test_capa_before_stls_offers_stls_and_hides_plaintext_login(directory):
    session = make_session(directory, tls_active=False, tls_available=True, plaintext_login_requires_tls=True)
    offered = capabilities(send(session, "CAPA"))
    assert replies.CAPABILITY_STLS in offered
    assert replies.CAPABILITY_USER not in offered
    assert replies.CAPABILITY_SASL_PLAIN not in offered
    assert {replies.CAPABILITY_TOP, replies.CAPABILITY_UIDL, replies.CAPABILITY_RESP_CODES} <= set(offered)


def test_stls_asks_the_adapter_to_start_tls_and_then_login_works(directory):
    session = make_session(directory, tls_active=False, tls_available=True, plaintext_login_requires_tls=True)

    reply = send(session, "STLS")

    assert reply == Reply(line(replies.TLS_BEGIN), start_tls=True)
    session.tls_started()
    offered = capabilities(send(session, "CAPA"))
    assert replies.CAPABILITY_STLS not in offered
    assert {replies.CAPABILITY_USER, replies.CAPABILITY_SASL_PLAIN} <= set(offered)
    log_in(session)


def test_a_user_given_before_stls_is_forgotten(directory):
    session = make_session(directory, tls_active=False, tls_available=True, plaintext_login_requires_tls=False)
    send(session, f"USER {ALICE}")
    send(session, "STLS")
    session.tls_started()
    assert send(session, f"PASS {ALICE_PASSWORD}").data == line(replies.USER_FIRST)


def test_a_line_sent_before_the_tls_handshake_ends_the_session(directory):
    session = make_session(directory, tls_active=False, tls_available=True)
    send(session, "STLS")
    assert send(session, f"USER {ALICE}") == Reply(line(replies.TLS_EXPECTED), close=True)


def test_stls_is_refused_when_tls_is_not_available(directory):
    session = make_session(directory, tls_active=False, tls_available=False)
    assert send(session, "STLS").data == line(replies.TLS_UNAVAILABLE)
    assert replies.CAPABILITY_STLS not in capabilities(send(session, "CAPA"))


def test_stls_is_refused_when_tls_is_already_active(directory):
    session = make_session(directory, tls_active=True, tls_available=True)
    reply = send(session, "STLS")
    assert reply.data == line(replies.TLS_ALREADY_ACTIVE)
    assert not reply.start_tls


def test_capa_works_after_login_without_stls(logged_in):
    assert replies.CAPABILITY_STLS not in capabilities(send(logged_in, "CAPA"))


# Message bodies: CRLF, dot-stuffing, sizes, TOP.


def test_retr_dot_stuffs_lines_that_start_with_a_dot(logged_in):
    reply = send(logged_in, "RETR 2")
    body = reply.data.split(b"\r\n", 1)[1]
    assert body == (
        b"Subject: second\r\nFrom: bob@example.com\r\n\r\n..hidden dot\r\n...two dots\r\n..\r\nend\r\n.\r\n"
    )
    assert retr_body(reply) == ALICE_MESSAGES["uid-2"]


def test_retr_normalises_bare_lf_and_terminates_an_unterminated_last_line(directory, mailbox):
    mailbox.contents = {"lf": b"Subject: lf\n\nbody\n.dot", "cr": b"a\r\r\nb\r"}
    session = make_session(directory)
    log_in(session)
    assert retr_body(send(session, "RETR 1")) == b"Subject: lf\r\n\r\nbody\r\n.dot\r\n"
    assert retr_body(send(session, "RETR 2")) == b"a\r\r\nb\r\r\n"


def test_retr_of_an_empty_message_is_just_the_terminator(directory, mailbox):
    mailbox.contents = {"empty": b""}
    session = make_session(directory)
    log_in(session)
    assert send(session, "RETR 1").data == line(replies.MESSAGE_FOLLOWS.format(octets=0)) + b".\r\n"


def test_top_sends_headers_the_blank_line_and_the_requested_body_lines(logged_in):
    reply = send(logged_in, "TOP 3 2")
    assert reply.data == line(replies.TOP_FOLLOWS) + b"Subject: third\r\n\r\nline 1\r\nline 2\r\n.\r\n"


def test_top_with_zero_lines_sends_only_the_headers_and_blank_line(logged_in):
    assert send(logged_in, "TOP 2 0").data == (
        line(replies.TOP_FOLLOWS) + b"Subject: second\r\nFrom: bob@example.com\r\n\r\n.\r\n"
    )


def test_top_with_more_lines_than_the_body_sends_the_whole_message_dot_stuffed(logged_in):
    assert retr_body(send(logged_in, "TOP 2 1000")) == ALICE_MESSAGES["uid-2"]


def test_top_of_a_message_without_a_body_sends_its_headers(directory, mailbox):
    mailbox.contents = {"headers-only": b"Subject: nothing\nFrom: x@example.com\n"}
    session = make_session(directory)
    log_in(session)
    assert retr_body(send(session, "TOP 1 5")) == b"Subject: nothing\r\nFrom: x@example.com\r\n"


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    return ensure_maildir(tmp_path / "alice")


def maildir_session(maildir: Path) -> POP3Session:
    def authenticate(username: str, password: str) -> AuthOutcome:
        return AuthOutcome(AuthStatus.OK, MaildirMailbox(maildir))

    session = POP3Session(authenticator=authenticate, hostname=HOSTNAME, tls_active=True)
    log_in(session)
    return session


def test_list_sizes_are_the_exact_octets_retr_sends_for_a_real_maildir(maildir):
    stored = [
        b"Subject: crlf\r\n\r\n.leading dot\r\nend\r\n",
        b"Subject: bare lf\n\n.leading dot\nmixed\r\nend\n",
        b"Subject: unterminated\n\nno newline at the end",
    ]
    for content in stored:
        deliver(maildir, [content])
    session = maildir_session(maildir)

    listing = send(session, "LIST").data.split(b"\r\n")[1:-2]
    sizes = [int(entry.split()[1]) for entry in listing]
    bodies = [retr_body(send(session, f"RETR {number}")) for number in (1, 2, 3)]

    assert sizes == [len(body) for body in bodies]
    assert bodies[1] == b"Subject: bare lf\r\n\r\n.leading dot\r\nmixed\r\nend\r\n"
    stat_octets = int(send(session, "STAT").data.split()[2])
    assert stat_octets == sum(sizes)


def test_uidl_is_stable_across_sessions(maildir):
    for number in range(3):
        deliver(maildir, [b"Subject: %d\r\n\r\nbody\r\n" % number])
    first = send(maildir_session(maildir), "UIDL").data
    # Another client reads a message: it moves to cur/ with flags.
    name = sorted(os.listdir(maildir / "new"))[1]
    os.rename(maildir / "new" / name, maildir / "cur" / f"{name}:2,S")

    second = send(maildir_session(maildir), "UIDL").data

    assert second == first
    assert name.encode() in first


def test_quit_removes_the_deleted_message_from_a_real_maildir(maildir):
    kept = deliver(maildir, [b"Subject: keep\r\n\r\n"])
    gone = deliver(maildir, [b"Subject: delete\r\n\r\n"])
    session = maildir_session(maildir)
    uidl = send(session, "UIDL").data
    number = 1 if uidl.index(gone.encode()) < uidl.index(kept.encode()) else 2

    send(session, f"DELE {number}")
    send(session, "QUIT")

    assert os.listdir(maildir / "new") == [kept]


# What the adapter may answer on its event loop, and RETR's one-pass response.


def test_sign_in_and_quit_may_block_but_listing_commands_do_not(session):
    assert session.may_block(b"USER alice\r\n") is False
    assert session.may_block(b"PASS secret\r\n") is True
    assert session.may_block(b"AUTH PLAIN\r\n") is True
    log_in(session)
    for command in (
        b"STAT\r\n",
        b"LIST\r\n",
        b"UIDL 1\r\n",
        b"DELE 1\r\n",
        b"RSET\r\n",
        b"NOOP\r\n",
        b"RETR 1\r\n",
        b"TOP 1 0\r\n",
        b"RETR 99\r\n",
        b"RETR x\r\n",
    ):
        assert session.may_block(command) is False, command
    assert session.may_block(b"QUIT\r\n") is True


def test_a_retr_of_a_large_message_may_block(directory, mailbox):
    mailbox.contents["big"] = b"Subject: big\r\n\r\n" + b"x" * 200_000 + b"\r\n"
    session = make_session(directory)
    log_in(session)
    big_number = [m.uid for m in session._messages].index("big") + 1
    assert session.may_block(f"RETR {big_number}\r\n".encode()) is True


def test_a_command_that_would_end_the_session_for_errors_may_block(directory):
    session = make_session(directory, max_bad_commands=2)
    log_in(session)
    assert session.may_block(b"STAT\r\n") is False
    assert send(session, "BOGUS").data.startswith(b"-ERR")
    assert session.may_block(b"STAT\r\n") is True


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b".",
        b"\r\n",
        b"abc",
        b"abc\r",
        b"abc\r\n",
        b".hidden\r\n.\r\n..\r\nend",
        b"a\r\n.\r\nb\r\n",
        b"mixed\nendings\r\n.dot\n",
        b"\r\r\n\r",
        b"\n",
        b"..\r\n",
        os.urandom(2000),
        bytes(b % 3 and 46 or 10 for b in os.urandom(500)).replace(b"\n", b"\r\n"),
    ],
)
def test_the_one_pass_retr_response_equals_the_line_by_line_one(content):
    from servers.pop3 import _message_response, _multiline, message_lines

    assert _message_response("+OK", content) == _multiline("+OK", message_lines(content))
