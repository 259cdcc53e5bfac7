"""What the node's mail-reading services (POP3 and IMAP) share: address, TLS, default domain, state.

Each is one row per node with the same settings; `pop3.py` and `imap.py` name their model and the
words their messages use, and call these.
"""

from __future__ import annotations

from typing import TypeVar

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils.translation import gettext

from servers.models import ImapService, Node, Pop3Service, ServiceState
from servers.tls import ensure_self_signed_certificate

from .audit import record_change, snapshot_of
from .errors import RefusedError
from .names import canonical_domain_name
from .nodes import local_node, request_reconcile
from .virtual_servers import _check_unique_address, _clean_ip, _clean_port, passwords_need_tls_by_default

EDITABLE_FIELDS = ("ip_address", "port", "tls_port", "default_domain", "plaintext_requires_tls")

MailService = TypeVar("MailService", Pop3Service, ImapService)


def _check_ports(service: Pop3Service | ImapService, protocol: str, implicit_tls_name: str) -> None:
    if service.tls_port == service.port:
        raise RefusedError(
            gettext("The %(tls_port)s port must differ from the %(protocol)s port.")
            % {"tls_port": implicit_tls_name, "protocol": protocol},
            field="tls_port",
        )


@transaction.atomic
def create_mail_service(
    model: type[MailService],
    *,
    protocol: str,
    implicit_tls_name: str,
    node: Node | None,
    ip_address: str | None,
    port: int,
    tls_port: int | None,
    default_domain: str,
    plaintext_requires_tls: bool | None,
    start: bool,
    actor: str,
) -> MailService:
    """Give a node its POP3 or IMAP service, with a self-signed certificate for STARTTLS and implicit TLS.

    Unless told otherwise, a service off loopback refuses passwords before STARTTLS
    (`passwords_need_tls_by_default`).
    """
    node = node or local_node()
    ip_address = _clean_ip(ip_address)
    if plaintext_requires_tls is None:
        plaintext_requires_tls = passwords_need_tls_by_default(ip_address)
    if model.objects.filter(node=node).exists():
        raise RefusedError(
            gettext("Node %(node)s already has its %(protocol)s service.") % {"node": node.name, "protocol": protocol},
            field="node",
        )
    service = model(
        node=node,
        ip_address=ip_address,
        port=_clean_port(port),
        tls_port=_clean_tls_port(tls_port),
        default_domain=canonical_domain_name(default_domain, field="default_domain") if default_domain else "",
        plaintext_requires_tls=bool(plaintext_requires_tls),
        desired_state=ServiceState.RUNNING if start else ServiceState.STOPPED,
    )
    _check_ports(service, protocol, implicit_tls_name)
    if start:
        _check_unique_address(service)
    service.save()
    ensure_self_signed_certificate(service.cert_path, service.key_path, settings.MAIL_HOSTNAME)
    record_change(actor=actor, action=f"create_{model.process_kind}_service", obj=service, after=snapshot_of(service))
    request_reconcile(node)
    return service


def _clean_tls_port(value: int | str | None) -> int | None:
    if value in (None, "", 0, "0"):
        return None
    try:
        return _clean_port(value)  # type: ignore[arg-type]  # None and "" are handled above
    except RefusedError as refusal:
        raise RefusedError(refusal.message, field="tls_port") from None


def update_mail_service(
    service: MailService, *, protocol: str, implicit_tls_name: str, actor: str, changes: dict
) -> MailService:
    """Change the settings of `EDITABLE_FIELDS`; the worker reloads (or restarts, for a new address)."""
    with transaction.atomic():
        service = type(service).objects.select_for_update().select_related("node").get(pk=service.pk)
        unknown = set(changes) - set(EDITABLE_FIELDS)
        if unknown:
            field = sorted(unknown)[0]
            raise RefusedError(gettext("%(field)s cannot be changed here.") % {"field": field}, field=field)
        before = snapshot_of(service)
        for field, value in changes.items():
            if field == "ip_address":
                service.ip_address = _clean_ip(value)
            elif field == "port":
                service.port = _clean_port(value)
            elif field == "tls_port":
                service.tls_port = _clean_tls_port(value)
            elif field == "default_domain":
                service.default_domain = canonical_domain_name(value, field=field) if value else ""
            else:
                service.plaintext_requires_tls = bool(value)
        _check_ports(service, protocol, implicit_tls_name)
        if service.desired_state != ServiceState.STOPPED:
            _check_unique_address(service)
        service.config_version = F("config_version") + 1
        service.save()
        service.refresh_from_db()
        record_change(
            actor=actor,
            action=f"update_{service.process_kind}_service",
            obj=service,
            before=before,
            after=snapshot_of(service),
        )
        request_reconcile(service.node)
    return service
