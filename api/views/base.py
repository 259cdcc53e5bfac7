"""What every resource view shares: read with one serializer, validate writes with another, call a service."""

from __future__ import annotations

from rest_framework import mixins, viewsets
from rest_framework.filters import OrderingFilter
from rest_framework.response import Response
from rest_framework.serializers import Serializer

from api.filters import ParamFilter


class ServiceBackedViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """List and retrieve from the user's scope; subclasses write through `servers.services` only."""

    lookup_value_regex = r"[0-9]+"
    filter_backends = [ParamFilter, OrderingFilter]
    filter_params: dict = {}
    create_serializer_class: type[Serializer] | None = None
    update_serializer_class: type[Serializer] | None = None

    def get_serializer_class(self):
        if self.action == "create" and self.create_serializer_class:
            return self.create_serializer_class
        if self.action in ("update", "partial_update") and self.update_serializer_class:
            return self.update_serializer_class
        return self.serializer_class

    @property
    def actor(self) -> str:
        return self.request.user.get_username()

    def validated(self, serializer_class: type[Serializer] | None = None, *, partial: bool = False) -> dict:
        """The request body, checked by `serializer_class` (400 with field errors otherwise)."""
        serializer_class = serializer_class or self.get_serializer_class()
        serializer = serializer_class(data=self.request.data, partial=partial, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    def respond(self, obj, status: int = 200) -> Response:
        """The object as it now is in the database, in the resource's read form."""
        fresh = self.get_queryset().model._default_manager.get(pk=obj.pk)
        return Response(self.serializer_class(fresh, context=self.get_serializer_context()).data, status=status)
