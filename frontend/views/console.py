"""The dashboard, Logons, the audit log and the Services view."""

from __future__ import annotations

from datetime import datetime, time

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.dateparse import parse_date
from django.utils.translation import gettext
from django.views.decorators.http import require_POST

from frontend import queries
from frontend.access import actor, permitted_by
from frontend.templatetags.console import state_label
from frontend.views.base import paginate, render_console
from servers import services
from servers.counts import object_counts
from servers.models import ImapService, Pop3Service, ServiceState
from servers.services import RefusedError, local_node, outbound_limits, permissions

ADMINISTRATOR_ONLY = "Only an administrator can do this."


def root(request: HttpRequest) -> HttpResponse:
    return redirect("console:dashboard")


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    servers = list(permissions.servers_visible_to(request.user).select_related("node").order_by("name"))
    beats = queries.server_heartbeats(servers)
    counts = object_counts(request.user)
    return render_console(
        request,
        "console/dashboard.html",
        {
            "statuses": [queries.server_status(s, beats.get(s.pk)) for s in servers],
            "counts_list": [
                ("Virtual servers", counts["servers"]),
                ("Running", counts["servers_running"]),
                ("Domains", counts["domains"]),
                ("Mailboxes", counts["mailboxes"]),
                ("Group addresses", counts["groups"]),
                ("Sign-ins (24 h)", counts["logons_24h"]),
            ],
            "blocked_mailboxes": list(
                outbound_limits.blocked_mailboxes(permissions.mailboxes_visible_to(request.user))[:50]
            ),
            "chart_data": {
                "mailboxes": queries.mailboxes_per_domain(request.user),
                "logons": queries.logons_per_day(request.user),
                # The chart counts every change: only for who may read the whole audit log.
                "changes": queries.changes_per_day() if permissions.is_administrator(request.user) else [],
            },
        },
        selected="dashboard",
    )


@login_required
def logons(request: HttpRequest) -> HttpResponse:
    """Exchange's Logons view: who signed in to which mailbox, from where, when."""
    rows = permissions.logons_visible_to(request.user).order_by("-logon_at")
    query = request.GET.get("q", "").strip()
    if query:
        local, _, domain = query.rpartition("@")
        match = Q(mailbox__local_part__icontains=query) | Q(client_address__icontains=query)
        if local:
            match |= Q(mailbox__local_part__iexact=local, mailbox__domain__name__iexact=domain)
        rows = rows.filter(match)
    return render_console(
        request, "console/logons.html", {"page": paginate(request, rows), "q": query}, selected="logons"
    )


def _day_bound(raw: str, end: bool) -> datetime | None:
    day = parse_date(raw or "")
    if day is None:
        return None
    return timezone.make_aware(datetime.combine(day, time.max if end else time.min))


@login_required
def audit_log(request: HttpRequest) -> HttpResponse:
    """The changes made through the services (all for an administrator, one's own otherwise), filterable."""
    entries = permissions.audit_entries_visible_to(request.user)
    filters = {key: request.GET.get(key, "").strip() for key in ("user", "object", "since", "until")}
    if filters["user"]:
        entries = entries.filter(actor__icontains=filters["user"])
    if filters["object"]:
        entries = entries.filter(
            Q(object_repr__icontains=filters["object"])
            | Q(object_type__iexact=filters["object"])
            | Q(action__icontains=filters["object"])
        )
    since, until = _day_bound(filters["since"], False), _day_bound(filters["until"], True)
    if since:
        entries = entries.filter(at__gte=since)
    if until:
        entries = entries.filter(at__lte=until)
    return render_console(
        request, "console/audit.html", {"page": paginate(request, entries), "filters": filters}, selected="audit"
    )


@permitted_by(permissions.can_manage_nodes, ADMINISTRATOR_ONLY)
def node_services(request: HttpRequest) -> HttpResponse:
    node = local_node()
    return render_console(
        request, "console/services.html", {"node": node, "rows": queries.node_services(node)}, selected="services"
    )


@permitted_by(permissions.can_manage_nodes, ADMINISTRATOR_ONLY)
@require_POST
def service_state(request: HttpRequest, service: str) -> HttpResponse:
    """Start, pause or stop one of the node's services from the Services view."""
    desired = {"start": ServiceState.RUNNING, "pause": ServiceState.PAUSED, "stop": ServiceState.STOPPED}.get(
        request.POST.get("action", "")
    )
    if desired is None:
        raise Http404("no such action")
    node = local_node()
    try:
        if service == "smtp":
            services.set_node_service_state(node, desired, actor=actor(request))
        elif service == "pop3":
            pop3 = Pop3Service.objects.filter(node=node).first()
            if pop3 is None:
                raise Http404("this node has no POP3 service")
            services.set_pop3_state(pop3, desired, actor=actor(request))
        elif service == "imap":
            imap = ImapService.objects.filter(node=node).first()
            if imap is None:
                raise Http404("this node has no IMAP service")
            services.set_imap_state(imap, desired, actor=actor(request))
        else:
            raise Http404("no such service")
    except RefusedError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            gettext("The %(service)s service of %(node)s is set to %(state)s.")
            % {"service": service.upper(), "node": node.name, "state": state_label(desired).lower()},
        )
    back = request.POST.get("next", "")
    return redirect(back if back.startswith("/console/") else "console:services")
