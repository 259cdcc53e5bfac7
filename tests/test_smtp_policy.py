"""SMTP policy decisions without sockets: client lists, relay tricks, hop counts, rule syntax, command hygiene."""

import pytest

from servers import replies
from servers.smtp_policy import (
    ClientList,
    RuleError,
    command_refusal,
    connection_allowed,
    count_received_headers,
    is_command_error,
    is_relay_trick,
    normalize_rule,
)


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
    assert count_received_headers(message) == 3


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
