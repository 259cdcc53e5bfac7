"""Who may see what: every lookup goes through the role-scoped managers; out of scope is a 404."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404

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
