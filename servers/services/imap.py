"""The IMAP service of a node: its address, its TLS and its state."""

from __future__ import annotations

from servers.models import ImapService, Node

from .mail_services import create_mail_service, update_mail_service
from .virtual_servers import set_desired_state


def create_imap_service(
    *,
    node: Node | None = None,
    ip_address: str | None = None,
    port: int = 143,
    tls_port: int | None = None,
    default_domain: str = "",
    plaintext_requires_tls: bool | None = None,
    start: bool = True,
    actor: str = "system",
) -> ImapService:
    """Give a node its IMAP service, with a self-signed certificate for STARTTLS and IMAPS.

    Unless told otherwise, a service off loopback refuses LOGIN and AUTHENTICATE before STARTTLS.
    """
    return create_mail_service(
        ImapService,
        protocol="IMAP",
        implicit_tls_name="IMAPS",
        node=node,
        ip_address=ip_address,
        port=port,
        tls_port=tls_port,
        default_domain=default_domain,
        plaintext_requires_tls=plaintext_requires_tls,
        start=start,
        actor=actor,
    )


def update_imap_service(service: ImapService, *, actor: str = "system", **changes) -> ImapService:
    """Change the IMAP service's address, TLS port, default domain or TLS requirement (audited)."""
    return update_mail_service(service, protocol="IMAP", implicit_tls_name="IMAPS", actor=actor, changes=changes)


def set_imap_state(service: ImapService, desired: str, *, actor: str = "system") -> ImapService:
    """Start, pause or stop the node's IMAP service; the node's reconcile applies it."""
    return set_desired_state(service, desired, actor=actor)
