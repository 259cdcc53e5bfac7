from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from api.filters import Param
from api.permissions import OperatorAddsRules
from api.serializers import AccessRuleSerializer, RelayRuleSerializer, RuleCreateSerializer
from servers import services
from servers.models import AccessRule, AccessRuleKind, RelayRule
from servers.services import permissions

from .base import ServiceBackedViewSet


class _RuleViewSet(ServiceBackedViewSet):
    """Entries of a server's Access-tab list; change one by deleting it and adding another."""

    model: type = AccessRule
    create_serializer_class = RuleCreateSerializer
    permission_classes = [IsAuthenticated, OperatorAddsRules]
    filter_params = {
        "server": Param("server_id", description="Only rules of this virtual server."),
        "kind": Param("kind", kind=list(AccessRuleKind.values)),
    }
    ordering_fields = ["id", "value", "created_at"]
    add = staticmethod(services.add_access_rule)
    remove = staticmethod(services.remove_access_rule)

    def get_queryset(self):
        return permissions.client_rules_visible_to(self.request.user, self.model)

    def create(self, request):
        data = self.validated()
        rule = self.add(data["server"], data["kind"], data["value"], actor=self.actor)
        return self.respond(rule, status=status.HTTP_201_CREATED)

    def destroy(self, request, pk=None):
        self.remove(self.get_object(), actor=self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=["access-rules"])
class AccessRuleViewSet(_RuleViewSet):
    """Connection control: who may connect (its meaning follows the server's `connection_policy`)."""

    serializer_class = AccessRuleSerializer

    @extend_schema(request=RuleCreateSerializer, responses={201: AccessRuleSerializer})
    def create(self, request):
        return super().create(request)


@extend_schema(tags=["relay-rules"])
class RelayRuleViewSet(_RuleViewSet):
    """Clients that may relay without signing in (the trusted LAN)."""

    model = RelayRule
    serializer_class = RelayRuleSerializer
    add = staticmethod(services.add_relay_rule)
    remove = staticmethod(services.remove_relay_rule)

    @extend_schema(request=RuleCreateSerializer, responses={201: RelayRuleSerializer})
    def create(self, request):
        return super().create(request)
