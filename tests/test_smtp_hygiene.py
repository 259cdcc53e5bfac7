"""Protocol hygiene on a real connection: what a command may contain, how many bad ones a client
gets, and what EHLO promises (PIPELINING, ENHANCEDSTATUSCODES) being kept.

The rules themselves are tested without sockets in tests/test_smtp_policy.py.
"""

from __future__ import annotations

import re

import pytest

from servers import replies
from servers.smtp_policy import MAX_COMMAND_ERRORS
from tests.smtp_inprocess import Client, lab_snapshot, serving

# Sockets and files: a second database backend proves nothing new here.
pytestmark = pytest.mark.backend_independent

ENHANCED = re.compile(r"^[245]\d\d [245]\.\d{1,3}\.\d{1,3} ")


@pytest.fixture
def port(tmp_path):
    with serving(lab_snapshot(tmp_path)) as port:
        yield port


@pytest.fixture
def client(port):
    client = Client(port)
    client.command("EHLO client.test")
    yield client
    client.close()


def stored_messages(tmp_path) -> list[bytes]:
    return [path.read_bytes() for path in (tmp_path / "lab.test" / "alice" / "new").iterdir()]


def test_ehlo_advertises_pipelining_and_enhanced_status_codes(port):
    client = Client(port)
    ehlo = client.command("EHLO client.test")

    assert "250-PIPELINING" in ehlo and "250-ENHANCEDSTATUSCODES" in ehlo
    assert ehlo[0] == "250-mx.test.invalid" and ehlo[-1] == "250 HELP"
    client.close()


def test_a_nul_in_ehlo_is_refused_and_never_reaches_the_received_header(port, tmp_path):
    client = Client(port)

    assert client.command(b"EHLO nul\0host") == [replies.CONTROL_CHARACTER_IN_COMMAND]
    assert client.command("MAIL FROM:<a@outside.test>")[0].startswith("503 5.5.1")  # no EHLO was taken
    client.command("EHLO good.host")
    client.command("MAIL FROM:<a@outside.test>")
    client.command("RCPT TO:<alice@lab.test>")
    client.command("DATA")
    assert client.command(b"Subject: hi\r\n\r\nbody\r\n.")[0].startswith("250 2.0.0")
    client.close()

    [stored] = stored_messages(tmp_path)
    assert b"Received: from good.host " in stored and b"\0" not in stored


@pytest.mark.parametrize("line", [b"NOOP \x01", b"MAIL FROM:<a@outside.test>\x7f", b"RCPT TO:<alice@lab.test\x00>"])
def test_control_characters_in_any_command_get_501(client, line):
    assert client.command(line) == [replies.CONTROL_CHARACTER_IN_COMMAND]
    assert client.command("NOOP") == ["250 2.0.0 OK"]


def test_an_8bit_sender_without_smtputf8_is_refused_with_553_5_6_7(client, tmp_path):
    assert client.command("MAIL FROM:<jörg@outside.test>".encode()) == [replies.NON_ASCII_ADDRESS_WITHOUT_SMTPUTF8]
    assert client.command(b"MAIL FROM:<j\xf6rg@outside.test>") == [replies.NON_ASCII_ADDRESS_WITHOUT_SMTPUTF8]
    assert client.command("MAIL FROM:<a@outside.test>") == ["250 2.1.0 OK"]
    assert client.command("RCPT TO:<jörg@lab.test>".encode()) == [replies.NON_ASCII_ADDRESS_WITHOUT_SMTPUTF8]
    assert stored_messages(tmp_path) == []


def test_utf8_addresses_are_taken_with_smtputf8_and_stored_as_sent(client, tmp_path):
    assert client.command(b"MAIL FROM:<j\xf6rg@outside.test> SMTPUTF8") == [replies.INVALID_UTF8_IN_COMMAND]
    assert client.command("MAIL FROM:<jörg@outside.test> SMTPUTF8".encode()) == ["250 2.1.0 OK"]
    assert client.command("RCPT TO:<alice@lab.test>") == ["250 2.1.5 OK"]
    client.command("DATA")
    assert client.command(b"Subject: hi\r\n\r\nbody\r\n.")[0].startswith("250 2.0.0")

    [stored] = stored_messages(tmp_path)
    assert stored.startswith("Return-Path: <jörg@outside.test>\r\n".encode())


def test_8bit_text_in_other_commands_is_refused(client):
    assert client.command("NOOP grüße".encode()) == [replies.EIGHT_BIT_IN_COMMAND]
    assert client.command("EHLO müller.test".encode()) == [replies.EIGHT_BIT_IN_COMMAND]
    assert client.command("NOOP") == ["250 2.0.0 OK"]


def test_the_session_survives_one_error_less_than_the_limit(client):
    for _ in range(MAX_COMMAND_ERRORS - 1):
        assert client.command("MAIL")[0].startswith("501 5.5.4")

    assert client.command("NOOP") == ["250 2.0.0 OK"]


def test_too_many_bad_commands_get_421_and_nothing_pipelined_after_them_runs(client, tmp_path):
    junk = b"".join(b"RCPT\r\n" if i % 2 else b"\r\n" for i in range(MAX_COMMAND_ERRORS + 10))
    client.send(junk + b"MAIL FROM:<a@outside.test>\r\nRCPT TO:<alice@lab.test>\r\nDATA\r\nx\r\n.\r\n")

    answers = [client.line() for _ in range(MAX_COMMAND_ERRORS + 1)]

    assert all(answer[0] == "5" for answer in answers[:-1])
    assert answers[-1] == replies.TOO_MANY_ERRORS.format(hostname="mx.test.invalid")
    assert client.closed_by_server() and not client.buffer
    assert stored_messages(tmp_path) == []


def test_every_reply_after_the_greeting_and_ehlo_carries_an_enhanced_status_code(client):
    answers = []
    for command in (
        "NOOP",
        "RSET",
        "HELP",
        "VRFY alice@lab.test",
        "XFOO",
        "MAIL",
        "RCPT TO:<alice@lab.test>",
        "DATA",
        "STARTTLS now",
        "AUTH",
        "MAIL FROM:<a@outside.test> BODY=9BIT",
        "MAIL FROM:<a@outside.test> SIZE=99999999",
        "MAIL FROM:<a@outside.test>",
        "MAIL FROM:<b@outside.test>",
        "RCPT TO:<nobody@lab.test>",
        "RCPT TO:<x@elsewhere.test>",
        "QUIT",
    ):
        answers += client.command(command)

    assert [answer for answer in answers if not ENHANCED.match(answer)] == []
    assert answers[-1] == "221 2.0.0 Bye"
