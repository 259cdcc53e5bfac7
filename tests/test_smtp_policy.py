"""SMTP policy decisions without sockets: every rule of connect, EHLO, AUTH, MAIL, RCPT, DATA and the sweep,
and at the end the handler hooks called directly (the glue between aiosmtpd and the policy).

The snapshot is built by hand (no database); each test asserts the reply the session sends. One
real-socket test per path stays in tests/test_smtp_access.py.
"""

import asyncio
import dataclasses
from pathlib import Path

import pytest
from aiosmtpd.smtp import Session

from servers import replies
from servers.message_format import hop_count
from servers.smtp import LocalDeliveryHandler, LocalEnvelope, WorkerCounters
from servers.smtp_policy import (
    GREYLIST_PASS_S,
    GREYLIST_RETRY_WINDOW_S,
    RATE_GRACE_S,
    ClientList,
    Recipient,
    RuleError,
    antispam_exempt,
    auth_failure_reply,
    auth_requires_tls,
    client_refusal,
    closes_connection,
    command_refusal,
    connect_refusal,
    connection_allowed,
    data_refusal,
    dnsbl_answer_lists,
    dnsbl_header,
    dnsbl_query_name,
    dnsbl_refusal,
    ehlo_lines,
    greylist_decision,
    greylist_triplet,
    harvest_penalty,
    is_command_error,
    is_relay_trick,
    mail_refusal,
    message_rate_keys,
    needs_client_name,
    normalize_rule,
    pop_login_recent,
    relay_permitted,
    route_recipient,
    server_full_refusal,
    split_recipient,
    split_zone_list,
    sweep_reply,
)
from servers.snapshot import MailboxEntry, ServerSnapshot, SmtpPolicy

MESSAGE = b"Subject: policy\r\n\r\nbody\r\n"


def lab(**policy) -> ServerSnapshot:
    """lab.test with the mailbox alice, the alias domain alias.test, and relay.test relayed."""
    alice = MailboxEntry("alice@lab.test", Path("/nonexistent/lab.test/alice"), None, None)
    return ServerSnapshot(
        server_id=1,
        name="lab",
        ip_address="127.0.0.1",
        port=25,
        home_dir=Path("/nonexistent"),
        hostname="mx.test.invalid",
        desired_state="running",
        config_version=1,
        max_message_size_bytes=1024 * 1024,
        default_domain="lab.test",
        local_domains=frozenset({"lab.test"}),
        alias_targets={"alias.test": "lab.test"},
        mailboxes={alice.address: alice},
        relay_domains=frozenset({"relay.test"}),
        policy=dataclasses.replace(SmtpPolicy(), **policy),
    )


def mail(snapshot: ServerSnapshot, sender: str, **session) -> str | None:
    values = {"tls_active": False, "messages_accepted": 0, "bytes_accepted": 0, "signed_in_as": None}
    return mail_refusal(snapshot, sender, **{**values, **session})


def rcpt(snapshot: ServerSnapshot, address: str, *, signed_in_as=None, client_ip="127.0.0.1", accepted_so_far=0):
    """The reply RCPT gets when POP-before-SMTP does not apply (what the session does, minus I/O)."""
    route = route_recipient(snapshot, address, accepted_so_far=accepted_so_far)
    if not isinstance(route, Recipient):
        return route
    if route.needs_relay and not relay_permitted(
        snapshot, signed_in_as=signed_in_as, client_ip=client_ip, domain=route.domain
    ):
        return replies.RELAY_DENIED.format(address=address)
    if route.unknown:
        return replies.UNKNOWN_USER.format(address=route.address)
    return replies.OK_RECIPIENT


@pytest.mark.parametrize(
    ("kind", "raw", "canonical"),
    [
        ("address", " 192.168.1.7 ", "192.168.1.7"),
        ("network", "10.1.2.3/8", "10.0.0.0/8"),
        ("range", "192.168.1.1 - 192.168.1.11", "192.168.1.1-192.168.1.11"),
        ("domain", "Lab.Example.TEST.", "lab.example.test"),
        ("address", "::1", "::1"),
    ],
)
def test_rules_are_stored_in_canonical_form(kind, raw, canonical):
    assert normalize_rule(kind, raw) == canonical


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        ("address", "300.1.1.1"),
        ("network", "10.0.0.0/33"),
        ("range", "192.168.1.11-192.168.1.1"),
        ("range", "192.168.1.1-::1"),
        ("domain", "two words"),
        ("colour", "red"),
    ],
)
def test_bad_rules_are_refused_with_a_sentence(kind, raw):
    with pytest.raises(RuleError) as error:
        normalize_rule(kind, raw)
    assert str(error.value)


def test_a_client_list_matches_addresses_networks_ranges_and_confirmed_names():
    clients = ClientList.from_rules(
        [
            ("address", "127.0.0.5"),
            ("network", "10.0.0.0/8"),
            ("range", "192.168.1.1-192.168.1.11"),
            ("domain", "lab.test"),
        ]
    )

    assert clients.matches("127.0.0.5")
    assert clients.matches("10.200.3.4")
    assert clients.matches("192.168.1.11") and not clients.matches("192.168.1.12")
    assert clients.matches("::ffff:10.0.0.1")
    assert clients.matches("203.0.113.9", "host.lab.test") and clients.matches("203.0.113.9", "lab.test")
    assert not clients.matches("203.0.113.9", "notlab.test")
    assert not clients.matches("203.0.113.9")
    assert not clients.matches("not an address")


def test_connection_control_works_in_both_modes():
    listed = ClientList.from_rules([("address", "127.0.0.5")])

    assert connection_allowed("only_listed", listed, "127.0.0.5", None)
    assert not connection_allowed("only_listed", listed, "127.0.0.6", None)
    assert not connection_allowed("all_except", listed, "127.0.0.5", None)
    assert connection_allowed("all_except", listed, "127.0.0.6", None)


@pytest.mark.parametrize(
    "address",
    [
        "user%other.test@ours.test",
        "other.test!user@ours.test",
        '"user@other.test"@ours.test',
        "@ours.test:user@other.test",
        "user@[192.0.2.1]",
    ],
)
def test_classic_relay_tricks_are_recognised(address):
    assert is_relay_trick(address)


@pytest.mark.parametrize("address", ["user@ours.test", "first.last+tag@ours.test", "postmaster"])
def test_ordinary_addresses_are_not_tricks(address):
    assert not is_relay_trick(address)


def test_received_headers_are_counted_in_the_header_block_only():
    message = b"Received: a\r\nreceived: b\r\nRECEIVED: c\r\nSubject: x\r\n\r\nReceived: in the body\r\n"
    assert hop_count(message) == 3


# -- command hygiene: what a command line may contain (RFC 5321 2.4, RFC 6531) ----------------------


@pytest.mark.parametrize(
    ("line", "smtputf8_transaction", "refusal"),
    [
        (b"EHLO nul\0host", False, replies.CONTROL_CHARACTER_IN_COMMAND),
        (b"NOOP \x1b[31m", False, replies.CONTROL_CHARACTER_IN_COMMAND),
        (b"RSET\x7f", False, replies.CONTROL_CHARACTER_IN_COMMAND),
        ("MAIL FROM:<jörg@outside.test>".encode(), False, replies.NON_ASCII_ADDRESS_WITHOUT_SMTPUTF8),
        (b"MAIL FROM:<j\xf6rg@outside.test>", False, replies.NON_ASCII_ADDRESS_WITHOUT_SMTPUTF8),
        ('MAIL FROM:<"SMTPUTF8 ö"@outside.test>'.encode(), False, replies.NON_ASCII_ADDRESS_WITHOUT_SMTPUTF8),
        (b"MAIL FROM:<j\xf6rg@outside.test> SMTPUTF8", False, replies.INVALID_UTF8_IN_COMMAND),
        ("RCPT TO:<jörg@lab.test>".encode(), False, replies.NON_ASCII_ADDRESS_WITHOUT_SMTPUTF8),
        ("EHLO müller.test".encode(), False, replies.EIGHT_BIT_IN_COMMAND),
        ("NOOP ä".encode(), True, replies.EIGHT_BIT_IN_COMMAND),
    ],
)
def test_command_lines_with_nul_controls_or_stray_8bit_are_refused(line, smtputf8_transaction, refusal):
    assert command_refusal(line, smtputf8_transaction=smtputf8_transaction) == refusal


@pytest.mark.parametrize(
    ("line", "smtputf8_transaction"),
    [
        (b"EHLO client.example.test", False),
        (b"NOOP\tignored", False),
        ("MAIL FROM:<jörg@outside.test> SMTPUTF8".encode(), False),
        ("MAIL FROM:<jörg@outside.test> BODY=8BITMIME smtputf8".encode(), False),
        ("RCPT TO:<jörg@lab.test>".encode(), True),
        (b"MAIL FROM:<>", False),
    ],
)
def test_ascii_commands_and_utf8_addresses_with_smtputf8_pass(line, smtputf8_transaction):
    assert command_refusal(line, smtputf8_transaction=smtputf8_transaction) is None


@pytest.mark.parametrize(
    ("reply", "counted"),
    [
        ("500 5.5.2 Error: bad syntax", True),
        ("501 5.5.4 Syntax: MAIL FROM: <address>", True),
        ("502 5.5.1 Too many unrecognized commands, goodbye.", True),
        ("503 5.5.1 Error: need MAIL command", True),
        ("553 5.1.3 Error: malformed address", True),
        (replies.NON_ASCII_ADDRESS_WITHOUT_SMTPUTF8, True),
        ("250 2.0.0 OK", False),
        ("550 5.1.1 <x@lab.test>: Recipient address rejected: User unknown", False),
        ("554 5.7.1 <x@elsewhere.test>: Relay access denied", False),
        ("535 5.7.8 Authentication credentials invalid", False),
    ],
)
def test_only_bad_commands_count_toward_the_error_limit(reply, counted):
    assert is_command_error(reply) is counted


# -- RFC 2034: every reply but the greeting and HELO/EHLO's carries an enhanced status code ------


@pytest.mark.parametrize(
    ("reply", "coded"),
    [
        ("250 OK", "250 2.0.0 OK"),
        ("221 Bye", "221 2.0.0 Bye"),
        ("220 Ready to start TLS", "220 2.0.0 Ready to start TLS"),
        ('500 Error: command "X" not recognized', '500 5.5.2 Error: command "X" not recognized'),
        ("501 Syntax: HELO hostname", "501 5.5.4 Syntax: HELO hostname"),
        ("503 Error: send HELO first", "503 5.5.1 Error: send HELO first"),
        ("530 Must issue a STARTTLS command first", "530 5.7.0 Must issue a STARTTLS command first"),
        ("554 Command refused due to lack of security", "554 5.7.0 Command refused due to lack of security"),
        ("451 Try later", "451 4.0.0 Try later"),
        ("250 2.1.0 OK", "250 2.1.0 OK"),
        ("538 5.7.11 Encryption required", "538 5.7.11 Encryption required"),
        ("220 mx.test MailConsole ESMTP", "220 mx.test MailConsole ESMTP"),
        ("250 mx.test", "250 mx.test"),
        ("250-mx.test", "250-mx.test"),
        ("250-PIPELINING", "250-PIPELINING"),
        ("250 HELP", "250 HELP"),
        ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),
        ("334 ", "334 "),
    ],
)
def test_replies_get_an_enhanced_status_code_where_rfc_2034_wants_one(reply, coded):
    assert replies.with_enhanced_code(reply, "mx.test") == coded


# -- connect ----------------------------------------------------------------------------------------


def connect(policy: SmtpPolicy, *, paused=False, stopping=False, open_sessions=0, from_client=0) -> str | None:
    return connect_refusal(
        policy, paused=paused, stopping=stopping, open_sessions=open_sessions, from_client=from_client
    )


def test_the_connection_after_the_limit_gets_421():
    policy = SmtpPolicy(max_connections=2)
    assert connect(policy, open_sessions=1) is None
    assert connect(policy, open_sessions=2) == replies.TOO_MANY_CONNECTIONS
    assert server_full_refusal(policy, 2) == replies.TOO_MANY_CONNECTIONS  # the accepting process's check
    assert server_full_refusal(policy, 1) is None
    assert server_full_refusal(SmtpPolicy(), 10_000) is None
    assert closes_connection(replies.TOO_MANY_CONNECTIONS)


def test_one_client_address_cannot_take_more_than_its_share():
    policy = SmtpPolicy(max_connections_per_client=1)
    assert connect(policy, open_sessions=1, from_client=1) == replies.TOO_MANY_FROM_CLIENT
    assert connect(policy, open_sessions=1, from_client=0) is None  # another address


def test_a_paused_server_answers_421_and_a_stopping_one_says_it_is_shutting_down():
    assert connect(SmtpPolicy(), paused=True) == replies.SERVICE_NOT_AVAILABLE
    assert connect(SmtpPolicy(), paused=True, stopping=True) == replies.SHUTTING_DOWN


def test_connection_control_in_both_modes():
    policy = lab().policy
    listed = dataclasses.replace(policy, access_list=ClientList.from_rules([("address", "127.0.0.2")]))
    assert client_refusal(listed, "127.0.0.1", None) is None
    assert client_refusal(listed, "127.0.0.2", None) == replies.CONNECTION_REFUSED  # all except the list

    only_listed = dataclasses.replace(listed, connection_policy="only_listed")
    assert client_refusal(only_listed, "127.0.0.1", None) == replies.CONNECTION_REFUSED
    assert client_refusal(only_listed, "127.0.0.2", None) is None
    assert replies.CONNECTION_REFUSED.startswith("554")


def test_a_client_without_a_confirmed_reverse_name_is_refused_when_the_server_wants_one():
    policy = SmtpPolicy(require_client_ptr=True)
    assert client_refusal(policy, "192.0.2.1", None) == replies.NO_REVERSE_DNS
    assert client_refusal(policy, "192.0.2.1", "host.example.test") is None


def test_a_domain_rule_asks_for_the_client_name():
    assert not needs_client_name(SmtpPolicy(access_list=ClientList.from_rules([("address", "127.0.0.2")])))
    assert needs_client_name(SmtpPolicy(access_list=ClientList.from_rules([("domain", "lab.test")])))
    assert needs_client_name(SmtpPolicy(require_client_ptr=True))


# -- EHLO and AUTH ----------------------------------------------------------------------------------


def test_ehlo_adds_pipelining_and_enhanced_codes_and_hides_auth_when_basic_auth_is_off():
    lines = ["250-mx.test", "250-SIZE 1024", "250-AUTH LOGIN PLAIN", "250 HELP"]
    assert ehlo_lines(SmtpPolicy(), lines) == [*lines[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"]
    assert "250-AUTH LOGIN PLAIN" not in ehlo_lines(SmtpPolicy(allow_basic_auth=False), lines)


def test_auth_waits_for_tls_when_the_server_requires_it_except_on_the_implicit_tls_port():
    assert auth_requires_tls(SmtpPolicy(require_tls=True), implicit_tls=False)
    assert auth_requires_tls(SmtpPolicy(auth_requires_tls=True), implicit_tls=False)
    assert not auth_requires_tls(SmtpPolicy(require_tls=True), implicit_tls=True)
    assert not auth_requires_tls(SmtpPolicy(), implicit_tls=False)


def test_wrong_passwords_are_refused_and_repeated_failures_end_the_session():
    policy = SmtpPolicy(max_auth_failures_per_connection=3)
    assert [auth_failure_reply(policy, failures=n, reason="refused") for n in (1, 2)] == [replies.AUTH_FAILED] * 2
    assert auth_failure_reply(policy, failures=3, reason="refused") == replies.TOO_MANY_AUTH_FAILURES
    assert closes_connection(replies.TOO_MANY_AUTH_FAILURES)
    assert auth_failure_reply(policy, failures=1, reason="locked") == replies.AUTH_LOCKED


# -- MAIL -------------------------------------------------------------------------------------------


def test_require_tls_refuses_mail_before_starttls():
    snapshot = lab(require_tls=True)
    assert mail(snapshot, "a@outside.test") == replies.TLS_REQUIRED
    assert mail(snapshot, "alice@lab.test", tls_active=True, signed_in_as="alice@lab.test") is None


def test_the_message_after_the_per_connection_limit_ends_the_session():
    snapshot = lab(max_messages_per_connection=2)
    assert mail(snapshot, "a@outside.test", messages_accepted=1) is None
    assert mail(snapshot, "a@outside.test", messages_accepted=2) == replies.TOO_MANY_MESSAGES
    assert closes_connection(replies.TOO_MANY_MESSAGES)


def test_mail_after_the_session_size_limit_is_refused():
    snapshot = lab(max_session_size_bytes=2048)
    assert mail(snapshot, "a@outside.test", bytes_accepted=2047) is None
    assert mail(snapshot, "a@outside.test", bytes_accepted=2048) == replies.SESSION_TOO_BIG


def test_a_signed_in_user_may_only_send_as_its_own_address():
    snapshot = lab()
    refusal = mail(snapshot, "bob@lab.test", signed_in_as="alice@lab.test")
    assert refusal == replies.SENDER_NOT_OWNED.format(address="bob@lab.test", user="alice@lab.test")
    assert mail(snapshot, "alice@alias.test", signed_in_as="alice@lab.test") is None
    assert mail(snapshot, "Alice@LAB.test", signed_in_as="alice@lab.test") is None
    assert mail(snapshot, "", signed_in_as="alice@lab.test") is None  # the null sender (bounces)


def test_a_sender_in_a_local_domain_must_sign_in_when_the_check_is_on():
    snapshot = lab(require_auth_for_local_senders=True)
    assert mail(snapshot, "alice@lab.test") == replies.LOCAL_SENDER_MUST_AUTHENTICATE.format(address="alice@lab.test")
    assert mail(snapshot, "someone@alias.test") is not None
    assert mail(snapshot, "someone@outside.test") is None
    assert mail(lab(), "alice@lab.test") is None  # the check is off by default


# -- RCPT -------------------------------------------------------------------------------------------


def test_the_recipient_after_the_limit_gets_452():
    snapshot = lab(max_recipients_per_message=3)
    assert [rcpt(snapshot, "alice@lab.test", accepted_so_far=n) for n in range(3)] == [replies.OK_RECIPIENT] * 3
    assert rcpt(snapshot, "alice@lab.test", accepted_so_far=3) == replies.TOO_MANY_RECIPIENTS


def test_unauthenticated_mail_to_other_domains_is_refused_as_relaying():
    snapshot = lab()
    assert rcpt(snapshot, "victim@elsewhere.test") == replies.RELAY_DENIED.format(address="victim@elsewhere.test")
    assert rcpt(snapshot, "friend@elsewhere.test", signed_in_as="alice@lab.test") == replies.OK_RECIPIENT
    assert rcpt(snapshot, "anyone@relay.test") == replies.OK_RECIPIENT  # "relay incoming mail" domain


@pytest.mark.parametrize(
    "address",
    [
        "victim%elsewhere.test@lab.test",
        "elsewhere.test!victim@lab.test",
        '"victim@elsewhere.test"@lab.test',
        "victim@[127.0.0.9]",
    ],
)
def test_relay_tricks_are_refused_unauthenticated_and_pass_the_relay_check_when_signed_in(address):
    snapshot = lab()
    anonymous = rcpt(snapshot, address)
    assert anonymous[:3] == "554" and "Relay access denied" in anonymous

    signed_in = rcpt(snapshot, address, signed_in_as="alice@lab.test")
    assert "Relay access denied" not in signed_in


def test_clients_on_the_relay_list_may_relay_without_signing_in():
    snapshot = lab(relay_list=ClientList.from_rules([("network", "127.0.0.0/30")]))
    assert rcpt(snapshot, "friend@elsewhere.test", client_ip="127.0.0.1") == replies.OK_RECIPIENT
    assert rcpt(snapshot, "friend@elsewhere.test", client_ip="127.0.0.9")[:3] == "554"


def test_pop_before_smtp_counts_a_login_within_its_minutes():
    assert pop_login_recent(1000.0, now=1000.0 + 600, minutes=10)
    assert not pop_login_recent(1000.0, now=1000.0 + 601, minutes=10)
    assert not pop_login_recent(None, now=1000.0, minutes=10)


def test_recipients_are_routed_to_mailboxes_remote_domains_or_refused():
    snapshot = lab()
    local = route_recipient(snapshot, "Alice@LAB.test.", accepted_so_far=0)
    assert (local.address, local.remote, local.needs_relay) == ("alice@lab.test", False, False)
    assert [m.address for m in local.destination.mailboxes] == ["alice@lab.test"]
    assert route_recipient(snapshot, "alice@alias.test", accepted_so_far=0).destination == local.destination
    assert route_recipient(snapshot, "postmaster", accepted_so_far=0).unknown  # bare name: the default domain
    remote = route_recipient(snapshot, "Friend@Elsewhere.TEST", accepted_so_far=0)
    assert (remote.address, remote.remote, remote.needs_relay) == ("Friend@elsewhere.test", True, True)
    assert route_recipient(snapshot, "@", accepted_so_far=0) == replies.BAD_ADDRESS
    assert split_recipient("jörg@bücher.test", "lab.test") == ("jörg", "xn--bcher-kva.test")


def test_directory_harvesting_is_slowed_then_disconnected():
    policy = SmtpPolicy(harvest_unknown_recipients_limit=2)
    penalties = [harvest_penalty(policy, n) for n in range(1, 6)]
    assert penalties == [(0, False), (1, False), (2, False), (3, True), (4, True)]
    assert rcpt(lab(harvest_unknown_recipients_limit=2), "guess0@lab.test")[:3] == "550"
    assert harvest_penalty(SmtpPolicy(), 100) == (0, False)  # off by default
    assert closes_connection(replies.HARVEST_LIMIT)


# -- DATA -------------------------------------------------------------------------------------------


def test_a_message_with_too_many_received_headers_is_refused_as_a_loop():
    policy = SmtpPolicy(max_hop_count=2)
    looped = b"Received: from a\r\nReceived: from b\r\nReceived: from c\r\n" + MESSAGE
    assert data_refusal(policy, b"Received: from a\r\n" + MESSAGE, bytes_accepted=0) is None
    assert data_refusal(policy, looped, bytes_accepted=0) == replies.TOO_MANY_HOPS


def test_the_session_size_limit_refuses_the_message_that_passes_it():
    policy = SmtpPolicy(max_session_size_bytes=2048)
    body = b"Subject: s\r\n\r\n" + (b"y" * 76 + b"\r\n") * 20  # about 1.5 KB
    assert data_refusal(policy, body, bytes_accepted=0) is None
    assert data_refusal(policy, body, bytes_accepted=len(body)) == replies.SESSION_TOO_BIG


def test_the_message_over_the_hourly_rate_of_a_client_is_deferred():
    policy = SmtpPolicy(max_messages_per_client_per_hour=2)
    keys = message_rate_keys(policy, client_ip="127.0.0.1", sender="A@Outside.test")
    assert keys == [("client:127.0.0.1", 2)]
    assert data_refusal(policy, MESSAGE, bytes_accepted=0, recent_counts=[(1, 2)]) is None
    assert data_refusal(policy, MESSAGE, bytes_accepted=0, recent_counts=[(2, 2)]) == replies.RATE_LIMITED


def test_the_hourly_rate_of_a_sender_is_counted_without_case():
    policy = SmtpPolicy(max_messages_per_sender_per_hour=5)
    assert message_rate_keys(policy, client_ip="127.0.0.1", sender="A@Outside.test") == [("sender:a@outside.test", 5)]
    assert message_rate_keys(SmtpPolicy(), client_ip="127.0.0.1", sender="a@outside.test") == []


def test_the_rate_counters_are_not_read_for_a_message_refused_for_another_reason():
    def counts():
        raise AssertionError("read the rate counters")
        yield

    looped = b"Received: a\r\n" * 3 + MESSAGE
    assert data_refusal(SmtpPolicy(max_hop_count=2), looped, bytes_accepted=0, recent_counts=counts()) is not None


# -- the sweep --------------------------------------------------------------------------------------


def test_the_sweep_closes_sessions_over_their_time_limit():
    policy = SmtpPolicy(max_session_duration_s=3600)
    assert sweep_reply(policy, age_s=3600, bytes_in=0) is None
    assert sweep_reply(policy, age_s=3601, bytes_in=10**9) == replies.SESSION_TOO_LONG


def test_the_sweep_closes_slow_sessions_only_after_the_grace_period():
    policy = SmtpPolicy(min_data_rate_bps=10)
    assert sweep_reply(policy, age_s=RATE_GRACE_S, bytes_in=0) is None
    assert sweep_reply(policy, age_s=RATE_GRACE_S + 1, bytes_in=0) == replies.TOO_SLOW
    assert sweep_reply(policy, age_s=100, bytes_in=1000) is None
    assert sweep_reply(SmtpPolicy(), age_s=100, bytes_in=0) is None  # no minimum rate


# -- the adapter asks the policy: the handler's hooks called directly, no socket ---------------------


class FakeSession:
    """What LocalDeliveryHandler reads of a MailConsoleSMTP, and the hang-ups it asks for."""

    def __init__(self, **values):
        self.tls_active = False
        self.messages_accepted = self.bytes_accepted = self.unknown_recipients = 0
        self.signed_in_as = None
        self.client_ip = "127.0.0.1"
        self.hostname = "mx.test.invalid"
        self.closed_with: list[str] = []
        self.__dict__.update(values)

    async def close_with(self, reply: str) -> None:
        self.closed_with.append(reply)


def handler(snapshot: ServerSnapshot, pop_logins: dict[str, int] | None = None) -> LocalDeliveryHandler:
    async def pop_before_smtp(client_ip: str, minutes: int) -> bool:
        return client_ip in (pop_logins or {})

    return LocalDeliveryHandler(lambda: snapshot, WorkerCounters(), pop_before_smtp)


def hook(coroutine):
    return asyncio.run(coroutine)


def test_a_client_that_just_read_its_pop3_mail_may_relay_when_pop_before_smtp_is_on():
    envelope = LocalEnvelope()
    on = handler(lab(pop_before_smtp_minutes=10), pop_logins={"127.0.0.1": 1})
    assert hook(on.handle_RCPT(FakeSession(), None, envelope, "friend@elsewhere.test", [])) == replies.OK_RECIPIENT
    assert envelope.remote_recipients == envelope.rcpt_tos == ["friend@elsewhere.test"]

    elsewhere = FakeSession(client_ip="127.0.0.9")
    assert hook(on.handle_RCPT(elsewhere, None, LocalEnvelope(), "friend@elsewhere.test", []))[:3] == "554"
    off = handler(lab(), pop_logins={"127.0.0.1": 1})
    assert hook(off.handle_RCPT(FakeSession(), None, LocalEnvelope(), "friend@elsewhere.test", []))[:3] == "554"


def test_a_local_recipient_is_recorded_with_its_mailbox():
    envelope = LocalEnvelope()
    reply = hook(handler(lab()).handle_RCPT(FakeSession(), None, envelope, "Alice@lab.test", []))
    assert reply == replies.OK_RECIPIENT
    assert envelope.rcpt_tos == ["alice@lab.test"] and list(envelope.mailbox_targets) == ["alice@lab.test"]


# Moved here from tests/test_smtp_supervision.py, where a real worker under the Celery stack answered
# them; the real-socket path of a relay refusal stays in tests/test_smtp_access.py.


def test_mail_for_a_domain_the_server_does_not_serve_is_refused_as_relaying():
    envelope = LocalEnvelope()
    reply = hook(handler(lab()).handle_RCPT(FakeSession(), None, envelope, "victim@elsewhere.test", []))
    assert reply == replies.RELAY_DENIED.format(address="victim@elsewhere.test")
    assert envelope.rcpt_tos == envelope.remote_recipients == envelope.drop_recipients == []


def test_an_alias_domain_is_accepted_and_a_bare_name_gets_the_default_domain():
    # A server without mailboxes, as the wizard makes one: its domains' mail goes to Drop/ (IIS).
    smtp_handler = handler(dataclasses.replace(lab(), mailboxes={}))
    envelope = LocalEnvelope()
    for address in ("x@alias.test", "postmaster"):
        assert hook(smtp_handler.handle_RCPT(FakeSession(), None, envelope, address, [])) == replies.OK_RECIPIENT
    assert envelope.rcpt_tos == envelope.drop_recipients == ["x@alias.test", "postmaster@lab.test"]


def test_mail_over_the_per_connection_limit_hangs_up_with_421():
    session = FakeSession(messages_accepted=2)
    reply = hook(
        handler(lab(max_messages_per_connection=2)).handle_MAIL(session, None, LocalEnvelope(), "a@b.test", [])
    )
    assert reply == replies.TOO_MANY_MESSAGES.format(hostname="mx.test.invalid")
    assert session.closed_with == [replies.TOO_MANY_MESSAGES]


def test_harvesting_waits_outside_the_policy_and_hangs_up_at_twice_the_limit(monkeypatch):
    waits = []

    async def no_wait(seconds):
        waits.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", no_wait)
    session, envelope = FakeSession(), LocalEnvelope()
    smtp_handler = handler(lab(harvest_unknown_recipients_limit=2))
    answers = [hook(smtp_handler.handle_RCPT(session, None, envelope, f"guess{n}@lab.test", [])) for n in range(4)]
    assert [a[:3] for a in answers] == ["550"] * 4
    assert waits == [1, 2, 3]
    assert session.closed_with == [replies.HARVEST_LIMIT]


def test_a_refused_message_is_not_stored_and_not_counted():
    envelope = LocalEnvelope()
    envelope.mail_from, envelope.rcpt_tos = "a@outside.test", ["alice@lab.test"]
    envelope.original_content = b"Received: a\r\n" * 3 + MESSAGE
    session = FakeSession()
    reply = hook(handler(lab(max_hop_count=2)).handle_DATA(session, Session(loop=None), envelope))
    assert reply == replies.TOO_MANY_HOPS
    assert session.messages_accepted == 0 and session.bytes_accepted == 0


# -- the Anti-spam tab: DNSBL and greylisting ----------------------------------------------------------


@pytest.mark.parametrize(
    ("client_ip", "name"),
    [
        ("192.0.2.1", "1.2.0.192.bl.test"),
        ("::ffff:192.0.2.1", "1.2.0.192.bl.test"),
        ("2001:db8::1", "1." + "0." * 23 + "8.b.d.0.1.0.0.2.bl.test"),
        ("not an address", None),
    ],
)
def test_dnsbl_names_are_the_reversed_octets_or_nibbles_in_the_zone(client_ip, name):
    assert dnsbl_query_name(client_ip, "bl.test") == name


def test_only_127_answers_other_than_the_lists_error_codes_are_listings():
    assert dnsbl_answer_lists(["127.0.0.2"]) and dnsbl_answer_lists(["127.0.0.11", "10.0.0.1"])
    assert not dnsbl_answer_lists(["127.255.255.254"])  # Spamhaus: asked through a public resolver
    assert not dnsbl_answer_lists(["127.0.0.1", "10.0.0.2", "garbage"])
    assert not dnsbl_answer_lists([])


def test_a_listed_client_is_refused_naming_the_zone_and_its_address_only_in_reject_mode():
    reject, tag = SmtpPolicy(dnsbl_action="reject"), SmtpPolicy(dnsbl_action="tag")

    assert dnsbl_refusal(reject, "192.0.2.1", ("bl.test",)) == replies.DNSBL_LISTED.format(
        address="192.0.2.1", zone="bl.test"
    )
    assert "bl.test" in replies.DNSBL_LISTED.format(address="192.0.2.1", zone="bl.test")
    assert replies.DNSBL_LISTED.startswith("554 5.7.1")
    assert dnsbl_refusal(reject, "192.0.2.1", ()) is None  # unlisted, or every lookup failed (fail open)
    assert dnsbl_refusal(tag, "192.0.2.1", ("bl.test",)) is None


def test_the_tag_action_adds_one_header_per_listing_zone():
    tag = SmtpPolicy(dnsbl_action="tag")

    assert dnsbl_header(tag, "192.0.2.1", ("a.test", "b.test")) == (
        b"X-DNSBL: a.test listed 192.0.2.1\r\nX-DNSBL: b.test listed 192.0.2.1\r\n"
    )
    assert dnsbl_header(tag, "192.0.2.1", ()) == b""
    assert dnsbl_header(SmtpPolicy(dnsbl_action="reject"), "192.0.2.1", ("a.test",)) == b""


def test_signed_in_users_and_relay_list_clients_are_exempt_from_the_anti_spam_checks():
    policy = SmtpPolicy(relay_list=ClientList.from_rules([("network", "10.0.0.0/8")]))

    assert antispam_exempt(policy, signed_in_as="alice@lab.test", client_ip="192.0.2.1")
    assert antispam_exempt(policy, signed_in_as=None, client_ip="10.1.2.3")
    assert not antispam_exempt(policy, signed_in_as=None, client_ip="192.0.2.1")


def test_zone_lists_are_split_on_lines_commas_and_spaces():
    assert split_zone_list("a.test, b.test\nc.test  d.test,") == ["a.test", "b.test", "c.test", "d.test"]
    assert split_zone_list("") == []


def test_greylist_triplets_take_the_client_network_and_lower_cased_addresses():
    assert greylist_triplet("192.0.2.1", "Bob@Far.Test", "Alice@Lab.Test") == "192.0.2.0/24 bob@far.test alice@lab.test"
    assert greylist_triplet("192.0.2.200", "", "a@lab.test") == greylist_triplet("::ffff:192.0.2.9", "", "A@lab.test")
    assert greylist_triplet("2001:db8::1", "b@x", "a@y") == greylist_triplet("2001:db8::ffff:1", "B@X", "a@y")
    assert greylist_triplet("2001:db8::1", "b@x", "a@y").startswith("2001:db8::/64 ")
    assert greylist_triplet("2001:db8:0:1::1", "b@x", "a@y") != greylist_triplet("2001:db8::1", "b@x", "a@y")


NOW = 1_000_000_000.0
DELAY_S = 300


def greylisted(first_seen=None, passed_until=None, *, after_s: float) -> tuple[bool, bool, bool]:
    return tuple(greylist_decision(first_seen, passed_until, now=NOW + after_s, delay_s=DELAY_S))  # type: ignore[return-value]


def test_an_unknown_triplet_is_deferred_and_its_first_attempt_recorded():
    assert greylisted(after_s=0) == (True, True, False)


def test_a_retry_before_the_delay_is_deferred_without_moving_the_first_attempt():
    assert greylisted(NOW, after_s=DELAY_S - 1) == (True, False, False)


def test_a_retry_after_the_delay_is_accepted_and_the_triplet_remembered():
    assert greylisted(NOW, after_s=DELAY_S) == (False, False, True)
    assert greylisted(NOW, after_s=GREYLIST_RETRY_WINDOW_S) == (False, False, True)


def test_a_retry_after_24_hours_starts_over():
    assert greylisted(NOW, after_s=GREYLIST_RETRY_WINDOW_S + 1) == (True, True, False)


def test_a_triplet_that_passed_is_accepted_for_36_days():
    passed_until = NOW + GREYLIST_PASS_S
    assert greylisted(NOW - 3600, passed_until, after_s=GREYLIST_PASS_S - 1) == (False, False, True)
    assert greylisted(None, passed_until, after_s=GREYLIST_PASS_S) == (True, True, False)


class ListingEverything:
    """InboundChecks whose every zone lists every client and every triplet is new; counts the questions."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def listed_zones(self, client_ip, zones, dns_server):
        self.asked.append(f"dnsbl {client_ip}")
        return tuple(zones)

    async def greylisted(self, server_id, client_ip, sender, recipient, delay_s):
        self.asked.append(f"greylist {recipient}")
        return True


def strict_handler(snapshot: ServerSnapshot, checks: ListingEverything) -> LocalDeliveryHandler:
    return LocalDeliveryHandler(lambda: snapshot, WorkerCounters(), None, checks)  # type: ignore[arg-type]


def test_a_signed_in_user_is_neither_looked_up_nor_greylisted():
    checks = ListingEverything()
    on = strict_handler(lab(dnsbl_zones=("bl.test",), dnsbl_action="reject", greylisting=True), checks)
    alice = FakeSession(signed_in_as="alice@lab.test", dnsbl_listed=None, session_id="s1")
    envelope = LocalEnvelope()

    assert hook(on.handle_MAIL(alice, None, envelope, "alice@lab.test", [])) == "250 2.1.0 OK"
    assert hook(on.handle_RCPT(alice, None, envelope, "friend@elsewhere.test", [])) == replies.OK_RECIPIENT
    assert checks.asked == []


def test_an_anonymous_client_is_refused_at_mail_and_greylisted_at_rcpt_and_each_refusal_is_counted():
    checks = ListingEverything()
    on = strict_handler(lab(dnsbl_zones=("bl.test",), dnsbl_action="reject", greylisting=True), checks)
    stranger = FakeSession(dnsbl_listed=None, session_id="s1")

    reply = hook(on.handle_MAIL(stranger, None, LocalEnvelope(), "bob@far.test", []))
    assert reply == replies.DNSBL_LISTED.format(address="127.0.0.1", zone="bl.test")
    envelope = LocalEnvelope()
    envelope.mail_from = "bob@far.test"
    assert hook(on.handle_RCPT(stranger, None, envelope, "alice@lab.test", [])) == replies.GREYLISTED.format(
        address="alice@lab.test"
    )
    assert hook(on.handle_RCPT(stranger, None, envelope, "nobody@lab.test", []))[:3] == "550"  # unknown first
    assert envelope.rcpt_tos == []
    assert on.counters.refusals == {"dnsbl": 1, "greylisted": 1}
    assert checks.asked == ["dnsbl 127.0.0.1", "greylist alice@lab.test"]


def test_mail_relayed_for_a_backup_mx_domain_is_greylisted_but_pop_before_smtp_relaying_is_not():
    checks = ListingEverything()
    snapshot = lab(greylisting=True, pop_before_smtp_minutes=10)

    async def pop_before_smtp(client_ip: str, minutes: int) -> bool:
        return True

    on = LocalDeliveryHandler(lambda: snapshot, WorkerCounters(), pop_before_smtp, checks)
    stranger = FakeSession(dnsbl_listed=None, session_id="s1")

    reply = hook(on.handle_RCPT(stranger, None, LocalEnvelope(), "someone@relay.test", []))
    assert reply == replies.GREYLISTED.format(address="someone@relay.test")
    assert hook(on.handle_RCPT(stranger, None, LocalEnvelope(), "friend@elsewhere.test", [])) == replies.OK_RECIPIENT
    assert checks.asked == ["greylist someone@relay.test"]
