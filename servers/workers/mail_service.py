"""What the POP3 and IMAP workers share: their configuration snapshot, the worker steps that read it,
and the STARTTLS buffer rule."""

from __future__ import annotations

import asyncio
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from servers.models import ImapService, Pop3Service
from servers.services import signin_guard
from servers.services.mailboxes import VerifiedCredentials
from servers.tls import ensure_self_signed_certificate, server_context
from servers.workers.base import SupervisedWorker

# Password checks one client address may have running at once: the thread pool is shared by every
# connection, so one address guessing in parallel must not take all of it (as SMTP AUTH).
SIGN_INS_PER_CLIENT = 2


@dataclass(frozen=True)
class MailServiceSnapshot:
    """A POP3 or IMAP service's settings as its worker runs them (read once, reloaded on SIGHUP)."""

    service_id: int
    ip_address: str
    port: int
    tls_port: int | None
    default_domain: str
    plaintext_requires_tls: bool
    hostname: str
    desired_state: str
    config_version: int
    cert_path: Path
    key_path: Path


def load_mail_service_snapshot(model: type[Pop3Service] | type[ImapService], service_id: int) -> MailServiceSnapshot:
    service = model.objects.select_related("node").get(pk=service_id)
    default_domain = service.default_domain
    if not default_domain:
        # Like IIS: the default domain of the node's first virtual server.
        default = service.node.servers.filter(is_submission=False).order_by("pk").first()
        default_domain = default.default_domain.name if default and default.default_domain else ""
    return MailServiceSnapshot(
        service_id=service.pk,
        ip_address=service.ip_address,
        port=service.port,
        tls_port=service.tls_port,
        default_domain=default_domain,
        plaintext_requires_tls=service.plaintext_requires_tls,
        hostname=settings.MAIL_HOSTNAME,
        desired_state=service.effective_desired_state,
        config_version=service.config_version,
        cert_path=service.cert_path,
        key_path=service.key_path,
    )


def listening_pairs(snapshot: MailServiceSnapshot) -> list[tuple[str, int]]:
    """The plain port first, then the implicit-TLS one if there is one."""
    pairs = [(snapshot.ip_address, snapshot.port)]
    if snapshot.tls_port:
        pairs.append((snapshot.ip_address, snapshot.tls_port))
    return pairs


class MailServiceWorker(SupervisedWorker):
    """A node's mail-reading service (POP3, IMAP): its service row, addresses and certificate, the
    per-client sign-in slots, the verified-credentials cache and the ordered Logon writer."""

    service_model: type[Pop3Service] | type[ImapService]
    snapshot: MailServiceSnapshot

    def __init__(self, unit_id: int) -> None:
        super().__init__(unit_id)
        self.sign_in_slots = signin_guard.ClientSlots(SIGN_INS_PER_CLIENT)
        self.credentials = VerifiedCredentials()
        self.tls_context: ssl.SSLContext | None = None
        # Logon records are written by one thread, in order. Concurrent sign-ins then queue here
        # instead of in SQLite's busy handler, which sleeps up to 100 ms between tries.
        self.logon_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.kind}d-logons")

    def load_snapshot(self) -> MailServiceSnapshot:
        return load_mail_service_snapshot(self.service_model, self.unit_id)

    def addresses(self, snapshot: MailServiceSnapshot) -> list[tuple[str, int]]:
        return listening_pairs(snapshot)

    async def before_serving(self) -> None:
        snapshot = self.snapshot
        await asyncio.get_running_loop().run_in_executor(
            None, ensure_self_signed_certificate, snapshot.cert_path, snapshot.key_path, snapshot.hostname
        )
        self.tls_context = server_context(snapshot.cert_path, snapshot.key_path)


def take_buffered(reader: asyncio.StreamReader) -> bytes:
    """Remove and return what the reader holds but nobody has read yet.

    RFC 2595 section 4 / RFC 3207 section 5 (the CVE-2011-0411 class): bytes that arrived before a
    TLS handshake are plaintext a man in the middle may have added; they must never be read as
    commands inside TLS. Every STARTTLS in this project (SMTP, POP3, IMAP) drains its buffer here.
    asyncio has no public way to look into a StreamReader's buffer; this is the one place that does.
    """
    # typeshed leaves out StreamReader's private _buffer (a bytearray in CPython 3.11 to 3.13).
    buffered = bytes(reader._buffer)  # type: ignore[attr-defined]  # noqa: SLF001
    reader._buffer.clear()  # type: ignore[attr-defined]  # noqa: SLF001
    return buffered
