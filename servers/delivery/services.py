"""The queue as an administrator sees it, and the actions on it (IIS "Queues", Exchange "Queue Viewer").

Every action takes `actor=` and leaves an audit entry. An action never races a delivery in
progress: it claims the message first, and refuses (DomainError) while a worker holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from servers.delivery import engine, queue
from servers.delivery.client import Result
from servers.delivery.models import DeliverySettings, QueuedMessage, RecipientState
from servers.models import VirtualServer
from servers.services.audit import record_change
from servers.services.errors import DomainError

__all__ = ["QueueEntry", "delete_message", "freeze", "list_queue", "retry_now", "unfreeze"]


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


def list_queue(server: VirtualServer) -> list[QueueEntry]:
    """The server's queued messages, oldest first (the database index, reconciled with the folder first)."""
    engine.reconcile_queue(server)
    now = timezone.now()
    entries = []
    for message in QueuedMessage.objects.filter(server=server).prefetch_related("recipients"):
        entries.append(QueueEntry(
            id=message.pk, name=message.name, sender=message.mail_from,
            recipients=tuple(RecipientEntry(r.address, r.state, r.status, r.last_reply)
                             for r in message.recipients.all()),
            size_octets=message.size_octets, queued_at=message.queued_at, attempts=message.attempts,
            last_reply=message.last_reply, next_retry_at=None if message.frozen else message.next_attempt_at,
            frozen=message.frozen,
            in_delivery=engine.claim_is_alive(message.claimed_by, message.claimed_at, now),
        ))
    return entries


def _audit(actor: str, action: str, message: QueuedMessage, **after) -> None:
    record_change(actor=actor, action=action, obj=message,
                  after={"server": message.server_id, "sender": message.mail_from, **after})


def _claimed(message: QueuedMessage | int) -> QueuedMessage:
    message_id = message if isinstance(message, int) else message.pk
    claimed = engine.claim(message_id)
    if claimed is None:
        if not QueuedMessage.objects.filter(pk=message_id).exists():
            raise DomainError("The message has already left the queue.")
        raise DomainError("The message is being delivered right now; try again in a moment.")
    return claimed


def _unfrozen_claim(message: QueuedMessage | int) -> QueuedMessage:
    """Claim even a frozen message (claims skip frozen ones): unfreeze, claim, restore the flag."""
    message_id = message if isinstance(message, int) else message.pk
    was_frozen = QueuedMessage.objects.filter(pk=message_id, frozen=True).update(frozen=False)
    try:
        claimed = _claimed(message_id)
    finally:
        if was_frozen:
            QueuedMessage.objects.filter(pk=message_id).update(frozen=True)
    claimed.frozen = bool(was_frozen) or claimed.frozen
    return claimed


def retry_now(message: QueuedMessage | int, *, actor: str) -> QueuedMessage:
    """Make the message due now (a frozen one stays frozen until unfrozen) and wake the node."""
    claimed = _unfrozen_claim(message)
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
        raise DomainError("The message has already left the queue.")
    unfrozen = QueuedMessage.objects.get(pk=message_id)
    _audit(actor, "unfreeze_queued_message", unfrozen, frozen=False)
    _wake(unfrozen)
    return unfrozen


def delete_message(message: QueuedMessage | int, *, ndr: bool, actor: str) -> None:
    """Remove a message from the queue; with `ndr`, tell the sender which recipients did not get it."""
    claimed = _unfrozen_claim(message)
    server = claimed.server
    path = engine.queue_dir(server) / claimed.name
    now = timezone.now()
    try:
        pending = list(claimed.recipients.filter(state=RecipientState.PENDING))
        if ndr and pending and path.exists():
            raw_file = path.read_bytes()
            _, _, offset = queue.parse_envelope(raw_file[: queue.MAX_ENVELOPE_OCTETS])
            result = Result(code=550, status="5.3.0", text="5.3.0 Deleted from the queue by the administrator")
            engine.fail_pending(claimed, result)
            config = DeliverySettings.for_server(server)
            engine.report_failures(server, config, claimed, raw_file[offset:], raw_file, now)
        queue.remove_durably(path)
        QueuedMessage.objects.filter(pk=claimed.pk).delete()
    except BaseException:
        engine.release(claimed)
        raise
    _audit(actor, "delete_queued_message", claimed, ndr=ndr, pending=[r.address for r in pending])


def _wake(message: QueuedMessage) -> None:
    from servers.delivery.tasks import delivery_scan
    from servers.services.nodes import send_to_node

    send_to_node(message.server.node.name, delivery_scan, message.server.node.name)

