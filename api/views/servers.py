from __future__ import annotations

from django.db import transaction
from django.utils.translation import gettext
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from api.filters import Param
from api.permissions import AdministratorCreatesAndDeletes
from api.serializers import (
    DeliverySettingsSerializer,
    SessionSerializer,
    VirtualServerCreateSerializer,
    VirtualServerSerializer,
    VirtualServerUpdateSerializer,
)
from servers import services
from servers.delivery import services as delivery_services
from servers.models import ObservedState, ServiceState
from servers.services import RefusedError, permissions
from servers.services.api_support import set_server_operators

from .base import ServiceBackedViewSet

# What `create_virtual_server` takes (the IIS wizard's steps); every other setting is applied after it.
WIZARD_FIELDS = ("name", "ip_address", "port", "home_dir", "node", "default_domain", "start")


class VirtualServerViewSet(ServiceBackedViewSet):
    """Virtual SMTP servers: an administrator sees all, an operator the ones assigned to them."""

    serializer_class = VirtualServerSerializer
    create_serializer_class = VirtualServerCreateSerializer
    update_serializer_class = VirtualServerUpdateSerializer
    permission_classes = [IsAuthenticated, AdministratorCreatesAndDeletes]
    filter_params = {
        "node": Param("node_id", description="Only servers of this node."),
        "state": Param("state", kind=list(ObservedState.values), description="Observed state."),
        "desired_state": Param("desired_state", kind=list(ServiceState.values)),
    }
    ordering_fields = ["id", "name", "port", "state", "desired_state", "created_at"]

    def get_queryset(self):
        return permissions.servers_visible_to(self.request.user).select_related("node")

    @extend_schema(request=VirtualServerCreateSerializer, responses={201: VirtualServerSerializer})
    def create(self, request):
        data = self.validated()
        operators = data.pop("operators", None)
        wizard = {key: data.pop(key) for key in WIZARD_FIELDS if key in data}
        with transaction.atomic():
            try:
                server = services.create_virtual_server(actor=self.actor, **wizard)
            except (OSError, RuntimeError) as exc:
                # The home directory could not be made (permissions, a bad path): nothing was saved.
                raise RefusedError(
                    gettext("The home directory cannot be created: %(reason)s") % {"reason": exc}, field="home_dir"
                ) from None
            if data:  # the other settings, as the property sheet would set them right after the wizard
                server = services.update_virtual_server(server, actor=self.actor, **data)
            if operators is not None:
                set_server_operators(server, operators, actor=self.actor)
        return self.respond(server, status=status.HTTP_201_CREATED)

    @extend_schema(request=VirtualServerUpdateSerializer, responses=VirtualServerSerializer)
    def update(self, request, pk=None, partial=False):
        server = self.get_object()
        data = self.validated(partial=True)
        operators = data.pop("operators", None)
        if operators is not None and not permissions.can_change_operators(request.user, server):
            raise ValidationError({"operators": ["Only an administrator can change the operators of a server."]})
        with transaction.atomic():
            if data:
                try:
                    server = services.update_virtual_server(server, actor=self.actor, **data)
                except RuntimeError as exc:  # Path.expanduser on an unknown "~user"
                    raise RefusedError(str(exc), field="home_dir") from None
            if operators is not None:
                set_server_operators(server, operators, actor=self.actor)
        return self.respond(server)

    @extend_schema(request=VirtualServerUpdateSerializer, responses=VirtualServerSerializer)
    def partial_update(self, request, pk=None):
        return self.update(request, pk, partial=True)

    def destroy(self, request, pk=None):
        """Delete the server's configuration; its worker stops and its home directory stays on disk."""
        services.delete_virtual_server(self.get_object(), actor=self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _set_state(self, desired: str) -> Response:
        server = services.set_server_state(self.get_object(), desired, actor=self.actor)
        return self.respond(server)

    @extend_schema(request=None, responses=VirtualServerSerializer, summary="Start the server (idempotent)")
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        return self._set_state(ServiceState.RUNNING)

    @extend_schema(
        request=None,
        responses=VirtualServerSerializer,
        summary="Pause the server: new connections get 421 (idempotent)",
    )
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        return self._set_state(ServiceState.PAUSED)

    @extend_schema(request=None, responses=VirtualServerSerializer, summary="Stop the server (idempotent)")
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        return self._set_state(ServiceState.STOPPED)

    @extend_schema(
        responses=SessionSerializer(many=True),
        filters=False,
        summary="Current sessions: the connections open on the server's worker now",
    )
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def sessions(self, request, pk=None):
        sessions = services.list_sessions(self.get_object())
        return Response(SessionSerializer(sessions, many=True).data)

    @extend_schema(
        request=None, responses={204: None}, summary="Close one session (the client gets 421) within a second or two"
    )
    @action(
        detail=True,
        methods=["delete"],
        url_path=r"sessions/(?P<session_id>[0-9a-f]{1,32})",
        pagination_class=None,
        filter_backends=[],
    )
    def terminate_session(self, request, pk=None, session_id=None):
        server = self.get_object()
        try:
            services.terminate_session(server, session_id, actor=self.actor)
        except RefusedError as exc:  # the session in the path does not exist (any more)
            raise NotFound(exc.message) from None
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(methods=["GET"], responses=DeliverySettingsSerializer, summary="The server's Delivery tab")
    @extend_schema(
        methods=["PATCH"],
        request=DeliverySettingsSerializer,
        responses=DeliverySettingsSerializer,
        summary="Change the server's Delivery tab",
    )
    @action(detail=True, methods=["get", "patch"], pagination_class=None, filter_backends=[])
    def delivery(self, request, pk=None):
        server = self.get_object()
        if request.method == "PATCH":
            data = self.validated(DeliverySettingsSerializer, partial=True)
            config = delivery_services.update_delivery_settings(server, actor=self.actor, **data)
        else:
            config = delivery_services.delivery_settings(server)
        return Response(DeliverySettingsSerializer(config).data)
