"""The queue as an administrator sees it and the actions on it (IIS "Queues", Exchange "Queue Viewer"),
the Delivery tab, and remote domains' own routes.

Every action takes `actor=` and leaves an audit entry. An action never races a delivery in
progress: it claims the message first, and refuses (RefusedError) while a worker holds it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from servers import mailstore, stored_secrets
from servers.delivery import engine, routing
from servers.delivery.client import Result
from servers.delivery.models import DeliverySettings, QueuedMessage, RecipientState, RemoteDomainRoute
from servers.models import Domain, DomainType, VirtualServer
from servers.services.audit import record_change, snapshot_of
from servers.services.errors import RefusedError

__all__ = [
    "QueueEntry",
    "delete_message",
    "delivery_settings",
    "freeze",
    "reconcile_and_list_queue",
    "retry_now",
    "set_remote_domain_route",
    "unfreeze",
    "update_delivery_settings",
]


@dataclass(frozen=True)
class RecipientEntry:
    address: str
    state: str
    status: str
    last_reply: str


@dataclass(frozen=True)
class QueueEntry:
    """One line of the queue view."""

    id: int
    name: str
    sender: str
    recipients: tuple[RecipientEntry, ...]
    size_octets: int
    queued_at: datetime
    attempts: int
    last_reply: str
    next_retry_at: datetime | None
    frozen: bool
    in_delivery: bool
    # Its sender's mailbox is blocked by an outbound limit: released with the mailbox, not here.
    held: bool = False


def reconcile_and_list_queue(server: VirtualServer) -> list[QueueEntry]:
    """The server's queued messages, oldest first.

    It writes first: the database index is brought in line with the Queue folder (`engine.reconcile_queue`).
    """
    engine.reconcile_queue(server)
    now = timezone.now()
    entries = []
    for message in QueuedMessage.objects.filter(server=server).prefetch_related("recipients"):
        entries.append(
            QueueEntry(
                id=message.pk,
                name=message.name,
                sender=message.mail_from,
                recipients=tuple(
                    RecipientEntry(r.address, r.state, r.status, r.last_reply) for r in message.recipients.all()
                ),
                size_octets=message.size_octets,
                queued_at=message.queued_at,
                attempts=message.attempts,
                last_reply=message.last_reply,
                next_retry_at=None if message.frozen or message.held else message.next_attempt_at,
                frozen=message.frozen,
                in_delivery=engine.claim_is_alive(message.claimed_by, message.claimed_at, now),
                held=message.held,
            )
        )
    return entries


def _audit(actor: str, action: str, message: QueuedMessage, **after) -> None:
    record_change(
        actor=actor,
        action=action,
        obj=message,
        after={"server": message.server_id, "sender": message.mail_from, **after},
    )


def _claimed(message: QueuedMessage | int) -> QueuedMessage:
    message_id = message if isinstance(message, int) else message.pk
    claimed = engine.claim(message_id, frozen_ok=True)
    if claimed is None:
        if not QueuedMessage.objects.filter(pk=message_id).exists():
            raise RefusedError(gettext("The message has already left the queue."))
        raise RefusedError(gettext("The message is being delivered right now; try again in a moment."))
    return claimed


def retry_now(message: QueuedMessage | int, *, actor: str) -> QueuedMessage:
    """Make the message due now (a frozen one stays frozen until unfrozen) and wake the node."""
    claimed = _claimed(message)
    engine.release(claimed, next_attempt_at=timezone.now(), dispatched_at=None)
    _audit(actor, "retry_queued_message", claimed)
    _wake(claimed)
    return QueuedMessage.objects.get(pk=claimed.pk)


def freeze(message: QueuedMessage | int, *, actor: str) -> QueuedMessage:
    """Hold the message: no attempt, no expiry report, until unfrozen."""
    message_id = message if isinstance(message, int) else message.pk
    claimed = _claimed(message_id)
    engine.release(claimed, frozen=True)
    _audit(actor, "freeze_queued_message", claimed, frozen=True)
    return QueuedMessage.objects.get(pk=message_id)


def unfreeze(message: QueuedMessage | int, *, actor: str) -> QueuedMessage:
    message_id = message if isinstance(message, int) else message.pk
    updated = QueuedMessage.objects.filter(pk=message_id).update(frozen=False, dispatched_at=None)
    if not updated:
        raise RefusedError(gettext("The message has already left the queue."))
    unfrozen = QueuedMessage.objects.get(pk=message_id)
    _audit(actor, "unfreeze_queued_message", unfrozen, frozen=False)
    _wake(unfrozen)
    return unfrozen


def delete_message(message: QueuedMessage | int, *, ndr: bool, actor: str) -> None:
    """Remove a message from the queue; with `ndr`, tell the sender which recipients did not get it."""
    claimed = _claimed(message)
    server = claimed.server
    path = engine.queue_dir(server) / claimed.name
    now = timezone.now()
    try:
        pending = list(claimed.recipients.filter(state=RecipientState.PENDING))
        if ndr and pending and path.exists():
            raw_file = path.read_bytes()
            result = Result(code=550, status="5.3.0", text="5.3.0 Deleted from the queue by the administrator")
            engine.fail_pending(claimed, result)
            config = DeliverySettings.for_server(server)
            engine.report_failures(server, config, claimed, mailstore.message_of(raw_file), raw_file, now)
        mailstore.remove_durably(path)
        QueuedMessage.objects.filter(pk=claimed.pk).delete()
    except BaseException:
        engine.release(claimed)
        raise
    _audit(actor, "delete_queued_message", claimed, ndr=ndr, pending=[r.address for r in pending])


def _wake(message: QueuedMessage) -> None:
    from servers.delivery.tasks import delivery_scan
    from servers.services.nodes import send_to_node

    send_to_node(message.server.node.name, delivery_scan, message.server.node.name)


# --- the Delivery tab ----------------------------------------------------------------------------

INTERVAL_FIELDS = (
    "first_retry_interval_s",
    "second_retry_interval_s",
    "third_retry_interval_s",
    "subsequent_retry_interval_s",
    "expiration_timeout_s",
    "outbound_timeout_s",
)
EDITABLE_DELIVERY_FIELDS = (
    *INTERVAL_FIELDS,
    "delay_notification_s",
    "smart_host",
    "smart_host_port",
    "smart_host_username",
    "smart_host_password",
    "attempt_direct_before_smart_host",
    "outbound_port",
    "max_outbound_connections",
    "ndr_copy_address",
    "dns_server",
)
SECRET_FIELDS = ("smart_host_password", "password")
HOST_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){HOST_LABEL}(?:\.{HOST_LABEL})*$")


def _clean_int(value, field: str, *, minimum: int, maximum: int | None = None) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise RefusedError(gettext("Enter a whole number."), field=field) from None
    if number < minimum or (maximum is not None and number > maximum):
        if maximum is not None:
            text = gettext("Enter a number between %(minimum)d and %(maximum)d.") % {
                "minimum": minimum,
                "maximum": maximum,
            }
        else:
            text = gettext("Enter a number of at least %(minimum)d.") % {"minimum": minimum}
        raise RefusedError(text, field=field)
    return number


def clean_smart_host(value: str, field: str = "smart_host") -> str:
    """A host name, an IP address, or an IP address in brackets (IIS's "[10.0.0.5]"); "" for none."""
    host = (value or "").strip().lower().rstrip(".")
    if not host:
        return ""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return host
    except ValueError:
        pass
    if not HOST_NAME.match(host):
        raise RefusedError(gettext("Enter a host name or an IP address."), field=field)
    return host


def _clean_delivery_field(field: str, value):
    if field in INTERVAL_FIELDS:
        return _clean_int(value, field, minimum=1)
    if field == "delay_notification_s":
        return _clean_int(value, field, minimum=0)  # 0: never send a delay notification
    if field in ("smart_host_port", "outbound_port"):
        return _clean_int(value, field, minimum=1, maximum=65535)
    if field == "max_outbound_connections":
        return _clean_int(value, field, minimum=1)
    if field == "smart_host":
        return clean_smart_host(value)
    if field == "attempt_direct_before_smart_host":
        if not isinstance(value, bool):
            raise RefusedError(gettext("Choose true or false."), field=field)
        return value
    if field == "ndr_copy_address":
        address = (value or "").strip()
        if address and ("@" not in address or " " in address):
            raise RefusedError(gettext("Enter an e-mail address, or nothing."), field=field)
        return address
    if field == "dns_server":
        text = (value or "").strip()
        if text:
            try:
                routing.parse_dns_server(text)
            except ValueError:
                raise RefusedError(gettext("Enter an IP address, optionally with :port."), field=field) from None
        return text
    if field == "smart_host_username":
        return str(value or "")
    if field == "smart_host_password":
        return _clean_password(value, field)
    raise RefusedError(gettext("%(field)s cannot be changed here.") % {"field": field}, field=field)


def _clean_password(value, field: str) -> str:
    password = str(value or "")
    if len(password) > stored_secrets.MAX_SECRET_LENGTH:
        raise RefusedError(
            gettext("Enter at most %(count)d characters.") % {"count": stored_secrets.MAX_SECRET_LENGTH}, field=field
        )
    return password


def _redacted(values: dict) -> dict:
    return {key: ("********" if key in SECRET_FIELDS and value else value) for key, value in values.items()}


def delivery_settings(server: VirtualServer) -> DeliverySettings:
    """The server's Delivery tab (created with the IIS defaults on first use)."""
    return DeliverySettings.for_server(server)


@transaction.atomic
def update_delivery_settings(server: VirtualServer, *, actor: str = "system", **changes) -> DeliverySettings:
    """Change the Delivery tab of a server; every value is checked first, nothing is saved on an error."""
    config = DeliverySettings.objects.select_for_update().get(pk=DeliverySettings.for_server(server).pk)
    cleaned = {field: _clean_delivery_field(field, value) for field, value in changes.items()}
    if cleaned.get("smart_host_username", config.smart_host_username) and not cleaned.get(
        "smart_host", config.smart_host
    ):
        raise RefusedError(gettext("Name a smart host before giving credentials for it."), field="smart_host")
    if "smart_host_password" in cleaned:
        cleaned["smart_host_password"] = stored_secrets.conceal(cleaned["smart_host_password"])
    if "smart_host_username" in cleaned and not cleaned["smart_host_username"]:
        cleaned["smart_host_password"] = ""  # no AUTH, so nothing to keep a password for
    before = {field: getattr(config, field) for field in cleaned}
    # A new token differs from the stored one even for the same password: a given password is a change.
    changed = {field: value for field, value in cleaned.items() if before[field] != value}
    if not changed:
        return config
    for field, value in changed.items():
        setattr(config, field, value)
    config.save(update_fields=list(changed))
    if "dns_server" in changed:
        # The SMTP worker's DNSBL lookups ask this resolver too: it must reload.
        from servers.services.nodes import request_reconcile
        from servers.services.virtual_servers import bump_config_version

        bump_config_version(server)
        request_reconcile(server.node)
    record_change(
        actor=actor,
        action="update_delivery_settings",
        obj=config,
        before=_redacted({f: before[f] for f in changed}),
        after=_redacted(changed),
    )
    return config


@transaction.atomic
def set_remote_domain_route(
    domain: Domain,
    *,
    smart_host: str,
    port: int = 25,
    username: str = "",
    password: str | None = None,
    actor: str = "system",
) -> RemoteDomainRoute | None:
    """Send a remote domain's mail through a named smart host; an empty `smart_host` removes the route.

    `password=None` keeps the stored password (encrypted, never shown back); "" removes it.
    """
    if domain.type != DomainType.REMOTE:
        raise RefusedError(gettext("Only a remote domain can have its own route."), field="smart_host")
    host = clean_smart_host(smart_host)
    existing = RemoteDomainRoute.objects.filter(domain=domain).first()
    before = _redacted(snapshot_of(existing, ["smart_host", "port", "username", "password"])) if existing else None
    if not host:
        if existing is not None:
            existing.delete()
            record_change(actor=actor, action="remove_remote_domain_route", obj=domain, before=before)
        return None
    username = str(username or "")
    if password is None:
        stored_password = existing.password if existing is not None else ""
    else:
        stored_password = stored_secrets.conceal(_clean_password(password, "password"))
    values = {
        "smart_host": host,
        "port": _clean_int(port, "port", minimum=1, maximum=65535),
        "username": username,
        "password": stored_password if username else "",
    }
    route, _ = RemoteDomainRoute.objects.update_or_create(domain=domain, defaults=values)
    record_change(actor=actor, action="set_remote_domain_route", obj=domain, before=before, after=_redacted(values))
    return route
