"""One delivery attempt of one queued message, and the scan that indexes the Queue folder.

Order of events, so that a crash anywhere gives at most a duplicate, never a loss:
the file is in Queue/ before anything else happens; a recipient is marked delivered only after the
remote host (or our Maildir) took it; a failure is reported (DSN queued, BadMail written) before the
recipient is marked notified; the file leaves Queue/ only when every recipient is settled, and the
row goes after the file. A message being worked on is claimed by its process; the claim of a process
that died is void, so the next scan hands the message to another worker.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import psutil
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from servers import maildir, mailstore, message_format
from servers.delivery import dsn, routing, signing
from servers.delivery.client import ConnectionSlots, Result, deliver, result_of
from servers.delivery.models import (
    DeliverySettings,
    QueuedMessage,
    QueuedRecipient,
    RecipientState,
    RemoteDomainRoute,
)
from servers.models import Domain, Mailbox, ServiceState, VirtualServer
from servers.services.dkim import signing_keys_of_server
from servers.services.errors import RefusedError
from servers.services.names import canonical_domain_name
from servers.snapshot import ServerSnapshot, load_snapshot

log = logging.getLogger(__name__)

ACTIVE_STATES = (ServiceState.RUNNING.value, ServiceState.PAUSED.value)
# A claim from another host cannot be checked by pid; it is void after this long.
FOREIGN_CLAIM_LEASE = timedelta(hours=2)


# --- claims -------------------------------------------------------------------------------------


def _process_identity(pid: int) -> str:
    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        return ""
    return f"{socket.gethostname()}:{pid}:{int(started * 100)}"


def claimant() -> str:
    """This process, in a form that another process on the node can check for life."""
    return _process_identity(os.getpid())


def claim_is_alive(claimed_by: str, claimed_at: datetime | None, now: datetime) -> bool:
    if not claimed_by:
        return False
    host, _, rest = claimed_by.partition(":")
    if host != socket.gethostname():
        return claimed_at is not None and now - claimed_at < FOREIGN_CLAIM_LEASE
    pid_text = rest.partition(":")[0]
    return pid_text.isdigit() and _process_identity(int(pid_text)) == claimed_by


def claim(message_id: int, *, frozen_ok: bool = False) -> QueuedMessage | None:
    """Take a message for this process, or None if it is gone, a live process has it, or it is frozen
    or held (unless `frozen_ok`: an administrator's action on a frozen or held message)."""
    now = timezone.now()
    me = claimant()
    message = QueuedMessage.objects.filter(pk=message_id).only("claimed_by", "claimed_at").first()
    if message is None:
        return None
    if message.claimed_by and claim_is_alive(message.claimed_by, message.claimed_at, now):
        return None
    candidates = QueuedMessage.objects.filter(pk=message_id, claimed_by=message.claimed_by)
    if not frozen_ok:
        candidates = candidates.filter(frozen=False, held=False)
    taken = candidates.update(claimed_by=me, claimed_at=now)
    if not taken:
        return None
    return QueuedMessage.objects.select_related("server__node").get(pk=message_id)


def release(message: QueuedMessage, **changes) -> None:
    QueuedMessage.objects.filter(pk=message.pk, claimed_by=message.claimed_by).update(
        claimed_by="", claimed_at=None, **changes
    )


# --- indexing the Queue folder -------------------------------------------------------------------


def queue_dir(server: VirtualServer) -> Path:
    return server.home_path / mailstore.QUEUE_DIR


def index_file(server: VirtualServer, name: str, *, now: datetime | None = None) -> QueuedMessage | None:
    """Create the row for `Queue/<name>` from the file's envelope (no-op if it exists)."""
    path = queue_dir(server) / name
    try:
        parsed = mailstore.read_queue_file(path)
        stat = path.stat()
    except FileNotFoundError:
        return None
    except mailstore.EnvelopeError as error:
        data = path.read_bytes()
        mailstore.to_badmail(server.home_path, name, data, f"Unreadable queue file: {error}\r\n")
        mailstore.remove_durably(path)
        return None
    now = now or timezone.now()
    queued_at = datetime.fromtimestamp(stat.st_mtime, tz=now.tzinfo)
    try:
        with transaction.atomic():
            message, created = QueuedMessage.objects.get_or_create(
                server=server,
                name=name,
                defaults={
                    "mail_from": parsed.mail_from,
                    "size_octets": stat.st_size - parsed.body_offset,
                    "queued_at": min(queued_at, now),
                    "next_attempt_at": now,
                    "held": sender_blocked(server.pk, parsed.mail_from),
                },
            )
            if created:
                QueuedRecipient.objects.bulk_create(
                    [QueuedRecipient(message=message, address=address) for address in dict.fromkeys(parsed.recipients)]
                )
    except IntegrityError:
        return QueuedMessage.objects.filter(server=server, name=name).first()
    return message


def sender_blocked(server_id: int, mail_from: str) -> bool:
    """Whether MAIL FROM is a mailbox of this server (in its domain or an alias of it) blocked from
    sending by an outbound limit (services.outbound_limits): its queued mail is held."""
    local_part, at, domain = (mail_from or "").lower().rpartition("@")
    if not at:
        return False
    return (
        Mailbox.objects.filter(domain__server_id=server_id, local_part=local_part, sending_blocked_at__isnull=False)
        .filter(Q(domain__name=domain) | Q(domain__aliases__name=domain))
        .exists()
    )


def reconcile_queue(server: VirtualServer) -> tuple[int, int]:
    """Make the rows match the Queue folder: index new files, drop rows whose file is gone."""
    known = dict(QueuedMessage.objects.filter(server=server).values_list("name", "claimed_by"))
    files = mailstore.list_queue(server.home_path)
    added = 0
    for name in files:
        if name not in known and index_file(server, name) is not None:
            added += 1
    on_disk = set(files)
    gone = [name for name, claimed_by in known.items() if name not in on_disk and not claimed_by]
    removed = 0
    if gone:
        # Re-check the disk: a file written between our listing and now is not gone.
        gone = [name for name in gone if not (queue_dir(server) / name).exists()]
        removed, _ = QueuedMessage.objects.filter(server=server, name__in=gone, claimed_by="").delete()
        if removed:
            log.warning("server %s: %d queue rows had no file and were dropped", server.pk, len(gone))
    return added, removed


def release_dead_claims(server_ids: list[int]) -> int:
    now = timezone.now()
    released = 0
    claimed = QueuedMessage.objects.filter(server_id__in=server_ids).exclude(claimed_by="")
    for pk, claimed_by, claimed_at in claimed.values_list("pk", "claimed_by", "claimed_at"):
        if not claim_is_alive(claimed_by, claimed_at, now):
            released += QueuedMessage.objects.filter(pk=pk, claimed_by=claimed_by).update(
                claimed_by="", claimed_at=None, dispatched_at=None
            )
    return released


def active_servers(node_name: str) -> list[VirtualServer]:
    servers = VirtualServer.objects.on_node(node_name).select_related("node")
    return [server for server in servers if server.effective_desired_state in ACTIVE_STATES]


def due_messages(server_ids: list[int], *, redispatch_after_s: float, max_in_flight: int) -> list[int]:
    """Messages whose attempt is due and that no task is (recently) on its way to.

    At most `max_in_flight` tasks wait in the node's queue at once, so a long queue never buries
    the node's reconcile task under thousands of delivery attempts.
    """
    now = timezone.now()
    stale = now - timedelta(seconds=redispatch_after_s)
    mine = QueuedMessage.objects.filter(server_id__in=server_ids)
    in_flight = mine.filter(dispatched_at__gte=stale).count()
    room = max(0, max_in_flight - in_flight)
    if not room:
        return []
    due = mine.due(now).filter(claimed_by="").filter(Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=stale))
    ids = list(due.order_by("next_attempt_at").values_list("pk", flat=True)[:room])
    QueuedMessage.objects.filter(pk__in=ids).update(dispatched_at=now)
    return ids


# --- new messages (DSNs, pickup) ------------------------------------------------------------------


def submit(server: VirtualServer, mail_from: str, recipients: list[str], message: bytes) -> QueuedMessage | None:
    """Queue a message made here (a DSN, a picked-up file) and index it at once."""
    message_id = mailstore.enqueue(server.home_path, mail_from, recipients, [message])
    return index_file(server, message_id + mailstore.SUFFIX)


# --- one attempt --------------------------------------------------------------------------------


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


def deliver_locally(
    snapshot: ServerSnapshot, mail_from: str, recipients: list[str], message: bytes
) -> dict[str, Result]:
    """Deliver to this server's own mailboxes (or Drop/) through the store, as the SMTP path does."""
    results: dict[str, Result] = {}
    size_octets = mailstore.stored_size_octets(mail_from, [message])
    targets: dict[Path, str] = {}
    to_drop: list[str] = []
    for address in recipients:
        local_part, _, domain = address.rpartition("@")
        destination = snapshot.destination(local_part.lower(), domain.lower())
        if destination is None:
            results[address] = result_of(550, f"5.1.1 <{address}>: no such user here", snapshot.hostname)
            continue
        full = [
            entry
            for entry in destination.mailboxes
            if maildir.would_exceed_quota(entry.maildir, entry.quota_bytes, entry.quota_messages, size_octets, 1)
        ]
        if full:
            results[address] = result_of(452, f"4.2.2 <{address}>: mailbox full", snapshot.hostname)
            continue
        for entry in destination.mailboxes:
            targets[entry.maildir] = address
        if destination.to_drop:
            to_drop.append(address)
        results[address] = result_of(250, "2.0.0 Delivered locally", snapshot.hostname)
    delivered = set(targets.values()) | set(to_drop)
    try:
        mailstore.store_message(
            home_dir=snapshot.home_dir,
            mail_from=mail_from,
            chunks=[message],
            maildirs=list(targets),
            drop_recipients=to_drop,
            create_dirs=True,
        )
    except OSError as error:
        for address in delivered:
            results[address] = result_of(451, f"4.3.0 Local delivery failed: {error}", snapshot.hostname)
    return results


def _smart_host(host: str, port: int, username: str, password: str) -> routing.SmartHost | None:
    return routing.SmartHost(host, port, username, password) if host.strip() else None


def attempt(
    server: VirtualServer, config: DeliverySettings, mail_from: str, recipients: list[str], message: bytes
) -> dict[str, Result]:
    """Try every recipient once: local ones into Maildirs, remote ones grouped by destination host."""
    snapshot = load_snapshot(server.pk)
    local = [r for r in recipients if snapshot.accepts_domain(domain_of(r))]
    results = deliver_locally(snapshot, mail_from, local, message) if local else {}
    remote = [r for r in recipients if r not in results]
    if not remote:
        return results
    resolver = routing.make_resolver(
        config.dns_server or settings.DELIVERY_DNS_SERVER, timeout_s=settings.DELIVERY_DNS_TIMEOUT_S
    )
    is_self = routing.self_checker(settings.MAIL_HOSTNAME, server.ip_address, server.port)
    server_smart_host = _smart_host(
        config.smart_host, config.smart_host_port, config.smart_host_username, config.smart_host_password
    )
    domain_routes = {
        route.domain.name: _smart_host(route.smart_host, route.port, route.username, route.password)
        for route in RemoteDomainRoute.objects.filter(domain__server=server).select_related("domain")
    }
    groups: dict[tuple, tuple[routing.Route, list[str]]] = {}
    routes_by_domain: dict[str, routing.Route | routing.RoutingError] = {}
    for recipient in remote:
        domain = domain_of(recipient)
        if domain not in routes_by_domain:
            try:
                routes_by_domain[domain] = routing.route_domain(
                    resolver,
                    domain,
                    outbound_port=config.outbound_port,
                    domain_smart_host=domain_routes.get(domain),
                    server_smart_host=server_smart_host,
                    attempt_direct_first=config.attempt_direct_before_smart_host,
                    is_self=is_self,
                )
            except routing.RoutingError as error:
                routes_by_domain[domain] = error
        route = routes_by_domain[domain]
        if isinstance(route, routing.RoutingError):
            results[recipient] = result_of(route.code, f"{route.status} {route.text}")
            continue
        groups.setdefault(route.key, (route, []))[1].append(recipient)
    if groups:
        # Local copies above stay as they came; what leaves for another host carries our signature.
        message = signing.signed(message, mail_from, signing_keys_of_server(server))
    slots = ConnectionSlots(server.home_path / mailstore.TMP_DIR / "outbound-slots", config.max_outbound_connections)
    source = None if server.ip_address in ("0.0.0.0", "::") else server.ip_address
    for route, group in groups.values():
        results.update(
            deliver(
                route,
                mail_from,
                group,
                message,
                helo=settings.MAIL_HOSTNAME,
                timeout_s=min(config.outbound_timeout_s, settings.DELIVERY_SMTP_TIMEOUT_S),
                slots=slots,
                source_address=source,
            )
        )
    return results


# --- reports -------------------------------------------------------------------------------------


def postmaster_address(server: VirtualServer) -> str:
    default = server.default_domain
    return f"postmaster@{default.name if default else settings.MAIL_HOSTNAME}"


def _result_of_row(row: QueuedRecipient) -> Result:
    code = int(row.last_reply[:3]) if row.last_reply[:3].isdigit() else (550 if row.status.startswith("5") else 451)
    text = row.last_reply[4:] if row.last_reply[:3].isdigit() else row.last_reply
    return Result(code=code, status=row.status or f"{str(code)[0]}.0.0", text=text, host=row.remote_host)


def bdr_text(message: QueuedMessage, rows: list[QueuedRecipient], now: datetime) -> str:
    lines = [
        f"Message {message.name} of server {message.server_id} could not be delivered.",
        f"Sender: <{message.mail_from}>",
        f"Queued at: {message.queued_at.isoformat()}",
        f"Reported at: {now.isoformat()}",
        f"Attempts: {message.attempts}",
        "",
    ]
    for row in rows:
        host = f" ({row.remote_host})" if row.remote_host else ""
        lines.append(f"<{row.address}>: {row.last_reply}{host}")
    return "\r\n".join(lines) + "\r\n"


def report_failures(
    server: VirtualServer, config: DeliverySettings, message: QueuedMessage, data: bytes, raw_file: bytes, now: datetime
) -> None:
    """Send the DSN for failed, unreported recipients, keep the original in BadMail/, mark them notified."""
    rows = list(message.recipients.filter(state=RecipientState.FAILED, notified=False))
    if not rows:
        return
    all_failed = list(message.recipients.filter(state=RecipientState.FAILED))
    mailstore.to_badmail(server.home_path, message.name, raw_file, bdr_text(message, all_failed, now))
    report_to = [message.mail_from] if message.mail_from else []
    if report_to and config.ndr_copy_address and config.ndr_copy_address.lower() != message.mail_from.lower():
        report_to.append(config.ndr_copy_address)
    if report_to:
        reports = [
            dsn.RecipientReport(row.address, dsn.FAILED, _result_of_row(row), message.last_attempt_at) for row in rows
        ]
        _send_report(server, message, data, reports, now, report_to)
    QueuedRecipient.objects.filter(pk__in=[row.pk for row in rows]).update(notified=True)


def _send_report(
    server: VirtualServer,
    message: QueuedMessage,
    data: bytes,
    reports: list[dsn.RecipientReport],
    now: datetime,
    report_to: list[str],
) -> None:
    """Queue a DSN about `message` (null sender, so it never bounces back) to `report_to`."""
    report = dsn.build_report(
        reporting_mta=settings.MAIL_HOSTNAME,
        postmaster=postmaster_address(server),
        to=message.mail_from,
        original=data,
        arrival_date=message.queued_at,
        recipients=reports,
        now=now,
        queue_id=message.name,
        language=report_language(message.mail_from),
    )
    submit(server, "", report_to, report)


def report_language(sender: str) -> str:
    """The language of a report to `sender`: its local domain's setting, else the installation's."""
    try:
        domain = canonical_domain_name(sender.rpartition("@")[2])
    except RefusedError:
        return settings.MAIL_LANGUAGE
    chosen = Domain.objects.filter(name=domain).exclude(language="").values_list("language", flat=True).first()
    return chosen or settings.MAIL_LANGUAGE


def report_delay(
    server: VirtualServer, config: DeliverySettings, message: QueuedMessage, data: bytes, now: datetime
) -> None:
    rows = list(message.recipients.filter(state=RecipientState.PENDING))
    if message.mail_from and rows:
        until = message.queued_at + timedelta(seconds=config.expiration_timeout_s)
        reports = [
            dsn.RecipientReport(
                row.address, dsn.DELAYED, _result_of_row(row), message.last_attempt_at, will_retry_until=until
            )
            for row in rows
        ]
        _send_report(server, message, data, reports, now, [message.mail_from])
    QueuedMessage.objects.filter(pk=message.pk).update(delay_notified=True)


def fail_pending(message: QueuedMessage, result: Result) -> None:
    message.recipients.filter(state=RecipientState.PENDING).update(
        state=RecipientState.FAILED, status=result.status, last_reply=result.reply, remote_host=result.host
    )


def expiry_result(message: QueuedMessage, config: DeliverySettings) -> Result:
    hours = config.expiration_timeout_s / 3600
    last = f"; last reply: {message.last_reply}" if message.last_reply else ""
    return Result(code=550, status="4.4.7", text=f"4.4.7 Message expired after {hours:g} hours in the queue{last}")


def finish(server: VirtualServer, message: QueuedMessage) -> bool:
    """Remove the message once every recipient is settled; True if it left the queue."""
    if message.recipients.filter(state=RecipientState.PENDING).exists():
        return False
    if message.recipients.filter(state=RecipientState.FAILED, notified=False).exists():
        return False
    mailstore.remove_durably(queue_dir(server) / message.name)
    QueuedMessage.objects.filter(pk=message.pk).delete()
    return True


def _fixed_clock(moment: datetime) -> Callable[[], datetime]:
    """A clock that always reads `moment`."""
    return lambda: moment


def process_message(message_id: int, *, now: datetime | None = None) -> str:
    """Run whatever is due for one queued message; returns a word for the task log.

    `now` stands for the clock at every step (tests pass it instead of sleeping until a retry is due).
    """
    clock: Callable[[], datetime] = timezone.now if now is None else _fixed_clock(now)
    message = claim(message_id)
    if message is None:
        return "busy"
    server = message.server
    next_attempt_at = message.next_attempt_at
    try:
        if server.effective_desired_state not in ACTIVE_STATES:
            return "server stopped"
        if sender_blocked(server.pk, message.mail_from):
            # Blocked after this row was indexed and before the block reached it: hold it now.
            QueuedMessage.objects.filter(pk=message.pk).update(held=True)
            return "held"
        path = queue_dir(server) / message.name
        try:
            raw_file = path.read_bytes()
        except FileNotFoundError:
            QueuedMessage.objects.filter(pk=message.pk).delete()
            return "file gone"
        data = mailstore.message_of(raw_file)
        config = DeliverySettings.for_server(server)
        now = clock()
        pending = list(message.recipients.filter(state=RecipientState.PENDING))
        outcome = "waiting"
        if pending and now - message.queued_at >= timedelta(seconds=config.expiration_timeout_s):
            fail_pending(message, expiry_result(message, config))
            outcome = "expired"
        elif pending and message_format.hop_count(data) > server.max_hop_count:
            fail_pending(
                message, result_of(554, f"5.4.6 Hop count exceeded ({server.max_hop_count}): the message is looping")
            )
            outcome = "looping"
        elif pending and message.next_attempt_at <= now:
            try:
                results = attempt(server, config, message.mail_from, [row.address for row in pending], data)
            except Exception as error:  # a bug or a database hiccup must not turn into a tight retry loop
                log.exception("message %s: the delivery attempt failed", message.name)
                failure = result_of(451, f"4.3.0 Internal error during delivery: {type(error).__name__}")
                results = dict.fromkeys((row.address for row in pending), failure)
            outcome = record_results(message, pending, results, config, now)
            next_attempt_at = now + timedelta(seconds=config.retry_interval_s(message.attempts))
            message.refresh_from_db()
        report_failures(server, config, message, data, raw_file, clock())
        if finish(server, message):
            return f"{outcome}, done"
        if (
            not message.delay_notified
            and config.delay_notification_s
            and now - message.queued_at >= timedelta(seconds=config.delay_notification_s)
        ):
            report_delay(server, config, message, data, clock())
        return outcome
    finally:
        release(message, next_attempt_at=next_attempt_at, dispatched_at=None)


def record_results(
    message: QueuedMessage,
    pending: list[QueuedRecipient],
    results: dict[str, Result],
    config: DeliverySettings,
    now: datetime,
) -> str:
    counts: dict[str, int] = defaultdict(int)
    last_reply = ""
    for row in pending:
        result = results.get(row.address)
        if result is None:
            continue
        if result.delivered:
            row.state = RecipientState.DELIVERED
        elif result.permanent:
            row.state = RecipientState.FAILED
        counts[row.state] += 1
        row.status, row.last_reply, row.remote_host = result.status, result.reply[:2000], result.host[:255]
        if not result.delivered:
            last_reply = result.reply
    with transaction.atomic():
        QueuedRecipient.objects.bulk_update(pending, ["state", "status", "last_reply", "remote_host"])
        message.attempts += 1
        QueuedMessage.objects.filter(pk=message.pk).update(
            attempts=message.attempts, last_attempt_at=now, last_reply=last_reply[:2000] or message.last_reply
        )
    return ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
