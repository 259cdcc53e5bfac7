"""The three roles, in the few places the API asks about them.

What a user may *see* is decided by the managers (`for_user`); objects outside that scope are
404. What they may *change* among the objects they see is decided here (403).
"""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from servers.models import Domain, VirtualServer


def operators_supported() -> bool:
    """Whether the domain model has `VirtualServer.operators` yet.

    The managers' `for_user` scoping filters on it; without it, every scoped query for a
    non-administrator fails, so until it lands the API serves administrators only (`HasRole`).
    """
    return any(field.name == "operators" for field in VirtualServer._meta.get_fields())


class HasRole(BasePermission):
    """Signed in, and in a role the domain model can scope: administrator, operator, domain administrator."""

    message = "Only administrators can use the API until server operators exist in the domain model."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return user.is_superuser or operators_supported()


def is_administrator(user) -> bool:
    return bool(user and user.is_authenticated and user.is_superuser)


def operates(user, server_id: int) -> bool:
    """The user manages this server: an administrator, or one of its operators."""
    return VirtualServer.objects.for_user(user).filter(pk=server_id).exists()


def operates_any_server(user) -> bool:
    return VirtualServer.objects.for_user(user).exists()


class IsAdministrator(BasePermission):
    message = "Only an administrator can do this."

    def has_permission(self, request, view) -> bool:
        return is_administrator(request.user)


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
