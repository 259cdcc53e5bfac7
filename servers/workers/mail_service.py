"""What the POP3 and IMAP workers share: their configuration snapshot and the STARTTLS buffer rule."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from servers.models import ImapService, Pop3Service


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
        default = service.node.servers.order_by("pk").first()
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
