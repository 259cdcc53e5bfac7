"""The SMTP protocol of a virtual server: aiosmtpd's session plus our policy and durable drop.

The worker process (`servers.workers.smtpd`) owns the sockets and the event loop; this module
holds what a session does with each command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

from servers import replies
from servers.snapshot import ServerSnapshot
from servers.storage import unique_message_name, write_durably

log = logging.getLogger(__name__)


class ListenerControl:
    """State shared by every session of one worker: paused or stopping, and who is connected."""

    def __init__(self) -> None:
        self.paused = False
        self.stopping = False
        self.sessions: set[MailConsoleSMTP] = set()

    @property
    def refuses_new_sessions(self) -> bool:
        return self.paused or self.stopping

    def sessions_in_transaction(self) -> list[MailConsoleSMTP]:
        return [s for s in self.sessions if s.in_transaction]


class MailConsoleSMTP(SMTP):
    """aiosmtpd's SMTP session, refusing new clients while the server is paused or stopping."""

    def __init__(self, handler: DropHandler, *, control: ListenerControl, **kwargs) -> None:
        super().__init__(handler, **kwargs)
        self.control = control

    @property
    def in_transaction(self) -> bool:
        envelope = getattr(self, "envelope", None)
        return envelope is not None and envelope.mail_from is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first_connection = self.transport is None
        super().connection_made(transport)
        if first_connection:
            self.control.sessions.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.control.sessions.discard(self)
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        # A paused server still listens, but answers new clients 421 and hangs up (IIS "paused").
        if self.control.refuses_new_sessions:
            template = replies.SHUTTING_DOWN if self.control.stopping else replies.SERVICE_NOT_AVAILABLE
            await self.push(template.format(hostname=self.hostname))
            self.transport.close()
            return
        await super()._handle_client()

    async def close_idle(self) -> None:
        """Tell a client between transactions that we are going away, and hang up."""
        if self.transport is None:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.push(replies.SHUTTING_DOWN.format(hostname=self.hostname))
        if self.transport is not None:
            self.transport.close()


def received_header(snapshot: ServerSnapshot, session: Session, message_id: str) -> bytes:
    """The trace header (RFC 5321 4.4) we prepend to every message we accept."""
    peer_ip = session.peer[0] if session.peer else "unknown"
    helo = session.host_name or "unknown"
    protocol = "ESMTP" if session.extended_smtp else "SMTP"
    return (
        f"Received: from {helo} ([{peer_ip}])\r\n"
        f"\tby {snapshot.hostname} (MailConsole) with {protocol} id {message_id};\r\n"
        f"\t{formatdate(localtime=False)}\r\n"
    ).encode("utf-8", "surrogateescape")


def drop_file_chunks(envelope: Envelope, received: bytes) -> list[bytes]:
    """An IIS-style Drop file: x-sender/x-receiver envelope lines, a Received: header, the message."""
    lines = [f"x-sender: {envelope.mail_from or ''}\r\n"]
    lines += [f"x-receiver: {rcpt}\r\n" for rcpt in envelope.rcpt_tos]
    head = "".join(lines).encode("utf-8", "surrogateescape")
    return [head, received, envelope.original_content or b""]


class DropHandler:
    """Accepts mail for the server's local and alias domains into `Drop/`; refuses relaying."""

    def __init__(self, snapshot_getter: Callable[[], ServerSnapshot]) -> None:
        self._snapshot = snapshot_getter

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        snapshot = self._snapshot()
        local_part, at, domain = address.rpartition("@")
        if not at:
            # RFC 5321 allows a bare "postmaster"; IIS appends the default domain to bare names.
            local_part, domain = address, snapshot.default_domain
        domain = domain.strip().rstrip(".").lower()
        try:
            domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
        except UnicodeError:
            return replies.BAD_ADDRESS
        if not local_part or not domain:
            return replies.BAD_ADDRESS
        if not snapshot.accepts_domain(domain):
            return replies.RELAY_DENIED.format(address=address)
        envelope.rcpt_tos.append(f"{local_part}@{domain}")
        envelope.rcpt_options.extend(rcpt_options)
        return replies.OK_RECIPIENT

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        snapshot = self._snapshot()
        name = unique_message_name(".eml")
        message_id = Path(name).stem
        chunks = drop_file_chunks(envelope, received_header(snapshot, session, message_id))
        loop = asyncio.get_running_loop()
        try:
            # Disk work leaves the event loop; the 250 goes out only once the file is durable.
            await loop.run_in_executor(None, write_durably, snapshot.tmp_dir, snapshot.drop_dir, name, chunks)
        except OSError:
            log.exception("could not write message to %s", snapshot.drop_dir)
            return replies.LOCAL_ERROR
        return replies.OK_QUEUED.format(message_id=message_id)
