"""Outbound abuse limits: blocking a mailbox that sent too much, holding its queued mail, releasing it.

The SMTP worker counts what a signed-in mailbox sends (`servers.outbound_counters`, Redis) and
asks `smtp_policy.outbound_limit_exceeded`; over a limit it calls `block_sending` here (in a
thread). Blocked, the mailbox's MAIL is refused (`SENDING_BLOCKED`) and its queued mail is held:
the delivery engine neither attempts nor expires a held message (`QueuedMessage.held`, set here for
rows already indexed and by `engine.index_file` for files indexed later). The administrator (the
server's postmaster address, as for DSNs) and the user are told by mail. `release_sending` (console,
API, `winpop release`) unblocks the mailbox, resets its counters and lets the held mail go, or
deletes it.
"""

from __future__ import annotations

import logging
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from redis.exceptions import RedisError

from servers.delivery import engine
from servers.delivery import services as delivery_services
from servers.delivery.models import QueuedMessage
from servers.livestate import redis_client
from servers.models import Mailbox, VirtualServer
from servers.outbound_counters import counter_keys

from .audit import record_change

log = logging.getLogger(__name__)


def sender_addresses(mailbox: Mailbox) -> list[str]:
    """The MAIL FROM addresses that are this mailbox's: its address in its domain and in that domain's aliases."""
    names = [mailbox.domain.name, *mailbox.domain.aliases.values_list("name", flat=True)]
    return [f"{mailbox.local_part}@{name}" for name in names]


def _held_candidates(mailbox: Mailbox) -> QuerySet[QueuedMessage]:
    query = Q()
    for address in sender_addresses(mailbox):
        query |= Q(mail_from__iexact=address)
    return QueuedMessage.objects.filter(query, server_id=mailbox.domain.server_id)


def sending_block_reason(address: str) -> str | None:
    """Why a signed-in mailbox may not send (None: it may); `address` is its canonical address."""
    row = (
        Mailbox.objects.for_address(address)
        .filter(sending_blocked_at__isnull=False)
        .values_list("sending_blocked_reason", flat=True)
        .first()
    )
    return None if row is None else row or "an outbound limit was passed"


def block_sending(server_id: int, address: str, reason: str) -> bool:
    """Block a mailbox that passed an outbound limit: hold its queued mail, tell its administrator and it.

    True if this call blocked it (False: it was blocked already, or is gone). Called by the SMTP
    worker, in a thread.
    """
    mailbox = (
        Mailbox.objects.for_address(address)
        .filter(domain__server_id=server_id)
        .select_related("domain__server")
        .first()
    )
    if mailbox is None:
        return False
    now = timezone.now()
    with transaction.atomic():
        blocked = Mailbox.objects.filter(pk=mailbox.pk, sending_blocked_at__isnull=True).update(
            sending_blocked_at=now, sending_blocked_reason=reason[:500]
        )
        if not blocked:
            return False
        record_change(
            actor="system",
            action="block_mailbox_sending",
            obj=mailbox,
            after={"reason": reason, "server": server_id},
        )
    server = mailbox.domain.server
    # Files the scan has not indexed yet are indexed now (and held, as index_file sees the block).
    engine.reconcile_queue(server)
    held = _held_candidates(mailbox).filter(held=False).update(held=True)
    log.warning("mailbox %s: sending blocked (%s); %d queued messages held", address, reason, held)
    mailbox.sending_blocked_reason = reason
    _notify(server, mailbox, reason, held)
    return True


def _notify(server: VirtualServer, mailbox: Mailbox, reason: str, held: int) -> None:
    """Mail the server's postmaster and the user (null sender: a notice never bounces, and is never held)."""
    postmaster = engine.postmaster_address(server)
    message = EmailMessage()
    message["From"] = f"MailConsole <{postmaster}>"
    message["To"] = mailbox.address
    message["Cc"] = postmaster
    message["Subject"] = f"Sending blocked for {mailbox.address}"
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=settings.MAIL_HOSTNAME)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to this
    message.set_content(
        f"The mailbox {mailbox.address} on server {server.name} passed an outbound limit: {reason}.\n\n"
        "Until an administrator releases it, it cannot send mail, and the "
        f"{held} message(s) it had waiting in the queue are held (not delivered, not lost).\n\n"
        "If you did not send this mail, your password may be known to someone else: change it.\n"
        "Administrators release the mailbox on its page in the console, with the API, or with\n"
        f"  manage.py winpop release {mailbox.address}\n"
    )
    recipients = list(dict.fromkeys([mailbox.address, postmaster]))
    try:
        engine.submit(server, "", recipients, message.as_bytes())
    except OSError:
        log.exception("mailbox %s: could not queue the sending-blocked notice", mailbox.address)


def reset_counters(mailbox: Mailbox) -> None:
    """Forget what the mailbox sent in the current hour and day (the set of known recipients stays)."""
    hour_key, day_key, new_key, _ = counter_keys(mailbox.domain.server_id, mailbox.address, time.time())
    try:
        redis_client().delete(hour_key, day_key, new_key)
    except (RedisError, OSError) as exc:  # Redis down: the counters expire with their window anyway
        log.warning("mailbox %s: could not reset the outbound counters (%s)", mailbox.address, exc)


def release_sending(mailbox: Mailbox, *, delete_held: bool = False, actor: str = "system") -> int:
    """Unblock a mailbox and let its held mail go (or delete it, without reports); the number of messages."""
    mailbox = Mailbox.objects.select_related("domain__server__node").get(pk=mailbox.pk)
    was = mailbox.sending_blocked_reason
    Mailbox.objects.filter(pk=mailbox.pk).update(sending_blocked_at=None, sending_blocked_reason="")
    reset_counters(mailbox)
    held = list(_held_candidates(mailbox).filter(held=True))
    if delete_held:
        for message in held:
            QueuedMessage.objects.filter(pk=message.pk).update(held=False, frozen=True)
            delivery_services.delete_message(message.pk, ndr=False, actor=actor)
    else:
        QueuedMessage.objects.filter(pk__in=[m.pk for m in held]).update(
            held=False, dispatched_at=None, next_attempt_at=timezone.now()
        )
        if held:
            delivery_services._wake(held[0])
    record_change(
        actor=actor,
        action="release_mailbox_sending",
        obj=mailbox,
        before={"blocked": True, "reason": was},
        after={"blocked": False, "held_messages": len(held), "deleted": delete_held},
    )
    return len(held)


def blocked_mailboxes(mailboxes: QuerySet[Mailbox]) -> QuerySet[Mailbox]:
    """The mailboxes (of those given, e.g. the ones a user sees) that are blocked from sending."""
    return mailboxes.filter(sending_blocked_at__isnull=False).select_related("domain").order_by("-sending_blocked_at")


def held_count(mailbox: Mailbox) -> int:
    return _held_candidates(mailbox).filter(held=True).count()
