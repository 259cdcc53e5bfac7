"""The nodes' IMAP services: settings, state and current sessions (administrators, as for nodes)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from api.filters import Param
from api.serializers import ImapServiceSerializer, ImapServiceUpdateSerializer, ImapSessionSerializer
from servers import services
from servers.models import ServiceState
from servers.services import RefusedError, permissions

from .base import ServiceBackedViewSet


class ImapServiceViewSet(ServiceBackedViewSet):
    """One IMAP service per node; only an administrator sees it (it serves every server's mailboxes).

    Services are made by `bootstrap` or `manage.py imapsvc create`, so there is no create or delete here.
    """

    serializer_class = ImapServiceSerializer
    update_serializer_class = ImapServiceUpdateSerializer
    filter_params = {"node": Param("node_id", description="Only the service of this node.")}
    ordering_fields = ["id", "port", "state"]

    def get_queryset(self):
        return permissions.imap_services_visible_to(self.request.user).select_related("node").order_by("pk")

    @extend_schema(request=ImapServiceUpdateSerializer, responses=ImapServiceSerializer)
    def partial_update(self, request, pk=None):
        service = self.get_object()
        data = self.validated(partial=True)
        if data:
            service = services.update_imap_service(service, actor=self.actor, **data)
        return self.respond(service)

    def _set_state(self, desired: str) -> Response:
        return self.respond(services.set_imap_state(self.get_object(), desired, actor=self.actor))

    @extend_schema(request=None, responses=ImapServiceSerializer, summary="Start the IMAP service (idempotent)")
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        return self._set_state(ServiceState.RUNNING)

    @extend_schema(
        request=None,
        responses=ImapServiceSerializer,
        summary="Pause the IMAP service: new connections get BYE, open ones go on (idempotent)",
    )
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        return self._set_state(ServiceState.PAUSED)

    @extend_schema(request=None, responses=ImapServiceSerializer, summary="Stop the IMAP service (idempotent)")
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        return self._set_state(ServiceState.STOPPED)

    @extend_schema(
        responses=ImapSessionSerializer(many=True),
        filters=False,
        summary="Current sessions: the IMAP connections open now",
    )
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def sessions(self, request, pk=None):
        return Response(ImapSessionSerializer(services.list_sessions(self.get_object()), many=True).data)

    @extend_schema(
        request=None, responses={204: None}, summary="Close one session (the client gets BYE) within a second or two"
    )
    @action(
        detail=True,
        methods=["delete"],
        url_path=r"sessions/(?P<session_id>[0-9a-f]{1,32})",
        pagination_class=None,
        filter_backends=[],
    )
    def terminate_session(self, request, pk=None, session_id=None):
        service = self.get_object()
        try:
            services.terminate_session(service, session_id, actor=self.actor)
        except RefusedError as exc:  # the session in the path does not exist (any more)
            raise NotFound(exc.message) from None
        return Response(status=status.HTTP_204_NO_CONTENT)
