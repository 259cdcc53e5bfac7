"""The three roles, in the few places the API asks about them.

What a user may *see* is decided by the managers (`for_user`); objects outside that scope are
404. What they may *change* among the objects they see is decided here (403).
"""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from servers.models import Domain, VirtualServer


def is_administrator(user) -> bool:
    return bool(user and user.is_authenticated and user.is_superuser)


def operates(user, server_id: int) -> bool:
    """The user manages this server: an administrator, or one of its operators."""
    return VirtualServer.objects.for_user(user).filter(pk=server_id).exists()


def operates_any_server(user) -> bool:
    return VirtualServer.objects.for_user(user).exists()


class AdministratorCreatesAndDeletes(BasePermission):
    """Servers: operators change and start/stop theirs; only an administrator creates or deletes."""

    message = "Only an administrator can create or delete a virtual server."

    def has_permission(self, request, view) -> bool:
        return view.action != "create" or is_administrator(request.user)

    def has_object_permission(self, request, view, obj) -> bool:
        return view.action != "destroy" or is_administrator(request.user)


class OperatorChangesDomains(BasePermission):
    """Domains: a domain administrator reads them; changing one takes an operator of its server."""

    message = "Only an operator of the domain's server can change the domain."

    def has_permission(self, request, view) -> bool:
        return view.action != "create" or operates_any_server(request.user)

    def has_object_permission(self, request, view, obj: Domain) -> bool:
        return view.action in ("list", "retrieve") or operates(request.user, obj.server_id)
