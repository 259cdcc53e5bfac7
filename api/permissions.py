"""The API's permission classes: DRF's hooks onto `servers.services.permissions`, which decides.

What a user may *see* is each viewset's `get_queryset` (a `*_visible_to` function); objects outside
it are 404. What they may *change* among the objects they see is asked here (403).
"""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from servers.models import Domain, VirtualServer
from servers.services import permissions


class AdministratorCreatesAndDeletes(BasePermission):
    """Servers: operators change and start/stop theirs; only an administrator creates or deletes."""

    message = "Only an administrator can create or delete a virtual server."

    def has_permission(self, request, view) -> bool:
        return view.action != "create" or permissions.can_create_server(request.user)

    def has_object_permission(self, request, view, obj: VirtualServer) -> bool:
        return view.action != "destroy" or permissions.can_delete_server(request.user, obj)


class OperatorChangesDomains(BasePermission):
    """Domains: a domain administrator reads them and manages their DKIM keys; changing one (locking included)
    takes an operator of its server."""

    message = "Only an operator of the domain's server can change the domain."

    def has_permission(self, request, view) -> bool:
        return view.action != "create" or permissions.can_add_domain(request.user)

    def has_object_permission(self, request, view, obj: Domain) -> bool:
        if view.action in ("list", "retrieve"):
            return True
        if view.action in ("lock", "unlock"):
            return permissions.can_lock_domain(request.user, obj)
        if view.action == "dkim":
            return permissions.can_manage_dkim_keys(request.user, obj)
        if view.action == "dns_check":
            return permissions.can_check_dns_readiness(request.user, obj)
        return permissions.can_change_domain(request.user, obj)


class OperatorAddsRules(BasePermission):
    """Access and relay lists: an operator of the server adds to them."""

    message = "Only an operator of a server can change its access lists."

    def has_permission(self, request, view) -> bool:
        return view.action != "create" or permissions.operates_any_server(request.user)
