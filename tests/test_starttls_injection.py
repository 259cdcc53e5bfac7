"""STARTTLS never runs commands the client sent in plaintext before the handshake (CVE-2011-0411 class).

A client (or a man in the middle) that sends `STARTTLS\\r\\nRSET\\r\\nMAIL FROM:...` in one packet
must not get those lines executed inside the TLS session: the server drops them and logs it.
"""

from __future__ import annotations

import logging
import socket
import ssl

import pytest

from tests.factories import make_mailbox, make_server
from tests.helpers import worker_running
from tests.smtp_inprocess import Client, lab_snapshot, serving

# Sockets and files: a second database backend proves nothing new here.
pytestmark = pytest.mark.backend_independent

AFTER_STARTTLS = b"RSET\r\nMAIL FROM:<a@outside.test>\r\n"
INJECTED = b"EHLO x.test\r\nSTARTTLS\r\n" + AFTER_STARTTLS


def test_plaintext_pipelined_after_starttls_is_discarded_and_logged(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="servers.smtp")
    with serving(lab_snapshot(tmp_path)) as port:
        client = Client(port)
        client.send(INJECTED)
        assert client.reply()[-1] == "250 HELP"
        assert client.reply() == ["220 2.0.0 Ready to start TLS"]
        client.starttls()

        assert client.nothing_arrives_within(1.0)
        ehlo = client.command("EHLO x.test")
        # Had the injected MAIL run, this one would be a "nested MAIL command".
        mail = client.command("MAIL FROM:<b@outside.test>")
        client.close()

    assert ehlo[0] == "250-mx.test.invalid" and "250-STARTTLS" not in ehlo
    assert mail == ["250 2.1.0 OK"]
    [record] = [r for r in caplog.records if "plaintext after STARTTLS" in r.getMessage()]
    assert f"discarded {len(AFTER_STARTTLS)} bytes" in record.getMessage()


def test_a_starttls_without_pipelined_plaintext_discards_nothing(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="servers.smtp")
    with serving(lab_snapshot(tmp_path)) as port:
        client = Client(port)
        client.command("EHLO x.test")
        assert client.command("STARTTLS") == ["220 2.0.0 Ready to start TLS"]
        client.starttls()
        assert client.command("EHLO x.test")[0] == "250-mx.test.invalid"
        client.close()

    assert not [r for r in caplog.records if "plaintext after STARTTLS" in r.getMessage()]


@pytest.mark.usefixtures("supervised")
def test_the_supervised_worker_answers_nothing_that_was_injected_before_the_handshake():
    server = worker_running(make_server(domain="lab.test", start=True))
    make_mailbox(server, "alice")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        reader = raw.makefile("rb")
        reader.readline()
        raw.sendall(INJECTED)
        while not reader.readline().startswith(b"250 "):
            pass
        assert reader.readline().startswith(b"220 ")
        with context.wrap_socket(raw, server_hostname="mx.test.invalid") as tls:
            tls.settimeout(1.0)
            with pytest.raises(TimeoutError):
                tls.recv(4096)  # nothing: neither RSET nor MAIL was answered
            tls.settimeout(5)
            tls.sendall(b"NOOP\r\n")
            assert tls.recv(4096) == b"250 2.0.0 OK\r\n"
