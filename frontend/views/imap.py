"""The node's IMAP service: its property sheet and its Current Sessions."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext

from frontend.access import actor, login_required_partial
from frontend.forms import ImapServiceForm, add_refusal
from frontend.views.base import render_console
from frontend.views.servers import session_rows
from servers import services
from servers.services import RefusedError, permissions
from servers.services.mail_services import EDITABLE_FIELDS


@login_required
def imap_properties(request: HttpRequest, pk: int) -> HttpResponse:
    """Address, ports, TLS and default domain; saving reloads (or, for a new address, restarts) the worker."""
    service = permissions.access_imap_service(request.user, pk)
    initial = {name: getattr(service, name) for name in EDITABLE_FIELDS}
    form = ImapServiceForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        changes = {name: value for name, value in form.cleaned_data.items() if value != initial[name]}
        if not changes:
            messages.info(request, gettext("Nothing changed."))
            return redirect("console:imap", pk=service.pk)
        try:
            services.update_imap_service(service, actor=actor(request), **changes)
        except RefusedError as exc:
            add_refusal(form, exc)
        else:
            messages.success(request, gettext("Saved. The IMAP service applies it within seconds."))
            return redirect("console:imap", pk=service.pk)
    return render_console(
        request,
        "console/imap_properties.html",
        {"service": service, "form": form},
        selected="imap",
        status=400 if form.errors else 200,
    )


@login_required_partial
def imap_sessions(request: HttpRequest, pk: int) -> HttpResponse:
    """Who is connected to the IMAP service now; POST terminates one session."""
    service = permissions.access_imap_service(request.user, pk)
    if request.method == "POST":
        try:
            services.terminate_session(service, request.POST.get("session", ""), actor=actor(request))
        except RefusedError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, gettext("The session is being closed."))
        return redirect("console:imap-sessions", pk=service.pk)
    context = {"rows": session_rows(service), "sessions_url": request.path, "show_folder": True}
    if request.htmx:
        return render(request, "console/partials/sessions_table.html", context)
    return render_console(
        request, "console/imap_sessions.html", {**context, "service": service}, selected="imap-sessions"
    )
