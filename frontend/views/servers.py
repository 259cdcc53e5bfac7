"""SMTP virtual servers: the list, the live toolbar, the creation wizard and the property sheet."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext, gettext_lazy
from django.views.decorators.http import require_POST

from frontend import queries
from frontend.access import actor, login_required_partial, permitted_by
from frontend.forms import (
    SERVER_KIND_SUBMISSION,
    WIZARD_FIELD_STEP,
    WIZARD_STEPS,
    ServerTabForm,
    WizardAddressForm,
    add_refusal,
    server_tab_fields,
)
from frontend.templatetags.console import state_label
from frontend.views.base import render_console
from servers import services
from servers.delivery import services as delivery_services
from servers.models import AccessRuleKind, ServiceState, SupervisedProcess, VirtualServer
from servers.services import RefusedError, permissions
from servers.services import virtual_servers as server_services
from servers.services.api_support import set_server_operators
from servers.services.sessions import list_sessions, terminate_session
from servers.services.virtual_servers import default_home_dir

STATE_ACTIONS = {"start": ServiceState.RUNNING, "pause": ServiceState.PAUSED, "stop": ServiceState.STOPPED}
TABS = [
    ("general", "General"),
    ("access", "Access"),
    ("messages", "Messages"),
    ("delivery", "Delivery"),
    ("antispam", "Anti-spam"),
    ("filters", "Filters"),
    ("outbound", "Outbound limits"),
    ("security", "Security"),
]
# What the SMTP worker's refusal reasons (`WorkerCounters.count_refusal`) mean; others show as named.
REFUSAL_REASONS = {
    "dnsbl": gettext_lazy("Listed by a DNS blocklist (554 5.7.1 at MAIL)"),
    "greylisted": gettext_lazy("Greylisted: deferred until a retry (451 4.7.1 at RCPT)"),
}


def refusal_rows(refusals: dict[str, int] | None) -> list[tuple[str, str, int]] | None:
    """(reason, what it means, count) for the Anti-spam tab, known reasons first; None when not known."""
    if refusals is None:
        return None
    reasons = [*REFUSAL_REASONS, *sorted(set(refusals) - set(REFUSAL_REASONS))]
    return [(reason, str(REFUSAL_REASONS.get(reason, reason)), refusals.get(reason, 0)) for reason in reasons]


@login_required
def server_list(request: HttpRequest) -> HttpResponse:
    servers = list(permissions.servers_visible_to(request.user).select_related("node").order_by("name"))
    beats = queries.server_heartbeats(servers)
    statuses = [queries.server_status(s, beats.get(s.pk)) for s in servers]
    return render_console(request, "console/server_list.html", {"statuses": statuses}, selected="servers")


def _render_state(request: HttpRequest, server: VirtualServer, *, error: str = "") -> HttpResponse:
    beat = queries.server_heartbeats([server]).get(server.pk)
    return render(
        request, "console/partials/server_state.html", {"status": queries.server_status(server, beat), "error": error}
    )


@login_required_partial
def server_state(request: HttpRequest, pk: int) -> HttpResponse:
    """The state badge and Start/Pause/Stop toolbar of one server; POST changes the desired state."""
    server = permissions.access_server(request.user, pk)
    error = ""
    if request.method == "POST":
        desired = STATE_ACTIONS.get(request.POST.get("action", ""))
        if desired is None:
            raise Http404("no such action")
        try:
            services.set_server_state(server, desired, actor=actor(request))
        except RefusedError as exc:
            error = exc.message
        server.refresh_from_db()
        if not request.htmx:
            if error:
                messages.error(request, error)
            return redirect(request.POST.get("next") or reverse("console:server", args=[server.pk]))
    return _render_state(request, server, error=error)


@permitted_by(permissions.can_manage_nodes, "Only an administrator can do this.")
@require_POST
def node_service_state(request: HttpRequest) -> HttpResponse:
    """Start, pause or stop this node's whole SMTP service."""
    desired = STATE_ACTIONS.get(request.POST.get("action", ""))
    if desired is None:
        raise Http404("no such action")
    node = services.set_node_service_state(services.local_node(), desired, actor=actor(request))
    messages.success(
        request,
        gettext("The SMTP service of %(node)s is now set to %(state)s.")
        % {"node": node.name, "state": state_label(desired).lower()},
    )
    return redirect("console:servers")


# -- the New SMTP Virtual Server wizard ----------------------------------------------------------


def _wizard_form(index: int, data=None, initial=None):
    form_class = WIZARD_STEPS[index][2]
    kwargs = {"initial": initial or {}, "prefix": f"step{index}"}
    if form_class is WizardAddressForm:
        kwargs["ip_choices"] = queries.node_ip_addresses()
    return form_class(data, **kwargs)


@permitted_by(permissions.can_create_server, "Only an administrator can do this.")
def server_wizard(request: HttpRequest) -> HttpResponse:
    """The four steps of IIS's New SMTP Virtual Server wizard; answers so far live in the session."""
    if request.method != "POST":
        request.session.pop("server_wizard", None)
    answers = request.session.get("server_wizard", {})
    index = 0
    form = _wizard_form(0)
    if request.method == "POST":
        index = min(max(int(request.POST.get("step", 0) or 0), 0), len(WIZARD_STEPS) - 1)
        if "back" in request.POST:
            index = max(index - 1, 0)
            form = _wizard_form(index, initial=answers)
        else:
            form = _wizard_form(index, data=request.POST, initial=answers)
            if form.is_valid():
                answers.update({k: v for k, v in form.cleaned_data.items()})
                request.session["server_wizard"] = answers
                if index + 1 < len(WIZARD_STEPS):
                    index += 1
                    initial = dict(answers)
                    if index == 2 and not answers.get("home_dir"):
                        initial["home_dir"] = str(default_home_dir(answers["name"]))
                    form = _wizard_form(index, initial=initial)
                else:
                    try:
                        if answers.get("kind") == SERVER_KIND_SUBMISSION:
                            server = services.create_submission_server(
                                name=answers["name"],
                                ip_address=answers["ip_address"],
                                port=answers["port"],
                                home_dir=answers["home_dir"],
                                start=answers.get("start", False),
                                actor=actor(request),
                            )
                        else:
                            server = services.create_virtual_server(
                                name=answers["name"],
                                ip_address=answers["ip_address"],
                                port=answers["port"],
                                home_dir=answers["home_dir"],
                                default_domain=answers["default_domain"],
                                start=answers.get("start", False),
                                actor=actor(request),
                            )
                    except RefusedError as exc:
                        index = WIZARD_FIELD_STEP.get(exc.field or "", index)
                        form = _wizard_form(index, data=_as_data(_wizard_form(index), answers))
                        form.is_valid()
                        add_refusal(form, exc)
                    else:
                        request.session.pop("server_wizard", None)
                        messages.success(
                            request, gettext("Virtual server %(name)s was created.") % {"name": repr(server.name)}
                        )
                        return redirect("console:server", pk=server.pk)
    return render_console(
        request,
        "console/server_wizard.html",
        {
            "form": form,
            "step": index,
            "steps": [(i, title) for i, (_, title, _) in enumerate(WIZARD_STEPS)],
            "last_step": index == len(WIZARD_STEPS) - 1,
            "answers": answers,
        },
        selected="servers",
    )


def _as_data(form, answers: dict) -> dict:
    """The answers as POST data for `form`, so a refused answer is shown as it was typed."""
    data = {}
    for name in form.fields:
        value = answers.get(name)
        if isinstance(value, bool):
            if value:
                data[form.add_prefix(name)] = "on"
        elif value is not None:
            data[form.add_prefix(name)] = str(value)
    return data


# -- property sheet -----------------------------------------------------------------------------


def posted_users(request: HttpRequest, field: str) -> list:
    """The users a role form names by id; an id naming no one is ignored, the role services judge the rest."""
    ids = [value for value in request.POST.getlist(field) if value.isdigit()]
    return list(get_user_model().objects.filter(pk__in=ids).order_by("username"))


def _save_tab(request: HttpRequest, form: ServerTabForm, obj, tab_url: str, save) -> HttpResponse | None:
    """Apply a tab's changes with `save(changes)`; say what changed, or show the refusal on the form."""
    changes = form.changes_from(obj)
    if not changes:
        messages.info(request, "Nothing changed.")
        return redirect(tab_url)
    before = {field: getattr(obj, field) for field in changes}
    try:
        saved = save(changes)
    except RefusedError as exc:
        add_refusal(form, exc)
        return None
    summary = "; ".join(
        f"{form.fields[f].label}: "
        + ("changed" if f in form.secret_fields else f"{_shown(before[f])} \u2192 {_shown(getattr(saved, f))}")
        for f in changes
    )
    messages.success(request, f"Saved. {summary}")
    return redirect(tab_url)


def _shown(value) -> str:
    if value is None or value == "":
        return "(none)"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


@login_required
def server_properties(request: HttpRequest, pk: int) -> HttpResponse:
    """The server's property sheet; each tab saves on its own and says what changed."""
    server = permissions.access_server(request.user, pk)
    tab = request.GET.get("tab", "general")
    if tab not in dict(TABS):
        tab = "general"
    form = delivery_form = None
    tab_url = f"{reverse('console:server', args=[server.pk])}?tab={tab}"
    posted = request.POST.get("form", "server") if request.method == "POST" else ""
    may_change_operators = permissions.can_change_operators(request.user, server)
    if request.method == "POST" and tab == "security":
        permissions.check_can_change_operators(request.user, server)
        chosen = posted_users(request, "operators")
        try:
            set_server_operators(server, chosen, actor=actor(request))
        except RefusedError as exc:
            messages.error(request, exc.message)
            return redirect(tab_url)
        names = ", ".join(u.get_username() for u in chosen) or "nobody"
        messages.success(request, f"Saved. Operators: {names}.")
        return redirect(tab_url)
    field_names = server_tab_fields(tab, VirtualServer, tuple(server_services.EDITABLE_FIELDS))
    if tab == "delivery":
        settings_obj = delivery_services.delivery_settings(server)
        delivery_form = ServerTabForm(
            request.POST if posted == "delivery" else None,
            server=settings_obj,
            field_names=list(delivery_services.EDITABLE_DELIVERY_FIELDS),
            secret_fields=("smart_host_password",),
            prefix="delivery",
        )
        if posted == "delivery" and delivery_form.is_valid():
            response = _save_tab(
                request,
                delivery_form,
                settings_obj,
                tab_url,
                lambda changes: delivery_services.update_delivery_settings(server, actor=actor(request), **changes),
            )
            if response is not None:
                return response
    if field_names:
        form = ServerTabForm(
            request.POST if posted == "server" else None,
            server=server,
            field_names=field_names,
            ip_choices=queries.node_ip_addresses(),
        )
        if posted == "server" and form.is_valid():
            response = _save_tab(
                request,
                form,
                server,
                tab_url,
                lambda changes: services.update_virtual_server(server, actor=actor(request), **changes),
            )
            if response is not None:
                return response
    if posted in ("server", "delivery") and not (form or delivery_form):
        raise Http404("this tab has nothing to save")
    roles_available = hasattr(server, "operators")
    operators = list(server.operators.order_by("username")) if tab == "security" and roles_available else []
    candidates = list(permissions.role_candidates()) if tab == "security" and may_change_operators else []
    rule_lists = []
    if tab == "access":
        rule_lists = [
            (
                "access",
                "Connection control",
                "Clients the connection policy above applies to.",
                list(server.access_rules.all()),
            ),
            (
                "relay",
                "Relay restrictions",
                "Clients that may relay without signing in (the trusted LAN).",
                list(server.relay_rules.all()),
            ),
        ]
    status = queries.server_status(server, queries.server_heartbeats([server]).get(server.pk))
    return render_console(
        request,
        "console/server_properties.html",
        {
            "server": server,
            "refusal_rows": refusal_rows(status.refusals) if tab == "antispam" else None,
            "tab": tab,
            "tabs": TABS,
            "form": form,
            "operators": operators,
            "roles_available": roles_available,
            "candidates": candidates,
            "may_change_operators": may_change_operators,
            "may_delete": permissions.can_delete_server(request.user, server),
            "rule_lists": rule_lists,
            "rule_kinds": AccessRuleKind.choices,
            "delivery_form": delivery_form,
            "operator_ids": {u.pk for u in operators},
            "home_dir": server.home_dir,
            "status": status,
        },
        selected=f"server-{server.pk}",
    )


@login_required
@require_POST
def server_delete(request: HttpRequest, pk: int) -> HttpResponse:
    server = permissions.access_server(request.user, pk)
    permissions.check_can_delete_server(request.user, server)
    try:
        services.delete_virtual_server(server, actor=actor(request))
    except RefusedError as exc:
        messages.error(request, exc.message)
        return redirect("console:server", pk=server.pk)
    messages.success(
        request, f"Virtual server {server.name!r} was deleted; its home directory {server.home_dir} stays on disk."
    )
    return redirect("console:servers")


def session_rows(unit: SupervisedProcess) -> list[dict]:
    """A worker's live sessions as Current Sessions lists them (a server's or the IMAP service's)."""
    now = time.time()
    rows = []
    for session in list_sessions(unit):
        connected = session.get("connected_at") or now
        rows.append(
            {
                **session,
                "connected": datetime.fromtimestamp(connected, tz=UTC),
                "duration_s": int(max(0, now - connected)),
            }
        )
    return rows


@login_required_partial
def server_sessions(request: HttpRequest, pk: int) -> HttpResponse:
    """IIS's Current Sessions: who is connected now; POST terminates one session."""
    server = permissions.access_server(request.user, pk)
    if request.method == "POST":
        try:
            terminate_session(server, request.POST.get("session", ""), actor=actor(request))
        except RefusedError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, gettext("The session is being closed."))
        return redirect("console:server-sessions", pk=server.pk)
    context = {
        "server": server,
        "rows": session_rows(server),
        "sessions_url": reverse("console:server-sessions", args=[server.pk]),
    }
    if request.htmx:
        return render(request, "console/partials/sessions_table.html", context)
    return render_console(request, "console/server_sessions.html", context, selected=f"server-{server.pk}-sessions")


RULE_LISTS = {
    "access": ("access_rules", "add_access_rule", "remove_access_rule"),
    "relay": ("relay_rules", "add_relay_rule", "remove_relay_rule"),
}


@login_required
@require_POST
def server_rules(request: HttpRequest, pk: int) -> HttpResponse:
    """Add to or remove from the Access tab's connection-control and relay lists."""
    server = permissions.access_server(request.user, pk)
    which = request.POST.get("list", "")
    if which not in RULE_LISTS:
        raise Http404("no such list")
    related, add, remove = RULE_LISTS[which]
    try:
        if request.POST.get("action") == "remove":
            rule = getattr(server, related).filter(pk=request.POST.get("rule") or 0).first()
            if rule is None:
                raise Http404("no such rule")
            getattr(services, remove)(rule, actor=actor(request))
            messages.success(request, f"Removed {rule.value}.")
        else:
            kind = request.POST.get("kind", "")
            if kind not in AccessRuleKind.values:
                raise RefusedError("Choose what the entry names.", field="kind")
            rule = getattr(services, add)(server, kind, request.POST.get("value", ""), actor=actor(request))
            messages.success(request, f"Added {rule.value}.")
    except RefusedError as exc:
        messages.error(request, exc.message)
    return redirect(f"{reverse('console:server', args=[server.pk])}?tab=access")


QUEUE_ACTIONS = ("retry", "freeze", "unfreeze", "delete", "delete_ndr")


@login_required_partial
def server_queue(request: HttpRequest, pk: int) -> HttpResponse:
    """IIS's Queue / Exchange's Queue Viewer: mail waiting for remote delivery, and what can be done to it."""
    server = permissions.access_server(request.user, pk)
    if request.method == "POST":
        action = request.POST.get("action", "")
        message_id = request.POST.get("message", "")
        if action not in QUEUE_ACTIONS or not message_id.isdigit():
            raise Http404("no such action")
        if not permissions.queued_messages_visible_to(request.user).filter(server=server, pk=int(message_id)).exists():
            raise Http404("no such message in this server's queue")
        try:
            if action == "retry":
                delivery_services.retry_now(int(message_id), actor=actor(request))
            elif action == "freeze":
                delivery_services.freeze(int(message_id), actor=actor(request))
            elif action == "unfreeze":
                delivery_services.unfreeze(int(message_id), actor=actor(request))
            else:
                delivery_services.delete_message(int(message_id), ndr=action == "delete_ndr", actor=actor(request))
        except RefusedError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(
                request,
                {
                    "retry": gettext("The message will be retried now."),
                    "freeze": gettext("The message is frozen."),
                    "unfreeze": gettext("The message is no longer frozen."),
                    "delete": gettext("The message was deleted."),
                    "delete_ndr": gettext("The message was deleted; its sender gets a non-delivery report."),
                }[action],
            )
        return redirect("console:server-queue", pk=server.pk)
    context = {"server": server, "entries": delivery_services.reconcile_and_list_queue(server)}
    if request.htmx:
        return render(request, "console/partials/queue_table.html", context)
    return render_console(request, "console/server_queue.html", context, selected=f"server-{server.pk}-queue")
