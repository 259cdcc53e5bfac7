"""The IMAP service as the node runs it: a supervised `run_imapd` process, driven with imaplib and raw
sockets on loopback, mail delivered through the SMTP worker."""

from __future__ import annotations

import imaplib
import os
import signal
import smtplib
import socket
import ssl
import time

import pytest

from servers import services
from servers.models import Logon, ObservedState
from servers.workers.imapd import PAUSED_BYE
from tests.factories import PASSWORD, make_imap_service, make_mailbox, make_server
from tests.helpers import port_is_closed, wait_for_state, wait_until

# Worker processes and sockets, like the SMTP session processes: run on SQLite only.
pytestmark = [pytest.mark.usefixtures("supervised"), pytest.mark.backend_independent]


@pytest.fixture
def lab():
    """One server with study003.local and helena's mailbox; the IMAP service running."""
    server = wait_for_state(make_server(domain="study003.local", start=True), ObservedState.RUNNING)
    helena = make_mailbox(server, "helena")
    imap = wait_for_state(make_imap_service(default_domain="study003.local"), ObservedState.RUNNING)
    wait_until(lambda: rcpt_code(server.port, "helena@study003.local") == 250, message="the SMTP worker to reload")
    return server, imap, helena


def rcpt_code(port: int, address: str) -> int:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()
        client.mail("probe@outside.test")
        code, _ = client.rcpt(address)
        client.rset()
        return code


def send(port: int, subject: str, to: str = "helena@study003.local") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("x@outside.test", [to], f"Subject: {subject}\r\n\r\nHello\r\n".encode())


def insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


class Raw:
    """Bytes on a socket, read a line at a time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.pending = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.pending:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError(self.pending)
            self.pending += chunk
        line, self.pending = self.pending.split(b"\r\n", 1)
        return line

    def until_tagged(self, tag: bytes) -> list[bytes]:
        lines = [self.line()]
        while not lines[-1].startswith(tag + b" "):
            lines.append(self.line())
        return lines

    def close(self) -> None:
        self.sock.close()


def test_imaplib_signs_in_selects_the_inbox_and_fetches_mail_delivered_by_smtp(lab):
    server, imap, helena = lab
    send(server.port, "Lab question")

    client = imaplib.IMAP4("127.0.0.1", imap.port, timeout=10)
    assert "IMAP4REV2" in client.capabilities and "STARTTLS" in client.capabilities
    client.login("helena", PASSWORD)  # a bare name gets the default domain
    status, data = client.select("INBOX")
    assert (status, data) == ("OK", [b"1"])
    status, fetched = client.fetch("1", "(RFC822)")
    assert status == "OK" and b"Subject: Lab question" in fetched[0][1]
    client.logout()

    logon = Logon.objects.get(mailbox=helena)
    assert (logon.protocol, logon.client_address) == ("IMAP", "127.0.0.1")


def test_starttls_and_implicit_tls_carry_a_login(lab):
    server, imap, _ = lab
    send(server.port, "Over TLS")

    client = imaplib.IMAP4("127.0.0.1", imap.port, timeout=10)
    client.starttls(ssl_context=insecure_context())
    client.login("helena@study003.local", PASSWORD)
    assert client.select("INBOX") == ("OK", [b"1"])
    client.logout()

    implicit = imaplib.IMAP4_SSL("127.0.0.1", imap.tls_port, ssl_context=insecure_context(), timeout=10)
    implicit.login("helena@study003.local", PASSWORD)
    assert implicit.select("INBOX", readonly=True) == ("OK", [b"1"])
    implicit.logout()


def test_a_login_pipelined_after_starttls_never_runs(lab):
    _, imap, _ = lab
    raw = Raw(imap.port)
    raw.line()
    raw.sock.sendall(f"a STARTTLS\r\nb LOGIN helena@study003.local {PASSWORD}\r\n".encode())
    assert raw.until_tagged(b"a")[-1].startswith(b"a OK")
    with insecure_context().wrap_socket(raw.sock, server_hostname="mx.test.invalid") as tls:
        tls.settimeout(1.0)
        with pytest.raises(TimeoutError):
            tls.recv(4096)  # LOGIN was not answered inside TLS
        tls.settimeout(5)
        tls.sendall(b"c SELECT INBOX\r\n")
        assert tls.recv(4096).startswith(b"c BAD")  # still not signed in
    assert not Logon.objects.exists()


def test_an_idling_client_sees_mail_delivered_through_smtp_within_a_second(lab):
    server, imap, _ = lab
    raw = Raw(imap.port)
    raw.line()
    raw.sock.sendall(f"a LOGIN helena@study003.local {PASSWORD}\r\nb SELECT INBOX\r\n".encode())
    raw.until_tagged(b"b")
    raw.sock.sendall(b"c IDLE\r\n")
    assert raw.line().startswith(b"+ ")

    send(server.port, "While idling")
    delivered_at = time.monotonic()
    raw.sock.settimeout(2)
    assert raw.line() == b"* 1 EXISTS"
    assert time.monotonic() - delivered_at <= 1.0

    raw.sock.sendall(b"DONE\r\n")
    assert raw.until_tagged(b"c")[-1].startswith(b"c OK")
    raw.close()


def test_the_imap_service_pauses_stops_and_recovers_from_a_kill(lab):
    _, imap, _ = lab

    services.set_imap_state(imap, "paused")
    wait_for_state(imap, ObservedState.PAUSED)
    raw = Raw(imap.port)
    assert raw.line() + b"\r\n" == PAUSED_BYE.format(hostname="mx.test.invalid").encode()
    raw.close()

    services.set_imap_state(imap, "running")
    wait_for_state(imap, ObservedState.RUNNING)
    assert imap.pid is not None
    os.kill(imap.pid, signal.SIGKILL)
    wait_until(
        lambda: wait_for_state(imap, ObservedState.RUNNING).restart_count == 1,
        timeout_s=15,
        message="the IMAP worker to come back",
    )
    client = imaplib.IMAP4("127.0.0.1", imap.port, timeout=10)
    client.login("helena@study003.local", PASSWORD)
    client.logout()

    services.set_imap_state(imap, "stopped")
    wait_for_state(imap, ObservedState.STOPPED)
    assert imap.tls_port is not None
    assert port_is_closed(imap.port) and port_is_closed(imap.tls_port)
