"""The console's frame: the tree on the left, the selected item on the right."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from servers.models import DomainType
from servers.services import local_node, permissions

PAGE_SIZE = 50


def console_tree(user) -> dict:
    """What the left-hand tree shows this user."""
    servers = list(permissions.servers_visible_to(user).select_related("node").order_by("name"))
    pop3_domains = list(
        permissions.domains_visible_to(user)
        .filter(type=DomainType.LOCAL)
        .select_related("server")
        .order_by("name")[:200]
    )
    may = {
        "create_server": permissions.can_create_server(user),
        "manage_nodes": permissions.can_manage_nodes(user),
        "read_every_change": permissions.is_administrator(user),
    }
    node = local_node()
    imap_service = permissions.imap_services_visible_to(user).filter(node=node).first()
    return {"servers": servers, "pop3_domains": pop3_domains, "node": node, "may": may, "imap_service": imap_service}


def render_console(
    request: HttpRequest, template: str, context: dict | None = None, *, selected: str = "", status: int = 200
) -> HttpResponse:
    """Render a page inside the console frame, with `selected` naming the highlighted tree item."""
    context = dict(context or {})
    context.update(tree=console_tree(request.user), selected=selected)
    return render(request, template, context, status=status)


def paginate(request: HttpRequest, queryset, per_page: int = PAGE_SIZE):
    return Paginator(queryset, per_page).get_page(request.GET.get("page"))
