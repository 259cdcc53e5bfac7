"""Who may see what: every lookup goes through the role-scoped managers; out of scope is a 404."""

from __future__ import annotations

from functools import wraps

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, resolve_url
from django.utils.http import urlencode
from django_htmx.http import HttpResponseClientRedirect

from servers.models import Domain, GroupAddress, Mailbox, VirtualServer


def actor(request) -> str:
    return request.user.get_username()


def server_for(user, pk: int) -> VirtualServer:
    return get_object_or_404(VirtualServer.objects.for_user(user).select_related("node"), pk=pk)


def domain_for(user, pk: int) -> Domain:
    return get_object_or_404(Domain.objects.for_user(user).select_related("server__node", "alias_of"), pk=pk)


def mailbox_for(user, pk: int) -> Mailbox:
    return get_object_or_404(Mailbox.objects.for_user(user).select_related("domain__server"), pk=pk)


def group_for(user, pk: int) -> GroupAddress:
    return get_object_or_404(GroupAddress.objects.for_user(user).select_related("domain__server"), pk=pk)


def administrator_required(view):
    """Only an administrator (a superuser) may use this view."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_superuser:
            raise PermissionDenied("Only an administrator can do this.")
        return view(request, *args, **kwargs)

    return wrapper


def login_required_partial(view):
    """Like login_required, but an htmx request after the session ended reloads the sign-in page."""
    protected = login_required(view)

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated and getattr(request, "htmx", False):
            current = request.htmx.current_url_abs_path or resolve_url("console:dashboard")
            return HttpResponseClientRedirect(f"{resolve_url(settings.LOGIN_URL)}?{urlencode({'next': current})}")
        return protected(request, *args, **kwargs)

    return wrapper
