"""What the console's dashboard and the API's /stats/ count, within what a user may see: one definition."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count
from django.utils import timezone

from servers.models import Domain, Logon
from servers.services import permissions


def _by(queryset, field: str) -> dict[str, int]:
    return {row[field]: row["n"] for row in queryset.order_by().values(field).annotate(n=Count("pk"))}


def object_counts(user) -> dict:
    """Servers, domains, mailboxes, groups and the last day's sign-ins the user may see, counted by the database."""
    servers = permissions.servers_visible_to(user)
    domains = permissions.domains_visible_to(user)
    mailboxes = permissions.mailboxes_visible_to(user)
    servers_by_state = _by(servers, "state")
    return {
        "servers": servers.count(),
        "servers_running": servers_by_state.get("running", 0),
        "servers_by_state": servers_by_state,
        "servers_by_desired_state": _by(servers, "desired_state"),
        "domains": domains.count(),
        "domains_by_type": _by(Domain.objects.filter(pk__in=domains.values("pk")), "type"),
        "mailboxes": mailboxes.count(),
        "locked_mailboxes": mailboxes.filter(is_locked=True).count(),
        "groups": permissions.groups_visible_to(user).count(),
        "logons_24h": Logon.objects.filter(
            mailbox__in=mailboxes, logon_at__gte=timezone.now() - timedelta(hours=24)
        ).count(),
    }
