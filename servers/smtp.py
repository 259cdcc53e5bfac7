"""The SMTP protocol of a virtual server: aiosmtpd's session plus our policy and durable local delivery.

The worker process (`servers.workers.smtpd`) owns the sockets and the event loop; this module
holds what a session does with each command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from email.utils import formatdate

from aiosmtpd.smtp import SMTP, Envelope, Session

from servers import maildir, replies
from servers.snapshot import MailboxEntry, ServerSnapshot
from servers.storage import unique_message_name, write_durably
from servers.workers.base import WorkerControl

log = logging.getLogger(__name__)


class MailConsoleSMTP(SMTP):
    """aiosmtpd's SMTP session, refusing new clients while the server is paused or stopping."""

    def __init__(self, handler: LocalDeliveryHandler, *, control: WorkerControl, **kwargs) -> None:
        super().__init__(handler, **kwargs)
        self.control = control

    def _create_envelope(self) -> LocalEnvelope:
        return LocalEnvelope()

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


def drop_file_chunks(envelope: Envelope, recipients: list[str], received: bytes) -> list[bytes]:
    """An IIS-style Drop file: x-sender/x-receiver envelope lines, a Received: header, the message."""
    lines = [f"x-sender: {envelope.mail_from or ''}\r\n"]
    lines += [f"x-receiver: {rcpt}\r\n" for rcpt in recipients]
    head = "".join(lines).encode("utf-8", "surrogateescape")
    return [head, received, envelope.original_content or b""]


def mailbox_file_chunks(envelope: Envelope, received: bytes) -> list[bytes]:
    """A message as stored in a Maildir: Return-Path (RFC 5321 4.4), Received:, the message."""
    return_path = f"Return-Path: <{envelope.mail_from or ''}>\r\n".encode("utf-8", "surrogateescape")
    return [return_path, received, envelope.original_content or b""]


def over_quota(entry: MailboxEntry, extra_octets: int, extra_messages: int) -> bool:
    """Whether a mailbox would pass its quota after taking `extra_octets` in `extra_messages` messages."""
    if entry.quota_bytes is None and entry.quota_messages is None:
        return False
    size_octets, count = maildir.usage(entry.maildir)
    if entry.quota_bytes is not None and size_octets + extra_octets > entry.quota_bytes:
        return True
    return entry.quota_messages is not None and count + extra_messages > entry.quota_messages


class LocalEnvelope(Envelope):
    """aiosmtpd's envelope plus where each accepted recipient's copy goes."""

    def __init__(self) -> None:
        super().__init__()
        self.mailbox_targets: dict[str, MailboxEntry] = {}
        self.drop_recipients: list[str] = []


class LocalDeliveryHandler:
    """Delivers into the Maildirs of local mailboxes (or Drop/), before answering 250; refuses relaying."""

    def __init__(self, snapshot_getter: Callable[[], ServerSnapshot]) -> None:
        self._snapshot = snapshot_getter

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: LocalEnvelope, address: str, rcpt_options: list[str]
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
        recipient = f"{local_part.lower()}@{domain}"
        destination = snapshot.destination(local_part.lower(), domain)
        if destination is None:
            return replies.UNKNOWN_USER.format(address=recipient)
        loop = asyncio.get_running_loop()
        for entry in destination.mailboxes:
            # A mailbox that is already full refuses at RCPT, so the other recipients still get the mail.
            if await loop.run_in_executor(None, over_quota, entry, 1, 1):
                return replies.MAILBOX_FULL.format(address=recipient)
        for entry in destination.mailboxes:
            envelope.mailbox_targets[entry.address] = entry
        if destination.to_drop:
            envelope.drop_recipients.append(recipient)
        envelope.rcpt_tos.append(recipient)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.OK_RECIPIENT

    async def handle_DATA(self, server: SMTP, session: Session, envelope: LocalEnvelope) -> str:
        snapshot = self._snapshot()
        message_id = unique_message_name("")
        received = received_header(snapshot, session, message_id)
        loop = asyncio.get_running_loop()
        try:
            # Disk work leaves the event loop; the 250 goes out only once every copy is durable.
            refusal = await loop.run_in_executor(None, self._store, snapshot, envelope, received)
        except OSError:
            log.exception("could not store message %s", message_id)
            return replies.LOCAL_ERROR
        return refusal or replies.OK_QUEUED.format(message_id=message_id)

    @staticmethod
    def _store(snapshot: ServerSnapshot, envelope: LocalEnvelope, received: bytes) -> str | None:
        targets = list(envelope.mailbox_targets.values())
        if targets:
            chunks = mailbox_file_chunks(envelope, received)
            size_octets = sum(len(chunk) for chunk in chunks)
            for entry in targets:
                if over_quota(entry, size_octets, 1):
                    return replies.MESSAGE_EXCEEDS_QUOTA.format(address=entry.address)
            name = maildir.deliver_many([entry.maildir for entry in targets], chunks)
        if envelope.drop_recipients:
            try:
                write_durably(snapshot.tmp_dir, snapshot.drop_dir, unique_message_name(".eml"),
                              drop_file_chunks(envelope, envelope.drop_recipients, received))
            except OSError:
                if targets:
                    # The sender will retry the whole message: take back the mailbox copies.
                    for entry in targets:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.maildir / "new" / name)
                raise
        return None
