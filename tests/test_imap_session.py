"""The IMAP session state machine: sign-in, states, folders, updates and IDLE, driven with bytes, no sockets."""

from __future__ import annotations

import base64
import calendar
import imaplib
from typing import Any

import pytest

from servers.imap import responses
from servers.imap.mailbox_commands import ListPattern
from servers.imap.session import ImapSession, Reply
from servers.imap.store_api import AuthOutcome, AuthStatus, UidValidityChangedError
from tests.imap_session_helpers import (
    ALICE,
    ALICE_PASSWORD,
    FAILURE_DELAY_S,
    JAN_15,
    MULTIPART,
    PLAIN,
    REPLY,
    FakeDirectory,
    account_of,
    last_line,
    make_session,
    send,
    untagged_lines,
)

# No database here: nothing to prove on a second backend.
pytestmark = pytest.mark.backend_independent

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


def test_pipelined_commands_are_answered_in_order(logged_in):
    data = send(logged_in, b"p1 NOOP\r\np2 SELECT INBOX\r\np3 FETCH 1 UID\r\np4 UNSELECT\r\n")
    assert [line.split(b" ")[0] for line in data.split(b"\r\n") if line and not line.startswith(b"*")] == [
        b"p1",
        b"p2",
        b"p3",
        b"p4",
    ]


def test_a_command_split_across_packets_waits_for_its_end(logged_in):
    assert send(logged_in, b"n1 NO") == b""
    assert send(logged_in, b"OP\r") == b""
    assert send(logged_in, b"\n") == b"n1 OK NOOP completed\r\n"


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


def test_check_and_id_with_nil(selected):
    assert send(selected, "c1 CHECK") == b"c1 OK CHECK completed\r\n"
    assert send(selected, "i1 ID NIL") == b'* ID ("name" "MailConsole")\r\ni1 OK ID completed\r\n'


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


def test_an_empty_initial_response_is_malformed(session):
    assert send(session, "a1 AUTHENTICATE PLAIN =") == b"a1 BAD Malformed authentication response\r\n"


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


def test_ten_bad_commands_in_a_row_end_the_session(logged_in, store):
    for number in range(9):
        assert not logged_in.receive_data(b"x%d BOGUS\r\n" % number).close
    assert send(logged_in, "n1 NOOP") == b"n1 OK NOOP completed\r\n"  # a good command starts the count again
    replies = [logged_in.receive_data(b"y%d FETCH\r\n" % number) for number in range(10)]
    assert [reply.close for reply in replies] == [False] * 9 + [True]
    assert replies[-1].data == b"y9 BAD Command not valid in this state\r\n* BYE Too many bad commands\r\n"
    assert account_of(store).release_count == 1


def test_an_overlong_line_is_bad_and_the_session_goes_on(logged_in):
    assert send(logged_in, b"l1 NOOP " + b"x" * (70 * 1024) + b"\r\n") == b"l1 BAD Line too long\r\n"
    assert send(logged_in, "l2 NOOP") == b"l2 OK NOOP completed\r\n"


def test_a_literal_over_the_limit_is_refused_without_a_continuation(directory):
    session = make_session(directory, max_literal_octets=1000)
    send(session, f'a0 LOGIN alice "{ALICE_PASSWORD}"')
    assert send(session, "p1 APPEND INBOX {1001}") == b"p1 NO [TOOBIG] Literal too large\r\n"
    reply = session.receive_data(b"p2 APPEND INBOX {1001+}\r\n")
    assert reply == Reply(b"p2 BAD Literal too large\r\n", close=True)


# Folders: SELECT, EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE, LIST, LSUB, STATUS.


def test_select_reports_the_folder(logged_in, store):
    data = send(logged_in, "s1 SELECT inbox")
    uidvalidity = store.folders["INBOX"].uidvalidity
    assert data == (
        b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $Work)\r\n"
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted\r\n"
        b"* 3 EXISTS\r\n"
        b"* 0 RECENT\r\n"
        b"* OK [UNSEEN 2] First unseen\r\n"
        b"* OK [UIDVALIDITY %d] UIDs valid\r\n"
        b"* OK [UIDNEXT 4] Predicted next UID\r\n"
        b"s1 OK [READ-WRITE] SELECT completed\r\n" % uidvalidity
    )
    assert logged_in.selected_folder == "INBOX"
    assert logged_in.watch_paths == (f"/fake/{ALICE}/INBOX",)


def test_examine_opens_read_only(logged_in, store):
    data = send(logged_in, "s1 EXAMINE INBOX")
    assert b"* OK [PERMANENTFLAGS ()] Flags permitted\r\n" in data
    assert last_line(data) == b"s1 OK [READ-ONLY] EXAMINE completed"
    assert account_of(store).opened[0].read_only
    assert send(logged_in, "s2 STORE 1 +FLAGS (\\Deleted)") == (
        b"s2 NO [READ-ONLY] The folder is open read-only (EXAMINE)\r\n"
    )
    assert last_line(send(logged_in, "s3 EXPUNGE")).startswith(b"s3 NO [READ-ONLY]")


def test_selecting_another_folder_closes_the_first(selected, store):
    data = send(selected, "s1 SELECT Sent")
    assert data.startswith(b"* OK [CLOSED] Previous folder closed\r\n")
    assert account_of(store).opened[0].closed
    assert selected.selected_folder == "Sent"


def test_a_failed_select_leaves_no_folder_selected(selected):
    assert last_line(send(selected, "s1 SELECT Nowhere")) == b"s1 NO [NONEXISTENT] No such folder"
    assert selected.selected_folder is None
    assert send(selected, "f1 FETCH 1 FLAGS") == b"f1 BAD Command not valid in this state\r\n"


def test_unselect_and_close(selected, store):
    send(selected, "s1 STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert send(selected, "u1 UNSELECT") == b"u1 OK UNSELECT completed\r\n"
    assert len(store.folders["INBOX"].messages) == 3  # UNSELECT does not expunge
    send(selected, "s2 SELECT INBOX")
    assert send(selected, "c1 CLOSE") == b"c1 OK CLOSE completed\r\n"  # expunges, silently
    assert [m.uid for m in store.folders["INBOX"].messages] == [2, 3]
    assert selected.selected_folder is None


def test_create_rename_subscribe_and_delete_a_folder(logged_in, store):
    assert send(logged_in, "f1 CREATE Projects.") == b"f1 OK CREATE completed\r\n"
    assert send(logged_in, "f2 CREATE Projects.2026") == b"f2 OK CREATE completed\r\n"
    assert send(logged_in, "f3 RENAME Projects Work") == b"f3 OK RENAME completed\r\n"
    assert {"Work", "Work.2026"} <= set(store.folders)
    assert send(logged_in, "f4 UNSUBSCRIBE Work") == b"f4 OK UNSUBSCRIBE completed\r\n"
    assert not store.folders["Work"].subscribed
    assert send(logged_in, "f5 SUBSCRIBE Work") == b"f5 OK SUBSCRIBE completed\r\n"
    assert send(logged_in, "f6 DELETE Work.2026") == b"f6 OK DELETE completed\r\n"
    assert "Work.2026" not in store.folders


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        ("CREATE Sent", b"NO [ALREADYEXISTS] Folder exists"),
        ("CREATE inbox", b"NO [ALREADYEXISTS] INBOX always exists"),
        ('CREATE "Entw\xc3\xbcrfe"', b"NO [CANNOT] Folder names are modified UTF-7 (RFC 3501 5.1.3)"),
        ("CREATE &AGE-", b"NO [CANNOT] Folder names are modified UTF-7 (RFC 3501 5.1.3)"),
        ("CREATE a*b", b"NO [CANNOT] Wildcards are not allowed in folder names"),
        ("CREATE ..", b"NO [CANNOT] Invalid folder name"),
        ("CREATE a..b", b"NO [CANNOT] Invalid folder name"),
        ("CREATE .hidden", b"NO [CANNOT] Invalid folder name"),
        ("CREATE a/b", b"NO [CANNOT] Invalid folder name"),
        ('CREATE "a\\\\b"', b"NO [CANNOT] Invalid folder name"),
        ("SELECT ../../etc", b"NO [CANNOT] Invalid folder name"),
        ("RENAME Sent Sent/..", b"NO [CANNOT] Invalid folder name"),
        ('CREATE "a\tb"', b"NO [CANNOT] Folder names are modified UTF-7 (RFC 3501 5.1.3)"),
        ("DELETE INBOX", b"NO [CANNOT] INBOX cannot be deleted"),
        ("DELETE Nowhere", b"NO [NONEXISTENT] No such folder"),
        ("RENAME Sent INBOX", b"NO [ALREADYEXISTS] INBOX always exists"),
        ("RENAME Nowhere Else", b"NO [NONEXISTENT] No such folder"),
    ],
)
def test_folder_commands_refuse_bad_names(logged_in, command, reply):
    assert send(logged_in, f"f1 {command}".encode() + b"\r\n") == b"f1 " + reply + b"\r\n"


def test_a_modified_utf7_folder_name_is_created_as_sent(logged_in, store):
    assert send(logged_in, "f1 CREATE Entw&APw-rfe") == b"f1 OK CREATE completed\r\n"
    assert "Entw&APw-rfe" in store.folders


def test_list_shows_every_folder_with_attributes(logged_in, store):
    store.folders["Work.2026"] = store._new_folder()
    data = send(logged_in, 'l1 LIST "" *')
    assert untagged_lines(data) == [
        b'* LIST (\\HasNoChildren) "." INBOX',
        b'* LIST (\\HasNoChildren \\Archive) "." Archive',
        b'* LIST (\\HasNoChildren \\Drafts) "." Drafts',
        b'* LIST (\\HasNoChildren \\Junk) "." Junk',
        b'* LIST (\\HasNoChildren \\Sent) "." Sent',
        b'* LIST (\\HasNoChildren \\Trash) "." Trash',
        b'* LIST (\\Noselect \\HasChildren) "." Work',
        b'* LIST (\\HasNoChildren) "." Work.2026',
    ]


@pytest.mark.parametrize(
    ("arguments", "names"),
    [
        ('"" %', [b"INBOX", b"Archive", b"Drafts", b"Junk", b"Sent", b"Trash", b"Work"]),
        ('"" Work.%', [b"Work.2026"]),
        ("Work. %", [b"Work.2026"]),
        ('"" inbox', [b"INBOX"]),
        ('"" S*', [b"Sent"]),
        ('"" (Sent Junk)', [b"Junk", b"Sent"]),
        ('"" Nothing*', []),
    ],
)
def test_list_patterns_match_names(logged_in, store, arguments, names):
    store.folders["Work.2026"] = store._new_folder()
    data = send(logged_in, f"l1 LIST {arguments}")
    assert [line.rsplit(b" ", 1)[1] for line in untagged_lines(data)] == names


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("*", "a.b.c", True),
        ("%", "a.b", False),
        ("a.%", "a.b", True),
        ("a.%", "a.b.c", False),
        ("a.*", "a.b.c", True),
        ("%.%", "a.b", True),
        ("*b*", "abc", True),
        ("a%c", "abc", True),
        ("a%c", "a.c", False),
        ("INBOX", "INBOX", True),
        ("inbox.%", "INBOX.Sub", True),
        ("inboxes", "INBOXES", False),
        ("Sent", "sent", False),
        ("", "", True),
    ],
)
def test_list_patterns(pattern, name, expected):
    assert ListPattern("", pattern).matches(name) is expected


def test_a_crafted_list_pattern_does_not_backtrack_forever(logged_in, store):
    store.folders["a" * 200] = store._new_folder()
    data = send(logged_in, 'l1 LIST "" ' + "*a" * 500 + "b")
    assert data == b"l1 OK LIST completed\r\n"
    assert last_line(send(logged_in, 'l2 LIST "" ' + "*" * 1025)) == b"l2 BAD LIST pattern too long"


def test_a_folder_another_program_named_in_utf8_is_listed_as_a_literal(logged_in, store):
    store.folders["Entwürfe"] = store._new_folder()
    data = send(logged_in, 'l1 LIST "" Entw*')
    assert data == '* LIST (\\HasNoChildren) "." {9}\r\nEntwürfe\r\nl1 OK LIST completed\r\n'.encode()


def test_list_with_an_empty_pattern_says_the_delimiter(logged_in):
    assert untagged_lines(send(logged_in, 'l1 LIST "" ""')) == [b'* LIST (\\Noselect) "." ""']


def test_list_extended_selects_special_use_and_subscribed_folders(logged_in, store):
    store.folders["Junk"].subscribed = False
    data = send(logged_in, 'l1 LIST (SPECIAL-USE SUBSCRIBED) "" *')
    assert untagged_lines(data) == [
        b'* LIST (\\HasNoChildren \\Archive \\Subscribed) "." Archive',
        b'* LIST (\\HasNoChildren \\Drafts \\Subscribed) "." Drafts',
        b'* LIST (\\HasNoChildren \\Sent \\Subscribed) "." Sent',
        b'* LIST (\\HasNoChildren \\Trash \\Subscribed) "." Trash',
    ]


def test_list_accepts_remote_and_return_special_use(logged_in):
    assert untagged_lines(send(logged_in, 'l1 LIST (REMOTE) "" Drafts RETURN (SPECIAL-USE)')) == [
        b'* LIST (\\HasNoChildren \\Drafts) "." Drafts'
    ]


def test_list_recursivematch_shows_parents_of_subscribed_folders_with_childinfo(logged_in, store):
    store.folders["Work"] = store._new_folder()
    store.folders["Work"].subscribed = False
    store.folders["Work.2026"] = store._new_folder()
    store.folders["Junk"].subscribed = False
    data = send(logged_in, 'l1 LIST (SUBSCRIBED RECURSIVEMATCH) "" %')
    names = [line.split(b'"." ', 1)[1] for line in untagged_lines(data)]
    assert names == [b"INBOX", b"Archive", b"Drafts", b"Sent", b"Trash", b'Work ("CHILDINFO" ("SUBSCRIBED"))']
    assert b'* LIST (\\HasChildren) "." Work ("CHILDINFO" ("SUBSCRIBED"))' in data


def test_list_return_status_follows_each_folder(logged_in):
    data = send(logged_in, 'l1 LIST "" (INBOX Sent) RETURN (CHILDREN SUBSCRIBED STATUS (MESSAGES UNSEEN))')
    assert untagged_lines(data) == [
        b'* LIST (\\HasNoChildren \\Subscribed) "." INBOX',
        b"* STATUS INBOX (MESSAGES 3 UNSEEN 2)",
        b'* LIST (\\HasNoChildren \\Sent \\Subscribed) "." Sent',
        b"* STATUS Sent (MESSAGES 0 UNSEEN 0)",
    ]


@pytest.mark.parametrize(
    "arguments",
    [
        '(BOGUS) "" *',
        '(RECURSIVEMATCH) "" *',
        '(REMOTE RECURSIVEMATCH) "" *',
        '"" * RETURN (BOGUS)',
        '"" * RETURN STATUS',
        '""',
    ],
)
def test_malformed_list_options_are_bad(logged_in, arguments):
    assert last_line(send(logged_in, f"l1 LIST {arguments}")).startswith(b"l1 BAD")


def test_lsub_lists_subscribed_folders(logged_in, store):
    store.folders["Junk"].subscribed = False
    data = send(logged_in, 'l1 LSUB "" J*')
    assert data == b"l1 OK LSUB completed\r\n"
    assert untagged_lines(send(logged_in, 'l2 LSUB "" S*')) == [b'* LSUB () "." Sent']


def test_status_counts_without_selecting(logged_in, store):
    data = send(logged_in, "t1 STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN RECENT SIZE)")
    uidvalidity = store.folders["INBOX"].uidvalidity
    size = len(PLAIN) + len(MULTIPART) + len(REPLY)
    assert untagged_lines(data) == [
        b"* STATUS INBOX (MESSAGES 3 UIDNEXT 4 UIDVALIDITY %d UNSEEN 2 RECENT 0 SIZE %d)" % (uidvalidity, size)
    ]
    assert send(logged_in, "t2 STATUS INBOX (BOGUS)") == b"t2 BAD Unsupported STATUS item\r\n"
    assert send(logged_in, "t3 STATUS Nowhere (MESSAGES)") == b"t3 NO [NONEXISTENT] No such folder\r\n"


def test_status_deleted_counts_messages_flagged_deleted(selected, store):
    store.folders["Sent"].add(b"x", frozenset({"\\Deleted"}), JAN_15)
    send(selected, "s1 STORE 1:2 +FLAGS.SILENT (\\Deleted)")
    assert untagged_lines(send(selected, "t1 STATUS Sent (DELETED)")) == [b"* STATUS Sent (DELETED 1)"]
    assert untagged_lines(send(selected, "t2 STATUS INBOX (DELETED MESSAGES)")) == [
        b"* STATUS INBOX (DELETED 2 MESSAGES 3)"
    ]
    assert account_of(store).opened[-1].closed


# ENABLE IMAP4rev2.


def test_enable_imap4rev2_changes_select_and_search(logged_in):
    assert send(logged_in, "e1 ENABLE IMAP4rev2 CONDSTORE") == b"* ENABLED IMAP4rev2\r\ne1 OK ENABLE completed\r\n"
    data = send(logged_in, "s1 SELECT INBOX")
    assert b"RECENT" not in data and b"UNSEEN" not in data
    assert b'* LIST () "." INBOX\r\n' in data
    assert untagged_lines(send(logged_in, "q1 SEARCH FLAGGED")) == [b'* ESEARCH (TAG "q1") ALL 2']


def test_imap4rev2_calls_a_parent_without_a_folder_nonexistent(logged_in, store):
    store.folders["Work.2026"] = store._new_folder()
    send(logged_in, "e1 ENABLE IMAP4rev2")
    assert untagged_lines(send(logged_in, 'l1 LIST "" Work')) == [b'* LIST (\\NonExistent \\HasChildren) "." Work']


def test_enable_is_not_valid_while_selected(selected):
    assert send(selected, "e1 ENABLE IMAP4rev2") == b"e1 BAD Command not valid in this state\r\n"


# APPEND.


def test_append_stores_the_message_with_its_flags_and_date(logged_in, store):
    assert send(logged_in, 'p1 APPEND Sent (\\Seen $Sent) "07-Feb-1994 21:52:25 -0800" {12}') == (
        b"+ Ready for literal\r\n"
    )
    data = send(logged_in, "hello\r\nworld")
    assert data == b"p1 OK [APPENDUID %d 1] APPEND completed\r\n" % store.folders["Sent"].uidvalidity
    (message,) = store.folders["Sent"].messages
    assert message.content == b"hello\r\nworld"
    assert message.flags == {"\\Seen", "$Sent"}
    assert message.internal_date == calendar.timegm((1994, 2, 8, 5, 52, 25, 0, 0, 0))


def test_append_to_the_selected_folder_reports_it_as_existing(selected):
    data = send(selected, b"p1 APPEND INBOX {5+}\r\nhello\r\n")
    assert data.startswith(b"* 4 EXISTS\r\np1 OK [APPENDUID ")


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        (b"APPEND Nowhere {1+}\r\nx", b"NO [TRYCREATE] No such folder"),
        (b"APPEND INBOX hello", b"BAD APPEND needs the message as a literal"),
        (b'APPEND INBOX "31-Feb-2026 10:00:00 +0000" {1+}\r\nx', b"BAD Invalid date-time"),
        (b'APPEND INBOX "yesterday" {1+}\r\nx', b"BAD Invalid date-time"),
        (b"APPEND INBOX (\\Recent) {1+}\r\nx", b"BAD Invalid flag \\Recent"),
    ],
)
def test_append_refusals(logged_in, command, reply):
    assert send(logged_in, b"p1 " + command + b"\r\n") == b"p1 " + reply + b"\r\n"


def test_append_over_quota_is_refused_with_overquota(logged_in, store):
    store.limit_octets = store.used_octets() + 3
    assert send(logged_in, b"p1 APPEND INBOX {5+}\r\nhello\r\n") == b"p1 NO [OVERQUOTA] Mailbox is full\r\n"


# QUOTA.


def test_getquotaroot_and_getquota_report_storage_in_kib(logged_in, store):
    store.limit_octets = 10 * 1024 * 1024
    used_kib = -(-store.used_octets() // 1024)
    data = send(logged_in, "q1 GETQUOTAROOT INBOX")
    assert untagged_lines(data) == [b'* QUOTAROOT INBOX ""', b'* QUOTA "" (STORAGE %d 10240)' % used_kib]
    assert untagged_lines(send(logged_in, 'q2 GETQUOTA ""')) == [b'* QUOTA "" (STORAGE %d 10240)' % used_kib]
    assert send(logged_in, "q3 GETQUOTA other") == b'q3 NO [NONEXISTENT] The only quota root is ""\r\n'
    assert last_line(send(logged_in, 'q4 SETQUOTA "" (STORAGE 1)')).startswith(b"q4 NO [NOPERM]")


def test_an_unlimited_account_has_no_quota_resources(logged_in):
    assert untagged_lines(send(logged_in, 'q1 GETQUOTA ""')) == [b'* QUOTA "" ()']


# What other sessions did: EXISTS, EXPUNGE and FETCH FLAGS after commands (RFC 9051 7.5.1).


@pytest.fixture
def other(directory: FakeDirectory) -> ImapSession:
    """A second session of alice's, on the same INBOX."""
    second = make_session(directory)
    send(second, f'b0 LOGIN alice "{ALICE_PASSWORD}"')
    send(second, "b1 SELECT INBOX")
    return second


def test_a_new_message_is_reported_after_the_next_command(selected, store):
    store.deliver(b"Subject: new\r\n\r\nhi\r\n")
    assert send(selected, "n1 NOOP") == b"* 4 EXISTS\r\nn1 OK NOOP completed\r\n"
    assert send(selected, "n2 NOOP") == b"n2 OK NOOP completed\r\n"


def test_flag_changes_by_another_session_are_reported(selected, other):
    send(other, "s1 STORE 2 +FLAGS.SILENT (\\Seen)")
    assert send(selected, "n1 NOOP") == b"* 2 FETCH (UID 2 FLAGS (\\Flagged \\Seen))\r\nn1 OK NOOP completed\r\n"


def test_our_own_flag_changes_are_not_reported_twice(selected):
    send(selected, "s1 STORE 2 +FLAGS (\\Seen)")
    assert send(selected, "n1 NOOP") == b"n1 OK NOOP completed\r\n"


def test_expunges_by_another_session_wait_until_fetch_store_and_search_are_over(selected, other):
    send(other, "s1 STORE 1 +FLAGS.SILENT (\\Deleted)")
    send(other, "e1 EXPUNGE")
    # During FETCH the numbers must not move: message 2 is still number 2; 1 is left out once it is read.
    data = send(selected, "f1 FETCH 1:3 UID")
    assert b"* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 3)\r\n" in data and b"EXPUNGE" not in data
    assert (
        send(selected, "f2 FETCH 1:2 (BODY.PEEK[TEXT]<0.3>)")
        == b"* 2 FETCH (BODY[TEXT]<0> {3}\r\npre)\r\nf2 OK FETCH completed\r\n"
    )
    assert send(selected, "q1 SEARCH UID 3") == b"* SEARCH 3\r\nq1 OK SEARCH completed\r\n"
    assert send(selected, "s1 STORE 3 +FLAGS.SILENT (\\Flagged)") == b"s1 OK STORE completed\r\n"
    assert send(selected, "n1 NOOP") == b"* 1 EXPUNGE\r\nn1 OK NOOP completed\r\n"
    assert send(selected, "f3 FETCH 1 UID") == b"* 1 FETCH (UID 2)\r\nf3 OK FETCH completed\r\n"


def test_new_messages_are_reported_even_during_fetch(selected, store):
    store.deliver(b"Subject: new\r\n\r\nhi\r\n")
    assert send(selected, "f1 FETCH 1 UID") == b"* 1 FETCH (UID 1)\r\n* 4 EXISTS\r\nf1 OK FETCH completed\r\n"


def test_uid_fetch_may_report_expunges(selected, other):
    send(other, "s1 STORE 1 +FLAGS.SILENT (\\Deleted)")
    send(other, "e1 EXPUNGE")
    assert send(selected, "f1 UID FETCH 2 UID") == b"* 2 FETCH (UID 2)\r\n* 1 EXPUNGE\r\nf1 OK UID FETCH completed\r\n"


# IDLE (RFC 2177).


def test_idle_waits_for_done_and_reports_changes_meanwhile(selected, store):
    assert send(selected, "i1 IDLE") == b"+ idling\r\n"
    assert selected.idling
    assert selected.idle_updates() == b""
    store.deliver(b"Subject: new\r\n\r\nhi\r\n")
    assert selected.idle_updates() == b"* 4 EXISTS\r\n"
    assert send(selected, "DONE") == b"i1 OK IDLE terminated\r\n"
    assert not selected.idling


def test_idle_done_may_come_in_the_same_packet_as_the_next_command(selected):
    assert send(selected, b"i1 IDLE\r\nDONE\r\nn1 NOOP\r\n") == (
        b"+ idling\r\ni1 OK IDLE terminated\r\nn1 OK NOOP completed\r\n"
    )


def test_anything_but_done_ends_idle_with_bad(selected):
    send(selected, "i1 IDLE")
    assert send(selected, "n1 NOOP") == b"i1 BAD Expected DONE\r\n"
    assert not selected.idling


def test_idle_without_a_selected_folder_has_nothing_to_report(logged_in):
    assert send(logged_in, "i1 IDLE") == b"+ idling\r\n"
    assert logged_in.idle_updates() == b""
    assert logged_in.watch_paths == ()
    assert send(logged_in, "done") == b"i1 OK IDLE terminated\r\n"


# Python's imaplib, talking to the session through a fake connection: its exact command formats.


class SessionIMAP4(imaplib.IMAP4):
    """imaplib's client with the socket replaced by direct calls into an ImapSession."""

    def __init__(self, session: ImapSession) -> None:
        self.session = session
        self.incoming = bytearray()
        super().__init__("imap.example.com")

    def open(self, host: str = "", port: int = 143, timeout: float | None = None) -> None:
        self.host, self.port = host, port
        self.incoming += self.session.greeting()

    def read(self, size: int) -> bytes:
        data = bytes(self.incoming[:size])
        del self.incoming[:size]
        return data

    def readline(self) -> bytes:
        end = self.incoming.find(b"\n") + 1
        assert end, "the client waits for a line the session never sent"
        return self.read(end)

    def send(self, data: Any) -> None:  # imaplib declares a Buffer; it sends bytes
        self.incoming += self.session.receive_data(bytes(data)).data

    def shutdown(self) -> None:
        self.session.connection_lost()


def test_imaplib_session_from_login_to_logout(session, store):
    password = 'p"a\\ss w{rd}'
    directory = session.authenticator
    assert isinstance(directory, FakeDirectory)
    client = SessionIMAP4(session)
    directory_calls = directory.attempts

    def accept_special_password(user: str, given: str) -> AuthOutcome:
        directory_calls.append((user, given))
        return (
            AuthOutcome(AuthStatus.OK, store.account())
            if given == password
            else AuthOutcome(AuthStatus.BAD_CREDENTIALS)
        )

    session.authenticator = accept_special_password
    assert client.login("alice", password)[0] == "OK"
    assert directory_calls == [(ALICE, password)]
    assert client.select("INBOX") == ("OK", [b"3"])

    status, data = client.append(
        "INBOX", "(\\Seen)", imaplib.Time2Internaldate(JAN_15), b"Subject: appended\r\n\r\nhi\r\n"
    )
    assert status == "OK" and data[0].startswith(b"[APPENDUID ")

    status, data = client.uid("FETCH", "1:*", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])")
    assert status == "OK"
    headers = [item[1] for item in data if isinstance(item, tuple)]
    assert headers[0] == b"From: Bob Example <bob@example.com>\r\nSubject: Hello Alice\r\n\r\n"
    assert headers[-1] == b"Subject: appended\r\n\r\n"

    status, data = client.fetch("1", "(INTERNALDATE FLAGS)")
    assert imaplib.Internaldate2tuple(data[0]) is not None
    assert imaplib.ParseFlags(data[0]) == (b"\\Seen",)

    assert client.uid("SEARCH", "UNSEEN") == ("OK", [b"2 3"])
    assert client.store("2", "+FLAGS", "(\\Deleted)")[0] == "OK"
    assert client.expunge() == ("OK", [b"2"])
    assert client.uid("COPY", "1", "Archive")[0] == "OK"
    status, data = client.list()
    assert status == "OK" and b'(\\HasNoChildren \\Archive) "." Archive' in data
    assert client.status("Archive", "(MESSAGES)") == ("OK", [b"Archive (MESSAGES 1)"])
    assert client.close()[0] == "OK"
    assert client.logout()[0] == "BYE"
    assert account_of(store).release_count == 1


def test_imaplib_login_with_the_password_as_a_literal(session, store):
    # imaplib sends `TAG LOGIN alice {N}`, waits for the continuation, then the octets and CRLF.
    password = 'p"a\\ss w{rd} \u00fc\r\n'
    session.authenticator = lambda user, given: (
        AuthOutcome(AuthStatus.OK, store.account()) if given == password else AuthOutcome(AuthStatus.BAD_CREDENTIALS)
    )
    client = SessionIMAP4(session)
    client.literal = password.encode()
    assert client._simple_command("LOGIN", "alice")[0] == "OK"
    assert session.user == ALICE


def test_imaplib_authenticate_plain_uses_the_continuation(session, store):
    client = SessionIMAP4(session)
    status, _ = client.authenticate("PLAIN", lambda _challenge: f"\0alice\0{ALICE_PASSWORD}".encode())
    assert status == "OK"
    assert client.namespace() == ("OK", [b'(("" ".")) NIL NIL'])
    assert client.logout()[0] == "BYE"


def renumbered(session: ImapSession) -> None:
    """Make the selected folder's next look find its UID map rebuilt (as after a corrupt map)."""

    def refresh() -> Any:
        raise UidValidityChangedError("the folder INBOX was renumbered; select it again")

    assert session.selected is not None
    session.selected.folder.refresh = refresh  # type: ignore[method-assign]


def test_a_folder_renumbered_under_a_session_ends_it_with_bye_after_the_command(selected):
    renumbered(selected)

    reply = selected.receive_data(b"n1 NOOP\r\n")

    assert reply.close
    assert untagged_lines(reply.data)[-1].startswith(b"* BYE")
    assert b"UIDVALIDITY" in reply.data
    assert selected.account is None  # released


def test_a_folder_renumbered_under_an_idle_session_ends_it_with_bye(selected):
    assert send(selected, "i1 IDLE").startswith(b"+")
    renumbered(selected)

    updates = selected.idle_updates()

    assert updates.startswith(b"* BYE")
    assert not selected.idling
    assert selected.account is None
