"""The POP3 service of a node: its address, its TLS and its state."""

from __future__ import annotations

from servers.models import Node, Pop3Service

from .mail_services import create_mail_service, update_mail_service
from .virtual_servers import set_desired_state


def create_pop3_service(
    *,
    node: Node | None = None,
    ip_address: str | None = None,
    port: int = 110,
    tls_port: int | None = None,
    default_domain: str = "",
    plaintext_requires_tls: bool | None = None,
    start: bool = True,
    actor: str = "system",
) -> Pop3Service:
    """Give a node its POP3 service, with a self-signed certificate for STLS and POP3S.

    Unless told otherwise, a service off loopback refuses USER/PASS and AUTH before STLS.
    """
    return create_mail_service(
        Pop3Service,
        protocol="POP3",
        implicit_tls_name="POP3S",
        node=node,
        ip_address=ip_address,
        port=port,
        tls_port=tls_port,
        default_domain=default_domain,
        plaintext_requires_tls=plaintext_requires_tls,
        start=start,
        actor=actor,
    )


def update_pop3_service(service: Pop3Service, *, actor: str = "system", **changes) -> Pop3Service:
    return update_mail_service(service, protocol="POP3", implicit_tls_name="POP3S", actor=actor, changes=changes)


def set_pop3_state(service: Pop3Service, desired: str, *, actor: str = "system") -> Pop3Service:
    """Start, pause or stop the node's POP3 service; the node's reconcile applies it."""
    return set_desired_state(service, desired, actor=actor)
