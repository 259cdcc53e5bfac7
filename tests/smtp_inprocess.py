"""An SMTP session of our own (MailConsoleSMTP and its handler) on a real socket, in this process.

For protocol tests that need real bytes on a real connection but no database, Celery or worker
process: the snapshot is built by hand, the event loop runs in a thread. The supervised worker is
covered by the tests that start one (tests/test_smtp_access.py and others).
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from servers import maildir
from servers.content_checks import ContentChecks
from servers.inbound_checks import InboundChecks
from servers.smtp import LocalDeliveryHandler, MailConsoleSMTP, WorkerCounters
from servers.snapshot import MailboxEntry, ServerSnapshot, SmtpPolicy
from servers.tls import ensure_self_signed_certificate, server_context
from servers.workers.base import WorkerControl

HOSTNAME = "mx.test.invalid"


def lab_snapshot(home: Path, **policy) -> ServerSnapshot:
    """A server for lab.test with the mailbox alice@lab.test under `home`."""
    alice = MailboxEntry("alice@lab.test", maildir.ensure_maildir(home / "lab.test" / "alice"), None, None)
    (home / ".tmp").mkdir(parents=True, exist_ok=True)
    ensure_self_signed_certificate(home / "server.crt", home / "server.key", HOSTNAME)
    return ServerSnapshot(
        server_id=1,
        name="lab",
        ip_address="127.0.0.1",
        port=0,
        home_dir=home,
        hostname=HOSTNAME,
        desired_state="running",
        config_version=1,
        max_message_size_bytes=1024 * 1024,
        default_domain="lab.test",
        local_domains=frozenset({"lab.test"}),
        mailboxes={alice.address: alice},
        policy=dataclasses.replace(SmtpPolicy(), **policy),
        cert_path=home / "server.crt",
        key_path=home / "server.key",
    )


@contextmanager
def serving(
    snapshot: ServerSnapshot,
    *,
    checks: InboundChecks | None = None,
    content_checks: ContentChecks | None = None,
    counters: WorkerCounters | None = None,
) -> Iterator[int]:
    """Listen on a free loopback port with sessions built as the worker builds them; yield the port.

    `checks` are the Anti-spam tab's lookups (the worker passes its own); its Redis client, if any,
    is closed here. `content_checks` are the Filters tab's scanners (the worker passes its own).
    """
    loop = asyncio.new_event_loop()
    counters, control = counters or WorkerCounters(), WorkerControl()
    handler = LocalDeliveryHandler(lambda: snapshot, counters, None, checks, content_checks)
    assert snapshot.cert_path is not None and snapshot.key_path is not None  # lab_snapshot names both
    tls_context = server_context(snapshot.cert_path, snapshot.key_path)
    policy = snapshot.policy

    def session() -> MailConsoleSMTP:
        return MailConsoleSMTP(
            handler,
            control=control,
            counters=counters,
            snapshot=snapshot,
            hostname=snapshot.hostname,
            ident="MailConsole ESMTP",
            data_size_limit=snapshot.max_message_size_bytes,
            enable_SMTPUTF8=True,
            timeout=policy.idle_timeout_s,
            tls_context=tls_context,
            auth_require_tls=policy.require_tls,
            auth_required=not policy.allow_anonymous,
            loop=loop,
        )

    server = loop.run_until_complete(loop.create_server(session, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        server.close()
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        if checks is not None and checks.redis is not None:
            loop.run_until_complete(checks.redis.aclose())
        loop.close()


def unverified_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Client:
    """A line-level SMTP client on a raw socket: sends bytes exactly as given, reads replies."""

    def __init__(self, port: int, timeout_s: float = 5) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.buffer = b""
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> str:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"closed by the server (unread: {self.buffer!r})")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def reply(self) -> list[str]:
        """One reply: its lines, the last one included ("250-a", "250 b")."""
        lines = [self.line()]
        while lines[-1][3:4] == "-":
            lines.append(self.line())
        return lines

    def command(self, text: str | bytes) -> list[str]:
        self.send((text.encode() if isinstance(text, str) else text) + b"\r\n")
        return self.reply()

    def starttls(self) -> None:
        assert not self.buffer, f"plaintext left unread before the handshake: {self.buffer!r}"
        self.sock = unverified_tls().wrap_socket(self.sock, server_hostname=HOSTNAME)

    def nothing_arrives_within(self, seconds: float) -> bool:
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return not self.buffer
        finally:
            self.sock.settimeout(5)
        self.buffer += data
        return False

    def closed_by_server(self) -> bool:
        try:
            return self.sock.recv(4096) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()
