"""Mailboxes and group addresses of a local domain (the POP3 service and Exchange's Mailboxes view)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Prefetch, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.translation import gettext
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from frontend.access import actor
from frontend.forms import (
    PASSWORD_RULE,
    AddGroupForm,
    AddMailboxForm,
    ChangePasswordForm,
    DeleteMailboxForm,
    MailboxPropertiesForm,
    ReleaseSendingForm,
    add_refusal,
)
from frontend.views.base import paginate, render_console
from servers import services
from servers.models import DkimAlgorithm, DomainType, Mailbox
from servers.services import RefusedError, mailbox_usage, outbound_limits, permissions
from servers.services.dkim import dkim_record
from servers.services.mailboxes import OUTBOUND_LIMIT_FIELDS

KB = 1024


def kb_to_bytes(value: int | None) -> int | None:
    return None if value is None or value == 0 else value * KB


def _show_quota_ceiling(form, domain, user) -> None:
    """Tell a domain administrator the most they may give, instead of "empty: no limit"."""
    ceiling_mb = domain.max_mailbox_quota_mb
    if ceiling_mb and permissions.acts_only_as_domain_administrator(user, domain):
        form.fields["quota_kb"].help_text = f"Required: at most {ceiling_mb * 1024} KB ({ceiling_mb} MB)."


@login_required
def domain_mailboxes(request: HttpRequest, pk: int) -> HttpResponse:
    """Exchange's Mailboxes view of one domain: name, display name, size, items, last logon."""
    domain = permissions.access_domain(request.user, pk)
    if domain.type != DomainType.LOCAL:
        raise Http404("only local domains have mailboxes")
    return render_domain_page(request, domain)


def render_domain_page(
    request: HttpRequest, domain, *, sender_list_values: dict | None = None, sender_list_errors: dict | None = None
) -> HttpResponse:
    """The domain's page; after a refused sender-list edit, with what was typed and the field errors."""
    mailboxes = permissions.mailboxes_visible_to(request.user).filter(domain=domain).select_related("domain__server")
    query = request.GET.get("q", "").strip()
    if query:
        mailboxes = mailboxes.filter(Q(local_part__icontains=query) | Q(display_name__icontains=query))
    page = paginate(request, mailboxes.order_by("local_part"))
    rows = [(m, mailbox_usage(m)) for m in page.object_list]
    # A group shows only the members the user may see (as in the API), and how many there are in all.
    visible = permissions.mailboxes_visible_to(request.user).select_related("domain")
    groups = (
        domain.groups.annotate(member_count=Count("members"))
        .prefetch_related(Prefetch("members", queryset=visible, to_attr="visible_members"))
        .order_by("local_part")
    )
    can_manage_server = permissions.can_change_domain(request.user, domain)
    return render_console(
        request,
        "console/domain_mailboxes.html",
        {
            "domain": domain,
            "page": page,
            "rows": rows,
            "q": query,
            "groups": groups,
            "can_manage_server": can_manage_server,
            "can_lock_domain": permissions.can_lock_domain(request.user, domain),
            "administrators": list(domain.administrators.order_by("username")),
            "candidates": list(permissions.role_candidates()) if can_manage_server else [],
            "dkim": dkim_record(domain),
            "can_manage_dkim": permissions.can_manage_dkim_keys(request.user, domain),
            "dkim_algorithms": DkimAlgorithm.choices,
            "can_check_dns": permissions.can_check_dns_readiness(request.user, domain),
            "alias_names": list(domain.aliases.order_by("name").values_list("name", flat=True)),
            "sender_list_values": sender_list_values
            or {"sender_allow": domain.sender_allow, "sender_deny": domain.sender_deny},
            "sender_list_errors": sender_list_errors or {},
        },
        selected=f"domain-{domain.pk}",
    )


@sensitive_post_parameters("password")
@login_required
def mailbox_new(request: HttpRequest, pk: int) -> HttpResponse:
    domain = permissions.access_domain(request.user, pk)
    form = AddMailboxForm(request.POST or None)
    _show_quota_ceiling(form, domain, request.user)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            mailbox = services.add_mailbox(
                domain,
                data["local_part"],
                data["password"],
                display_name=data["display_name"],
                quota_bytes=kb_to_bytes(data["quota_kb"]),
                quota_messages=data["quota_messages"],
                actor=actor(request),
                acting_user=request.user,
            )
        except RefusedError as exc:
            add_refusal(form, exc, {"quota_bytes": "quota_kb"})
        else:
            messages.success(request, gettext("Mailbox %(address)s was created.") % {"address": mailbox.address})
            return redirect("console:domain", pk=domain.pk)
    return render_console(
        request,
        "console/mailbox_new.html",
        {"domain": domain, "form": form, "password_rule": PASSWORD_RULE},
        selected=f"domain-{domain.pk}",
    )


def _properties_initial(mailbox: Mailbox) -> dict:
    return {
        "display_name": mailbox.display_name,
        "quota_kb": mailbox.quota_bytes // KB if mailbox.quota_bytes else None,
        "quota_messages": mailbox.quota_messages,
        "is_catch_all": mailbox.is_catch_all,
        **{field: getattr(mailbox, field) for field in OUTBOUND_LIMIT_FIELDS},
    }


@sensitive_post_parameters("password")
@login_required
def mailbox_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A mailbox's properties, password, lock and deletion; each form posts on its own."""
    mailbox = permissions.access_mailbox(request.user, pk)
    form_name = request.POST.get("form", "") if request.method == "POST" else ""
    properties = MailboxPropertiesForm(
        request.POST if form_name == "properties" else None, initial=_properties_initial(mailbox)
    )
    _show_quota_ceiling(properties, mailbox.domain, request.user)
    password = ChangePasswordForm(request.POST if form_name == "password" else None)
    delete = DeleteMailboxForm(request.POST if form_name == "delete" else None)
    who = actor(request)
    if form_name == "properties" and properties.is_valid():
        data = properties.cleaned_data
        try:
            services.update_mailbox(
                mailbox,
                display_name=data["display_name"],
                quota_bytes=kb_to_bytes(data["quota_kb"]),
                quota_messages=data["quota_messages"],
                is_catch_all=data["is_catch_all"],
                **{field: data[field] for field in OUTBOUND_LIMIT_FIELDS},
                actor=who,
                acting_user=request.user,
            )
        except RefusedError as exc:
            add_refusal(properties, exc, {"quota_bytes": "quota_kb"})
        else:
            changed = [f for f in properties.changed_data]
            messages.success(
                request,
                "Saved: "
                + (", ".join(properties.fields[f].label or f for f in changed) if changed else "nothing changed")
                + ".",
            )
            return redirect("console:mailbox", pk=mailbox.pk)
    elif form_name == "password" and password.is_valid():
        try:
            services.change_password(mailbox, password.cleaned_data["password"], actor=who)
        except RefusedError as exc:
            add_refusal(password, exc)
        else:
            messages.success(request, f"The password of {mailbox.address} was changed.")
            return redirect("console:mailbox", pk=mailbox.pk)
    elif form_name == "release_sending":
        if not permissions.can_release_sending(request.user, mailbox):
            raise permissions.NotAllowed("You may not release this mailbox.")
        release = ReleaseSendingForm(request.POST)
        if not release.is_valid():
            raise Http404("no such choice")
        delete_held = release.cleaned_data["held_mail"] == "delete"
        count = outbound_limits.release_sending(mailbox, delete_held=delete_held, actor=who)
        what = "deleted" if delete_held else "sent on"
        messages.success(request, f"{mailbox.address} may send again; {count} held message(s) {what}.")
        return redirect("console:mailbox", pk=mailbox.pk)
    elif form_name in ("lock", "unlock"):
        services.set_mailbox_lock(mailbox, form_name == "lock", actor=who)
        messages.success(request, f"{mailbox.address} is {form_name}ed.")
        return redirect("console:mailbox", pk=mailbox.pk)
    elif form_name == "delete" and delete.is_valid():
        remove_mail = delete.cleaned_data["remove_mail"]
        domain_pk = mailbox.domain_id
        kept_because = services.delete_mailbox(mailbox, remove_mail=remove_mail, actor=who)
        if kept_because:
            messages.warning(
                request, f"Mailbox {mailbox.address} was deleted, but its stored mail was left on disk: {kept_because}."
            )
        else:
            kept = "its stored mail was removed" if remove_mail else f"its stored mail stays in {mailbox.maildir}"
            messages.success(request, f"Mailbox {mailbox.address} was deleted; {kept}.")
        return redirect("console:domain", pk=domain_pk)
    elif request.method == "POST" and form_name not in ("properties", "password", "delete"):
        raise Http404("no such form")
    return render_console(
        request,
        "console/mailbox_detail.html",
        {
            "mailbox": mailbox,
            "usage": mailbox_usage(mailbox),
            "properties": properties,
            "password": password,
            "delete": delete,
            "password_rule": PASSWORD_RULE,
            "logons": mailbox.logons.all()[:10],
            "release": ReleaseSendingForm(),
            "held_count": outbound_limits.held_count(mailbox) if mailbox.sending_blocked_at else 0,
        },
        selected=f"domain-{mailbox.domain_id}",
    )


@login_required
@require_POST
def group_new(request: HttpRequest, pk: int) -> HttpResponse:
    domain = permissions.access_domain(request.user, pk)
    form = AddGroupForm(request.POST)
    if form.is_valid():
        try:
            group = services.add_group(domain, form.cleaned_data["local_part"], actor=actor(request))
        except RefusedError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(
                request, gettext("Group address %(group)s was created; choose its members.") % {"group": group}
            )
            return redirect("console:group", pk=group.pk)
    else:
        messages.error(request, gettext("Enter the group's address."))
    return redirect("console:domain", pk=domain.pk)


@login_required
def group_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A group address and its members (mailboxes of the same server)."""
    group = permissions.access_group(request.user, pk)
    candidates = (
        permissions.member_candidates(request.user, group)
        .select_related("domain")
        .order_by("domain__name", "local_part")
    )
    if request.method == "POST":
        if request.POST.get("action") == "remove":
            try:
                services.remove_group(group, actor=actor(request))
            except RefusedError as exc:
                messages.error(request, exc.message)
                return redirect("console:group", pk=group.pk)
            messages.success(request, gettext("Group address %(group)s was removed.") % {"group": group})
            return redirect("console:domain", pk=group.domain_id)
        chosen = candidates.filter(pk__in=request.POST.getlist("members"))
        members = permissions.keep_invisible_members_on_edit(request.user, group, chosen)
        try:
            services.set_group_members(group, members, actor=actor(request))
        except RefusedError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(
                request, gettext("Members of %(group)s saved (%(count)d).") % {"group": group, "count": len(members)}
            )
        return redirect("console:group", pk=group.pk)
    member_ids = set(permissions.visible_members(request.user, group).values_list("pk", flat=True))
    return render_console(
        request,
        "console/group_detail.html",
        {
            "group": group,
            "candidates": candidates,
            "member_ids": member_ids,
        },
        selected=f"domain-{group.domain_id}",
    )
