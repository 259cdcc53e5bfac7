"""The outside world for delivery tests, on loopback: a DNS server and "remote" SMTP servers.

`TestDNS` is a dnslib server answering from a dict of records; names listed in `servfail` get
SERVFAIL, names in `silent` get no answer (a timeout), unknown names get NXDOMAIN.
`RemoteSMTP` is an aiosmtpd Controller on 127.0.0.x whose behaviour a test sets per recipient.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.message
import email.policy
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from django.utils import timezone
from dnslib import AAAA, MX, PTR, QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from servers import mailstore, tls
from servers.delivery import engine
from servers.delivery.models import DeliverySettings, QueuedMessage
from servers.models import Node
from tests.factories import make_mailbox, make_server
from tests.helpers import free_port


class _Resolver(BaseResolver):
    def __init__(self, dns: TestDNS) -> None:
        self.dns = dns

    def resolve(self, request: DNSRecord, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        self.dns.queries.append((name, qtype))
        if name in self.dns.silent:
            self.dns.stopping.wait(10)  # no answer: the client times out; let go when the server stops
            return None
        if name in self.dns.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        records = self.dns.records.get(name)
        if records is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for rtype, value in records:
            if rtype != qtype:
                continue
            if rtype == "MX":
                preference, exchange = value
                rdata = MX(exchange if exchange != "." else ".", preference)
            elif rtype == "A":
                rdata = A(value)
            elif rtype == "PTR":
                rdata = PTR(value)
            elif rtype == "TXT":
                # One record, cut into character-strings of at most 255 octets (RFC 1035 3.3.14).
                rdata = TXT([value[i : i + 255] for i in range(0, len(value), 255)])
            else:
                rdata = AAAA(value)
            reply.add_answer(RR(request.q.qname, QTYPE.reverse[rtype], rdata=rdata, ttl=60))
        return reply


class TestDNS:
    """A DNS server on 127.0.0.1:<free port>; `records["domain"] = [("MX", (10, "mx.domain")), ("A", ip)]`
    (and ("TXT", value) for DKIM records)."""

    __test__ = False

    def __init__(self) -> None:
        self.records: dict[str, list[tuple[str, Any]]] = {}
        self.servfail: set[str] = set()
        self.silent: set[str] = set()
        self.stopping = threading.Event()
        self.queries: list[tuple[str, str]] = []
        self.port = free_port()
        self.server = DNSServer(
            _Resolver(self),
            address="127.0.0.1",
            port=self.port,
            logger=DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", logf=lambda message: None),
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add_mx(self, domain: str, *exchanges: tuple[int, str]) -> None:
        self.records.setdefault(domain, []).extend(("MX", exchange) for exchange in exchanges)

    def add_a(self, name: str, *addresses: str) -> None:
        self.records.setdefault(name, []).extend(("A", address) for address in addresses)

    def add_ptr(self, address: str, name: str) -> None:
        """The reverse-DNS name of an address (in-addr.arpa / ip6.arpa)."""
        import dns.reversename

        reverse = dns.reversename.from_address(address).to_text().rstrip(".").lower()
        self.records.setdefault(reverse, []).append(("PTR", name))

    def add_txt(self, name: str, value: str) -> None:
        self.records.setdefault(name, []).append(("TXT", value))

    def start(self) -> TestDNS:
        self.server.start_thread()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.server.stop()
        self.server.server.server_close()  # dnslib's stop() leaves the UDP socket open


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    auth_user: str | None
    host: str


@dataclass
class RemoteBehaviour:
    """What a remote server answers: per recipient local part, and for DATA."""

    # local part -> reply at RCPT ("550 5.1.1 No such user", "451 4.2.0 Later")
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    # answer DATA with 451 this many times, then accept
    defer_data_times: int = 0
    reject_data: str = ""
    # hold DATA (until `release` is set) the first time
    hold_first_data: bool = False


class _Handler:
    def __init__(self, remote: RemoteSMTP) -> None:
        self.remote = remote

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local_part = address.partition("@")[0].lower()
        reply = self.remote.behaviour.rcpt_replies.get(local_part)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        behaviour = self.remote.behaviour
        self.remote.data_commands += 1
        if behaviour.hold_first_data and self.remote.data_commands == 1:
            self.remote.holding.set()
            while not self.remote.release.is_set():
                await asyncio.sleep(0.05)
            return "451 4.3.0 Released without delivery"
        if behaviour.defer_data_times > 0:
            behaviour.defer_data_times -= 1
            return "451 4.3.0 Try again later"
        if behaviour.reject_data:
            return behaviour.reject_data
        auth = session.auth_data
        self.remote.received.append(
            Received(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                content=envelope.original_content,
                tls=session.ssl is not None,
                auth_user=auth.login.decode() if auth else None,
                host=self.remote.host,
            )
        )
        return "250 2.0.0 Queued"


class RemoteSMTP:
    """An SMTP server on `host:port` that keeps what it accepts in `received`."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        behaviour: RemoteBehaviour | None = None,
        tls_dir: Path | None = None,
        users: dict[str, str] | None = None,
        **smtp_options,
    ) -> None:
        self.host = host
        self.port = port
        self.behaviour = behaviour or RemoteBehaviour()
        self.received: list[Received] = []
        self.data_commands = 0
        self.holding = threading.Event()
        self.release = threading.Event()
        kwargs: dict = dict(smtp_options)
        if tls_dir is not None:
            cert, key = tls_dir / f"{host}.crt", tls_dir / f"{host}.key"
            tls.ensure_self_signed_certificate(cert, key, host)
            kwargs["tls_context"] = tls.server_context(cert, key)
        if users is not None:

            def authenticate(server, session, envelope, mechanism, auth_data):
                ok = (
                    isinstance(auth_data, LoginPassword)
                    and users.get(auth_data.login.decode()) == auth_data.password.decode()
                )
                return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

            kwargs.update(authenticator=authenticate, auth_require_tls=False, auth_required=True)
        self.controller = Controller(
            _Handler(self), hostname=host, port=port, server_hostname=f"remote-{host}", ready_timeout=5, **kwargs
        )

    def start(self) -> RemoteSMTP:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.release.set()
        with contextlib.suppress(Exception):
            self.controller.stop()

    def recipients(self) -> list[str]:
        return [rcpt for message in self.received for rcpt in message.rcpt_tos]


class Refuser:
    """A host that answers every connection `421` and hangs up, counting the connections."""

    def __init__(self, host: str, port: int) -> None:
        self.connections = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            with contextlib.suppress(OSError):
                client.sendall(b"421 4.3.2 Too busy, try another host\r\n")
            client.close()

    def start(self) -> Refuser:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2)
        self.sock.close()


def shared_port(hosts: list[str]) -> int:
    """A port free on every one of `hosts` (the outbound port is one number for all remote hosts)."""
    for _ in range(50):
        port = free_port()
        try:
            for host in hosts:
                with socket.socket() as probe:
                    probe.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free on every test host")


# --- fixtures and steps shared by the delivery tests ------------------------------------------------

HOSTS = [f"127.0.0.{n}" for n in range(2, 10)]
MESSAGE = (
    b"From: Alice <alice@lab.test>\nTo: someone\nSubject: Quarterly report\n\n"
    b"Line one\n.a line starting with a dot\r\n..two dots\rlast line without newline"
)


@pytest.fixture
def dns():
    server = TestDNS().start()
    yield server
    server.stop()


@pytest.fixture
def port() -> int:
    return shared_port(HOSTS)


@pytest.fixture
def remotes(port, tmp_path):
    started = []

    def start(host: str, **kwargs):
        kind = kwargs.pop("kind", RemoteSMTP)
        remote = kind(host, port, **kwargs) if kind is Refuser else kind(host, port, tls_dir=tmp_path, **kwargs)
        started.append(remote.start())
        return remote

    yield start
    for remote in started:
        remote.stop()


@pytest.fixture
def server(db, dns, port):
    """A running server with mailbox alice@lab.test, on a node no Celery worker serves."""
    node, _ = Node.objects.get_or_create(name="delivery-in-process")
    vs = make_server(domain="lab.test", node=node, start=True)
    make_mailbox(vs, "alice")
    config = DeliverySettings.for_server(vs)
    config.dns_server = dns.address
    config.outbound_port = port
    config.first_retry_interval_s = config.second_retry_interval_s = config.third_retry_interval_s = 1
    config.subsequent_retry_interval_s = 1
    config.outbound_timeout_s = 10
    config.save()
    return vs


def configure(server, **changes) -> None:
    DeliverySettings.objects.filter(server=server).update(**changes)


def send(server, recipients, *, mail_from="alice@lab.test", message=MESSAGE) -> QueuedMessage:
    message_id = mailstore.enqueue(server.home_dir, mail_from, recipients, [message])
    engine.reconcile_queue(server)
    return QueuedMessage.objects.get(server=server, name=message_id + ".eml")


def run_queue(server, *, rounds: int = 1, later_s: float = 0) -> None:
    """Process every due message (and the DSNs they make) `rounds` times, as if `later_s` had passed."""
    for _ in range(rounds):
        engine.reconcile_queue(server)
        later = timedelta(seconds=later_s)
        due = QueuedMessage.objects.due(timezone.now() + later).filter(server=server)
        for message_id in due.values_list("pk", flat=True):
            engine.process_message(message_id, now=timezone.now() + later if later_s else None)


def run_until_empty(server, *, timeout_s: float = 15, later_s: float = 0) -> None:
    deadline = time.monotonic() + timeout_s
    while QueuedMessage.objects.filter(server=server).exists():
        assert time.monotonic() < deadline, list(QueuedMessage.objects.filter(server=server).values())
        run_queue(server, later_s=later_s)
        time.sleep(0.1)


def mailbox_messages(server, local_part: str) -> list[email.message.EmailMessage]:
    maildir = server.home_path / "Mailbox" / "lab.test" / local_part / "new"
    files = sorted(maildir.glob("*")) if maildir.exists() else []
    # With policy.default the parser makes EmailMessage objects; typeshed only promises Message.
    return [
        cast(email.message.EmailMessage, email.message_from_bytes(path.read_bytes(), policy=email.policy.default))
        for path in files
    ]


def delivery_status(report: email.message.EmailMessage) -> str:
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    parts = list(report.iter_parts())
    assert [part.get_content_type() for part in parts] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    blocks = parts[1].get_payload()
    return "\n".join(str(block) for block in blocks)


def original_headers_part(report) -> str:
    return list(report.iter_parts())[2].get_payload(decode=True).decode()
