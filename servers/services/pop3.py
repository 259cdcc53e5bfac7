"""The POP3 service of a node: its address, its TLS and its state."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.db.models import F

from servers.models import Node, Pop3Service, ServiceState
from servers.tls import ensure_self_signed_certificate

from .audit import record_change, snapshot_of
from .errors import RefusedError
from .names import canonical_domain_name
from .nodes import local_node, request_reconcile
from .virtual_servers import (
    _check_unique_address,
    _clean_ip,
    _clean_port,
    passwords_need_tls_by_default,
    set_desired_state,
)

EDITABLE_FIELDS = ("ip_address", "port", "tls_port", "default_domain", "plaintext_requires_tls")


@transaction.atomic
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

    Unless told otherwise, a service off loopback refuses USER/PASS and AUTH before STLS
    (`passwords_need_tls_by_default`).
    """
    node = node or local_node()
    ip_address = _clean_ip(ip_address)
    if plaintext_requires_tls is None:
        plaintext_requires_tls = passwords_need_tls_by_default(ip_address)
    if Pop3Service.objects.filter(node=node).exists():
        raise RefusedError(f"Node {node.name} already has a POP3 service.", field="node")
    service = Pop3Service(
        node=node,
        ip_address=ip_address,
        port=_clean_port(port),
        tls_port=_clean_port(tls_port) if tls_port else None,
        default_domain=canonical_domain_name(default_domain, field="default_domain") if default_domain else "",
        plaintext_requires_tls=bool(plaintext_requires_tls),
        desired_state=ServiceState.RUNNING if start else ServiceState.STOPPED,
    )
    if service.tls_port == service.port:
        raise RefusedError("The POP3S port must differ from the POP3 port.", field="tls_port")
    if start:
        _check_unique_address(service)
    service.save()
    ensure_self_signed_certificate(service.cert_path, service.key_path, settings.MAIL_HOSTNAME)
    record_change(actor=actor, action="create_pop3_service", obj=service, after=snapshot_of(service))
    request_reconcile(node)
    return service


@transaction.atomic
def update_pop3_service(service: Pop3Service, *, actor: str = "system", **changes) -> Pop3Service:
    service = Pop3Service.objects.select_for_update().select_related("node").get(pk=service.pk)
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        field = sorted(unknown)[0]
        raise RefusedError(f"{field} cannot be changed here.", field=field)
    before = snapshot_of(service)
    for field, value in changes.items():
        if field == "ip_address":
            service.ip_address = _clean_ip(value)
        elif field == "port":
            service.port = _clean_port(value)
        elif field == "tls_port":
            service.tls_port = _clean_port(value) if value else None
        elif field == "default_domain":
            service.default_domain = canonical_domain_name(value, field=field) if value else ""
        else:
            service.plaintext_requires_tls = bool(value)
    if service.tls_port == service.port:
        raise RefusedError("The POP3S port must differ from the POP3 port.", field="tls_port")
    if service.desired_state != ServiceState.STOPPED:
        _check_unique_address(service)
    service.config_version = F("config_version") + 1
    service.save()
    service.refresh_from_db()
    record_change(actor=actor, action="update_pop3_service", obj=service, before=before, after=snapshot_of(service))
    request_reconcile(service.node)
    return service


def set_pop3_state(service: Pop3Service, desired: str, *, actor: str = "system") -> Pop3Service:
    """Start, pause or stop the node's POP3 service; the node's reconcile applies it."""
    return set_desired_state(service, desired, actor=actor)
