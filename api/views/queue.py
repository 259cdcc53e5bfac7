from __future__ import annotations

from dataclasses import asdict

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from api.filters import Param, ParamFilter, query_flag, single_query_value
from api.serializers import QueueEntrySerializer
from servers.delivery import services as queue_services
from servers.delivery.models import QueuedMessage
from servers.models import VirtualServer
from servers.services import permissions

from .base import ServiceBackedViewSet


class QueueViewSet(ServiceBackedViewSet):
    """Messages waiting for remote delivery on the servers a user operates: retry, freeze, delete."""

    serializer_class = QueueEntrySerializer
    permission_classes = [IsAuthenticated]
    filter_backends = [ParamFilter]
    filter_params = {"server": Param("server_id", description="Only the queue of this virtual server.")}

    def get_queryset(self):
        return permissions.queued_messages_visible_to(self.request.user)

    def _servers(self):
        servers = permissions.servers_visible_to(self.request.user).select_related("node")
        raw = single_query_value(self.request, "server")
        if raw is not None:
            servers = servers.filter(pk=self.filter_params["server"].parse("server", raw))
        return servers

    @staticmethod
    def _entries(server: VirtualServer) -> list[dict]:
        # reconcile_and_list_queue first matches the index with the Queue folder, so what it shows is on disk.
        return [{**asdict(entry), "server": server.pk} for entry in queue_services.reconcile_and_list_queue(server)]

    def _entry(self, message: QueuedMessage) -> Response:
        for entry in self._entries(message.server):
            if entry["id"] == message.pk:
                return Response(QueueEntrySerializer(entry).data)
        raise NotFound("The message has left the queue.")

    def list(self, request):
        entries = [entry for server in self._servers() for entry in self._entries(server)]
        page = self.paginate_queryset(entries)
        return self.get_paginated_response(QueueEntrySerializer(page, many=True).data)

    def retrieve(self, request, pk=None):
        return self._entry(self.get_object())

    @extend_schema(request=None, responses=QueueEntrySerializer, summary="Make the message due now")
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        return self._entry(queue_services.retry_now(self.get_object(), actor=self.actor))

    @extend_schema(request=None, responses=QueueEntrySerializer, summary="Hold the message until unfrozen")
    @action(detail=True, methods=["post"])
    def freeze(self, request, pk=None):
        return self._entry(queue_services.freeze(self.get_object(), actor=self.actor))

    @extend_schema(request=None, responses=QueueEntrySerializer, summary="Let a frozen message be attempted again")
    @action(detail=True, methods=["post"])
    def unfreeze(self, request, pk=None):
        return self._entry(queue_services.unfreeze(self.get_object(), actor=self.actor))

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "ndr", OpenApiTypes.INT, enum=[0, 1], description="1 tells the sender which recipients did not get it."
            )
        ]
    )
    def destroy(self, request, pk=None):
        """Remove the message from the queue, silently unless `?ndr=1`."""
        ndr = query_flag(request, "ndr")
        queue_services.delete_message(self.get_object(), ndr=ndr, actor=self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)
