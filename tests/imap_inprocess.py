"""The IMAP worker's adapter on a real loopback socket, in this process, around a scripted session.

The adapter (`servers.workers.imapd`) is tested here without the protocol core: `ScriptedSession`
answers a handful of commands the way `servers.imap.session.ImapSession` would, and records what it
was asked, so a test can prove what the adapter did and did not hand over. The supervised worker
with the real session is covered by tests/test_imap_worker_process.py.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from servers.imap.store_api import AuthOutcome, AuthStatus
from servers.tls import ensure_self_signed_certificate
from servers.workers.base import listening_socket
from servers.workers.imapd import IMAPWorker
from servers.workers.mail_service import MailServiceSnapshot

HOSTNAME = "mx.test.invalid"


@dataclass
class ScriptedReply:
    data: bytes = b""
    start_tls: bool = False
    close: bool = False
    delay_s: float = 0.0


class ScriptedSession:
    """Just enough IMAP for the adapter: CAPABILITY, STARTTLS, LOGIN, SELECT, IDLE/DONE, NOOP, LOGOUT.

    Like a naive session, it executes every complete line it is given, so only the adapter keeps a
    line pipelined after STARTTLS from running.
    """

    watch_dir: Path | None = None
    made: list[ScriptedSession] = []

    def __init__(
        self,
        *,
        hostname: str,
        authenticator: Callable[[str, str], AuthOutcome],
        tls_available: bool,
        tls_active: bool,
        plaintext_requires_tls: bool,
        default_domain: str = "",
    ) -> None:
        self.authenticator = authenticator
        self.tls_available, self.tls_active = tls_available, tls_active
        self.buffer = b""
        self.executed: list[str] = []
        self._user: str | None = None
        self._folder: str | None = None
        self._idling = False
        self._idle_tag = ""
        self.lost = False
        ScriptedSession.made.append(self)

    # -- what the adapter reads
    @property
    def user(self) -> str | None:
        return self._user

    @property
    def selected_folder(self) -> str | None:
        return self._folder

    @property
    def idling(self) -> bool:
        return self._idling

    @property
    def watch_paths(self) -> Sequence[str]:
        return [str(self.watch_dir)] if self._folder and self.watch_dir else []

    # -- what the adapter calls
    def greeting(self) -> bytes:
        return b"* OK [CAPABILITY IMAP4rev2 STARTTLS IDLE] scripted ready\r\n"

    def receive_data(self, data: bytes) -> ScriptedReply:
        self.buffer += data
        out = b""
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            words = line.decode().strip().split()
            if words == ["DONE"] and self._idling:
                self._idling = False
                self.executed.append("DONE")
                out += f"{self._idle_tag} OK IDLE done\r\n".encode()
                continue
            tag, command, args = words[0], words[1].upper(), words[2:]
            self.executed.append(command)
            if command == "STARTTLS":
                return ScriptedReply(out + f"{tag} OK Begin TLS negotiation now\r\n".encode(), start_tls=True)
            if command == "LOGIN":
                outcome = self.authenticator(args[0], args[1])
                if outcome.status is AuthStatus.OK:
                    assert outcome.account is not None
                    self._user = outcome.account.address
                    out += f"{tag} OK LOGIN completed\r\n".encode()
                else:
                    return ScriptedReply(
                        out + f"{tag} NO [AUTHENTICATIONFAILED] nope\r\n".encode(), delay_s=outcome.failure_delay_s
                    )
            elif command == "SELECT":
                self._folder = args[0]
                out += f"* 0 EXISTS\r\n{tag} OK [READ-WRITE] SELECT completed\r\n".encode()
            elif command == "IDLE":
                self._idling, self._idle_tag = True, tag
                out += b"+ idling\r\n"
            elif command == "CRASH":
                raise RuntimeError("a bug in the session")
            elif command == "LOGOUT":
                return ScriptedReply(out + f"* BYE bye\r\n{tag} OK LOGOUT completed\r\n".encode(), close=True)
            else:
                out += f"{tag} OK {command} completed\r\n".encode()
        return ScriptedReply(out)

    def tls_started(self) -> None:
        self.tls_active = True

    def idle_updates(self) -> bytes:
        return b"* 1 EXISTS\r\n"

    def autologout(self) -> bytes:
        return b"* BYE Autologout; idle for too long\r\n"

    def connection_lost(self) -> None:
        self.lost = True


@dataclass
class Served:
    worker: IMAPWorker
    port: int
    loop: asyncio.AbstractEventLoop

    def run(self, coroutine) -> object:
        """Run a coroutine on the worker's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)


def snapshot_for_tests(
    cert: Path, key: Path, *, unit_id: int = 0, default_domain: str = "lab.test"
) -> MailServiceSnapshot:
    return MailServiceSnapshot(
        service_id=unit_id,
        ip_address="127.0.0.1",
        port=0,
        tls_port=None,
        default_domain=default_domain,
        plaintext_requires_tls=False,
        hostname=HOSTNAME,
        desired_state="running",
        config_version=1,
        cert_path=cert,
        key_path=key,
    )


@contextmanager
def serving_imap(tmp_path: Path, *, unit_id: int = 0, **worker_options) -> Iterator[Served]:
    """An IMAPWorker with scripted sessions listening on a free loopback port, its loop in a thread."""
    cert, key = tmp_path / "imap.crt", tmp_path / "imap.key"
    ensure_self_signed_certificate(cert, key, HOSTNAME)
    worker_options.setdefault("session_factory", ScriptedSession)
    worker = IMAPWorker(unit_id, **worker_options)
    worker.snapshot = snapshot_for_tests(cert, key, unit_id=unit_id)
    loop = asyncio.new_event_loop()
    sock = listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    loop.run_until_complete(worker.before_serving())
    servers = loop.run_until_complete(worker.serve([sock]))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield Served(worker, port, loop)
    finally:

        async def shut_down() -> None:
            for server in servers:
                server.close()
            for connection in list(worker.control.sessions):
                connection.close_with("")
            for task in list(worker.background):
                task.cancel()
            for _ in range(500):  # each connection's task ends once its session heard connection_lost
                if not worker.control.sessions:
                    break
                await asyncio.sleep(0.01)
            await worker.redis.aclose()

        asyncio.run_coroutine_threadsafe(shut_down(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        worker.logon_writer.shutdown(wait=True)


class LineClient:
    """A raw IMAP client: send bytes, read CRLF lines with a timeout, switch to TLS."""

    def __init__(self, port: int, timeout_s: float = 5) -> None:
        self.sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.pending = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.pending:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError(self.pending)
            self.pending += chunk
        line, self.pending = self.pending.split(b"\r\n", 1)
        return line

    def command(self, text: str) -> list[bytes]:
        """Send a tagged command; return every line up to and including its tagged reply."""
        tag = text.split()[0].encode()
        self.send(text.encode() + b"\r\n")
        lines = [self.line()]
        while not lines[-1].startswith(tag + b" "):
            lines.append(self.line())
        return lines

    def starttls(self) -> None:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        self.sock = context.wrap_socket(self.sock, server_hostname=HOSTNAME)

    def nothing_arrives_within(self, seconds: float) -> bool:
        self.sock.settimeout(seconds)
        try:
            return not self.pending and not self.sock.recv(4096)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(5)

    def at_eof(self) -> bool:
        try:
            return not self.pending and self.sock.recv(4096) == b""
        except ConnectionError:
            return True

    def close(self) -> None:
        self.sock.close()
