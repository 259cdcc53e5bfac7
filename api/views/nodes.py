from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action

from api.serializers import NodeSerializer
from servers import services
from servers.models import ServiceState
from servers.services import permissions

from .base import ServiceBackedViewSet


class NodeViewSet(ServiceBackedViewSet):
    """Hosts running the workers; only an administrator sees them.

    Nodes register themselves when their worker starts, so there is no create or delete here.
    """

    serializer_class = NodeSerializer
    ordering_fields = ["id", "name", "smtp_service_state", "last_seen_at"]

    def get_queryset(self):
        return permissions.nodes_visible_to(self.request.user)

    def _set_state(self, desired: str):
        node = services.set_node_service_state(self.get_object(), desired, actor=self.actor)
        return self.respond(node)

    @extend_schema(
        request=None,
        responses=NodeSerializer,
        summary="Start the SMTP service of the node (its servers return to their own states)",
    )
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        return self._set_state(ServiceState.RUNNING)

    @extend_schema(request=None, responses=NodeSerializer, summary="Pause every SMTP server of the node")
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        return self._set_state(ServiceState.PAUSED)

    @extend_schema(request=None, responses=NodeSerializer, summary="Stop every SMTP server of the node")
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        return self._set_state(ServiceState.STOPPED)
