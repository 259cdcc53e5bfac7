from __future__ import annotations

from django.db import transaction
from django.db.models import Prefetch
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.filters import OrderingFilter, SearchFilter
from rest_framework.response import Response

from api.filters import Param, ParamFilter, query_flag
from api.serializers import (
    GroupAddressCreateSerializer,
    GroupAddressSerializer,
    GroupAddressUpdateSerializer,
    MailboxCreateSerializer,
    MailboxSerializer,
    MailboxUpdateSerializer,
    PasswordSerializer,
    ReleaseSendingResultSerializer,
    ReleaseSendingSerializer,
)
from servers import services
from servers.services import outbound_limits, permissions

from .base import ServiceBackedViewSet


class MailboxViewSet(ServiceBackedViewSet):
    """Mailboxes of the domains a user manages (as administrator, server operator or domain administrator)."""

    serializer_class = MailboxSerializer
    create_serializer_class = MailboxCreateSerializer
    update_serializer_class = MailboxUpdateSerializer
    filter_backends = [ParamFilter, SearchFilter, OrderingFilter]
    filter_params = {
        "domain": Param("domain_id", description="Only mailboxes of this domain."),
        "server": Param("domain__server_id", description="Only mailboxes of this virtual server."),
    }
    search_fields = ["local_part", "display_name", "domain__name"]
    ordering_fields = ["id", "local_part", "display_name", "last_logon_at", "created_at"]

    def get_queryset(self):
        return permissions.mailboxes_visible_to(self.request.user).select_related("domain__server")

    @extend_schema(request=MailboxCreateSerializer, responses={201: MailboxSerializer})
    def create(self, request):
        data = self.validated()
        catch_all = data.pop("is_catch_all", False)
        with transaction.atomic():
            mailbox = services.add_mailbox(
                data.pop("domain"),
                data.pop("local_part"),
                data.pop("password"),
                actor=self.actor,
                acting_user=request.user,
                **data,
            )
            if catch_all:
                mailbox = services.update_mailbox(mailbox, is_catch_all=True, actor=self.actor)
        return self.respond(mailbox, status=status.HTTP_201_CREATED)

    @extend_schema(request=MailboxUpdateSerializer, responses=MailboxSerializer)
    def update(self, request, pk=None, partial=False):
        mailbox = self.get_object()
        data = self.validated(partial=True)
        if data:
            mailbox = services.update_mailbox(mailbox, actor=self.actor, acting_user=request.user, **data)
        return self.respond(mailbox)

    @extend_schema(request=MailboxUpdateSerializer, responses=MailboxSerializer)
    def partial_update(self, request, pk=None):
        return self.update(request, pk, partial=True)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "remove_mail", OpenApiTypes.INT, enum=[0, 1], description="1 also deletes the stored mail from disk."
            )
        ]
    )
    def destroy(self, request, pk=None):
        """Delete the mailbox; its stored mail stays on disk unless `?remove_mail=1`."""
        remove_mail = query_flag(request, "remove_mail")
        services.delete_mailbox(self.get_object(), remove_mail=remove_mail, actor=self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=None, responses=MailboxSerializer, summary="Lock the mailbox: it still receives mail but cannot sign in"
    )
    @action(detail=True, methods=["post"])
    def lock(self, request, pk=None):
        return self.respond(services.set_mailbox_lock(self.get_object(), True, actor=self.actor))

    @extend_schema(request=None, responses=MailboxSerializer, summary="Unlock the mailbox")
    @action(detail=True, methods=["post"])
    def unlock(self, request, pk=None):
        return self.respond(services.set_mailbox_lock(self.get_object(), False, actor=self.actor))

    @extend_schema(request=PasswordSerializer, responses=MailboxSerializer, summary="Set a new password")
    @action(detail=True, methods=["post"])
    def password(self, request, pk=None):
        mailbox = self.get_object()
        data = self.validated(PasswordSerializer)
        return self.respond(services.change_password(mailbox, data["password"], actor=self.actor))

    @extend_schema(
        request=ReleaseSendingSerializer,
        responses=ReleaseSendingResultSerializer,
        summary="Release a mailbox blocked by an outbound limit: it may send again, its held mail goes "
        "(or is deleted with delete_held)",
    )
    @action(detail=True, methods=["post"], url_path="release-sending")
    def release_sending(self, request, pk=None):
        mailbox = self.get_object()
        if not permissions.can_release_sending(request.user, mailbox):
            raise permissions.NotAllowed("You may not release this mailbox.")
        data = self.validated(ReleaseSendingSerializer)
        count = outbound_limits.release_sending(mailbox, delete_held=data.get("delete_held", False), actor=self.actor)
        mailbox.refresh_from_db()
        return Response({"mailbox": MailboxSerializer(mailbox).data, "held_messages": count})


class GroupAddressViewSet(ServiceBackedViewSet):
    """Group addresses (one address delivering to several mailboxes) of the domains a user manages."""

    serializer_class = GroupAddressSerializer
    create_serializer_class = GroupAddressCreateSerializer
    update_serializer_class = GroupAddressUpdateSerializer
    filter_params = {
        "domain": Param("domain_id", description="Only groups of this domain."),
        "server": Param("domain__server_id", description="Only groups of this virtual server."),
    }
    ordering_fields = ["id", "local_part", "created_at"]

    def get_queryset(self):
        user = self.request.user
        # A group shows only the members the user may see.
        members = permissions.mailboxes_visible_to(user).select_related("domain")
        return (
            permissions.groups_visible_to(user)
            .select_related("domain")
            .prefetch_related(Prefetch("members", queryset=members))
        )

    def respond(self, obj, status: int = 200) -> Response:
        fresh = self.get_queryset().get(pk=obj.pk)
        return Response(self.serializer_class(fresh, context=self.get_serializer_context()).data, status=status)

    @extend_schema(request=GroupAddressCreateSerializer, responses={201: GroupAddressSerializer})
    def create(self, request):
        data = self.validated()
        group = services.add_group(data["domain"], data["local_part"], data.get("members", []), actor=self.actor)
        return self.respond(group, status=status.HTTP_201_CREATED)

    @extend_schema(request=GroupAddressUpdateSerializer, responses=GroupAddressSerializer)
    def update(self, request, pk=None, partial=False):
        """Replace the members the user sees (others stay); the address is fixed. PUT must name them."""
        group = self.get_object()
        data = self.validated(partial=partial)
        if "members" in data:
            members = permissions.keep_invisible_members_on_edit(request.user, group, data["members"])
            group = services.set_group_members(group, members, actor=self.actor)
        return self.respond(group)

    @extend_schema(request=GroupAddressUpdateSerializer, responses=GroupAddressSerializer)
    def partial_update(self, request, pk=None):
        return self.update(request, pk, partial=True)

    def destroy(self, request, pk=None):
        services.remove_group(self.get_object(), actor=self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)
