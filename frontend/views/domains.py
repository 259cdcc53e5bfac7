"""Domains of a server (IIS's Domains node) and the POP3 service's view of local domains."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.translation import gettext
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from frontend.access import actor
from frontend.forms import AddDomainForm, RouteForm, add_refusal
from frontend.views.base import paginate, render_console
from frontend.views.servers import posted_users
from servers import services
from servers.models import DomainType
from servers.services import RefusedError, dns_readiness, permissions
from servers.services.api_support import set_domain_administrators


@login_required
def server_domains(request: HttpRequest, pk: int) -> HttpResponse:
    """A server's domains with their type; POST adds one."""
    server = permissions.access_server(request.user, pk)
    local_names = list(server.domains.filter(type=DomainType.LOCAL).values_list("name", flat=True))
    form = AddDomainForm(request.POST or None, local_domains=local_names)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            domain = services.add_domain(
                server,
                data["name"],
                type=data["type"],
                alias_of=data["alias_of"] or None,
                relay_allowed=data["relay_allowed"],
                actor=actor(request),
            )
        except RefusedError as exc:
            add_refusal(form, exc)
        else:
            messages.success(request, f"Domain {domain.name} ({domain.get_type_display().lower()}) was added.")
            return redirect("console:server-domains", pk=server.pk)
    domains = (
        server.domains.select_related("alias_of", "route")
        .annotate(mailbox_count=Count("mailboxes"))
        .order_by("-is_default", "name")
    )
    query = request.GET.get("q", "").strip()
    if query:
        domains = domains.filter(name__icontains=query)
    return render_console(
        request,
        "console/server_domains.html",
        {
            "server": server,
            "form": form,
            "page": paginate(request, domains),
            "q": query,
        },
        selected=f"server-{server.pk}-domains",
    )


DOMAIN_ACTIONS = ("default", "lock", "unlock", "remove")


@login_required
@require_POST
def domain_action(request: HttpRequest, pk: int) -> HttpResponse:
    """Set default, lock, unlock or remove one domain."""
    domain = permissions.access_domain(request.user, pk)
    action = request.POST.get("action", "")
    if action not in DOMAIN_ACTIONS:
        raise Http404("no such action")
    allowed = (
        permissions.can_lock_domain(request.user, domain)
        if action in ("lock", "unlock")
        else permissions.can_change_domain(request.user, domain)
    )
    if not allowed:
        raise permissions.NotAllowed("Only an operator of the domain's server can change the domain.")
    try:
        if action == "default":
            services.set_default_domain(domain, actor=actor(request))
            messages.success(request, f"{domain.name} is now the default domain of {domain.server.name}.")
        elif action in ("lock", "unlock"):
            services.set_domain_lock(domain, action == "lock", actor=actor(request))
            messages.success(request, f"{domain.name} is {action}ed.")
        else:
            services.remove_domain(domain, actor=actor(request))
            messages.success(request, f"Domain {domain.name} was removed.")
    except RefusedError as exc:
        messages.error(request, exc.message)
    target = request.POST.get("next", "")
    if target.startswith("/console/"):
        return redirect(target)
    return redirect("console:server-domains", pk=domain.server_id)


@login_required
def pop3_domains(request: HttpRequest) -> HttpResponse:
    """The POP3 service's Domains node: every local domain this user may manage."""
    domains = (
        permissions.domains_visible_to(request.user)
        .filter(type=DomainType.LOCAL)
        .select_related("server")
        .annotate(mailbox_count=Count("mailboxes", distinct=True))
        .order_by("name")
    )
    query = request.GET.get("q", "").strip()
    if query:
        domains = domains.filter(Q(name__icontains=query) | Q(server__name__icontains=query))
    return render_console(
        request, "console/pop3_domains.html", {"page": paginate(request, domains), "q": query}, selected="pop3"
    )


@login_required
@require_POST
def domain_administrators(request: HttpRequest, pk: int) -> HttpResponse:
    """Choose a domain's delegated administrators: for the server's operators and administrators."""
    domain = permissions.access_domain(request.user, pk, for_change=True)
    chosen = posted_users(request, "administrators")
    try:
        set_domain_administrators(domain, chosen, actor=actor(request))
    except RefusedError as exc:
        messages.error(request, exc.message)
        return redirect("console:domain", pk=domain.pk)
    names = ", ".join(u.get_username() for u in chosen) or "nobody"
    messages.success(request, f"Administrators of {domain.name}: {names}.")
    return redirect("console:domain", pk=domain.pk)


@login_required
@require_POST
def domain_quota_ceiling(request: HttpRequest, pk: int) -> HttpResponse:
    """Cap the quota the domain's administrators may give a mailbox: for operators and administrators."""
    domain = permissions.access_domain(request.user, pk, for_change=True)
    try:
        domain = services.set_mailbox_quota_ceiling(
            domain, request.POST.get("max_mailbox_quota_mb", "").strip(), actor=actor(request), acting_user=request.user
        )
    except RefusedError as exc:
        messages.error(request, exc.message)
    else:
        ceiling = f"{domain.max_mailbox_quota_mb} MB" if domain.max_mailbox_quota_mb else "none"
        messages.success(request, f"Quota ceiling of {domain.name} for its domain administrators: {ceiling}.")
    return redirect("console:domain", pk=domain.pk)


@login_required
@require_POST
def domain_language(request: HttpRequest, pk: int) -> HttpResponse:
    """The language of the reports the server writes to the domain's people: for operators and administrators."""
    domain = permissions.access_domain(request.user, pk, for_change=True)
    try:
        domain = services.set_domain_language(domain, request.POST.get("language", ""), actor=actor(request))
    except RefusedError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            gettext("Reports to %(domain)s are now written in: %(language)s.")
            % {
                "domain": domain.name,
                "language": domain.get_language_display()
                if domain.language
                else gettext("the installation's language"),
            },
        )
    return redirect("console:domain", pk=domain.pk)


@login_required
@require_POST
def domain_sender_lists(request: HttpRequest, pk: int) -> HttpResponse:
    """A local domain's sender allow and deny lists: for operators and administrators."""
    from frontend.views.mailboxes import render_domain_page
    from servers.services.virtual_servers import clean_sender_list

    domain = permissions.access_domain(request.user, pk, for_change=True)
    values = {field: request.POST.get(field, "") for field in ("sender_allow", "sender_deny")}
    errors = {}
    for field, value in values.items():  # check both first, so each field shows its own error
        try:
            clean_sender_list(value, field)
        except RefusedError as exc:
            errors[field] = exc.message
    if not errors:
        try:
            services.set_domain_sender_lists(domain, actor=actor(request), acting_user=request.user, **values)
        except RefusedError as exc:
            errors[exc.field or "sender_allow"] = exc.message
    if errors:
        response = render_domain_page(request, domain, sender_list_values=values, sender_list_errors=errors)
        response.status_code = 400
        return response
    messages.success(request, _("Sender lists of %(domain)s saved.") % {"domain": domain.name})
    return redirect(reverse("console:domain", kwargs={"pk": domain.pk}) + "#sender-lists")


@login_required
def remote_domain_route(request: HttpRequest, pk: int) -> HttpResponse:
    """A remote domain's own route: a smart host instead of its MX hosts (empty host: use MX)."""
    domain = permissions.access_domain(request.user, pk, for_change=True)
    if domain.type != DomainType.REMOTE:
        raise Http404("only remote domains have routes")
    from servers.delivery.models import RemoteDomainRoute
    from servers.delivery.services import set_remote_domain_route

    route = RemoteDomainRoute.objects.filter(domain=domain).first()
    form = RouteForm(
        request.POST or None,
        initial={
            "smart_host": route.smart_host if route else "",
            "port": route.port if route else 25,
            "username": route.username if route else "",
        },
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        # The password is never shown back; left empty it stays as it was (None: keep).
        password = data["password"] or None
        try:
            saved = set_remote_domain_route(
                domain,
                smart_host=data["smart_host"],
                port=data["port"] or 25,
                username=data["username"],
                password=password,
                actor=actor(request),
            )
        except RefusedError as exc:
            add_refusal(form, exc)
        else:
            if saved:
                text = gettext("Mail for %(domain)s now goes through %(host)s:%(port)s.") % {
                    "domain": domain.name,
                    "host": saved.smart_host,
                    "port": saved.port,
                }
            else:
                text = gettext("Mail for %(domain)s now goes to its MX hosts.") % {"domain": domain.name}
            messages.success(request, text)
            return redirect("console:server-domains", pk=domain.server_id)
    return render_console(
        request,
        "console/domain_route.html",
        {"domain": domain, "form": form, "route": route},
        selected=f"server-{domain.server_id}-domains",
    )


@login_required
@require_POST
def domain_dkim(request: HttpRequest, pk: int) -> HttpResponse:
    """Generate the domain's DKIM key, or rotate it: the new selector signs at once (publish its record)."""
    domain = permissions.access_domain(request.user, pk)
    if not permissions.can_manage_dkim_keys(request.user, domain):
        raise permissions.NotAllowed(_("You may not change this domain's DKIM key."))
    try:
        key = services.rotate_dkim_key(domain, algorithm=request.POST.get("algorithm") or None, actor=actor(request))
    except RefusedError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            _("New DKIM key %(selector)s for %(domain)s: it signs from now on; publish its TXT record below.")
            % {"selector": key.selector, "domain": domain.name},
        )
    return redirect(f"{reverse('console:domain', args=[domain.pk])}#dkim")


@login_required
def domain_dns(request: HttpRequest, pk: int) -> HttpResponse:
    """DNS readiness of a local domain: each record ok, missing or wrong, and the zone lines to publish."""
    domain = permissions.access_domain(request.user, pk)
    if domain.type != DomainType.LOCAL or not permissions.can_check_dns_readiness(request.user, domain):
        raise permissions.NotVisible(_("Only a local domain has DNS records to check."))
    report = dns_readiness.check_domain(domain)
    to_publish = [record.zone_line for check in report.checks for record in check.publish]
    return render_console(
        request,
        "console/domain_dns.html",
        {"domain": domain, "report": report, "to_publish": "\n".join(to_publish)},
        selected=f"domain-{domain.pk}",
    )
