from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from api.serializers import StatsSerializer
from servers.counts import object_counts
from servers.services import mailbox_usage, permissions


class StatsView(APIView):
    """Counts for dashboards, within what the requesting user may see."""

    @extend_schema(responses=StatsSerializer)
    def get(self, request):
        data = object_counts(request.user)
        messages = stored = 0
        for mailbox in permissions.mailboxes_visible_to(request.user).select_related("domain__server"):
            usage = mailbox_usage(mailbox)
            messages += usage.message_count
            stored += usage.size_bytes
        data.update(messages_stored=messages, bytes_stored=stored)
        return Response(StatsSerializer(data).data)
