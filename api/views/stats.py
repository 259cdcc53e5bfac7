from __future__ import annotations

from django.db.models import Count
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from api.serializers import StatsSerializer
from servers.models import Domain, GroupAddress, Mailbox, VirtualServer
from servers.services import mailbox_usage


def _counts(queryset, field: str) -> dict[str, int]:
    return {row[field]: row["n"] for row in queryset.order_by().values(field).annotate(n=Count("pk"))}


class StatsView(APIView):
    """Counts for dashboards, within what the requesting user may see."""

    @extend_schema(responses=StatsSerializer)
    def get(self, request):
        user = request.user
        servers = VirtualServer.objects.for_user(user)
        domains = Domain.objects.for_user(user)
        mailboxes = Mailbox.objects.for_user(user).select_related("domain__server")
        messages = stored = 0
        for mailbox in mailboxes:
            usage = mailbox_usage(mailbox)
            messages += usage.message_count
            stored += usage.size_bytes
        data = {
            "servers": servers.count(),
            "servers_by_state": _counts(servers, "state"),
            "servers_by_desired_state": _counts(servers, "desired_state"),
            "domains": domains.count(),
            "domains_by_type": _counts(Domain.objects.filter(pk__in=domains.values("pk")), "type"),
            "mailboxes": mailboxes.count(),
            "locked_mailboxes": mailboxes.filter(is_locked=True).count(),
            "groups": GroupAddress.objects.for_user(user).count(),
            "messages_stored": messages,
            "bytes_stored": stored,
        }
        return Response(StatsSerializer(data).data)
