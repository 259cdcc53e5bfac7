from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from api.filters import Param
from api.permissions import OperatorChangesDomains
from api.serializers import (
    DkimGenerateSerializer,
    DkimRecordSerializer,
    DnsReadinessSerializer,
    DomainCreateSerializer,
    DomainSerializer,
    DomainUpdateSerializer,
)
from servers import services
from servers.models import DomainType
from servers.services import dkim, dns_readiness, permissions
from servers.services.api_support import set_domain_administrators

from .base import ServiceBackedViewSet


class DomainViewSet(ServiceBackedViewSet):
    """Local, alias and remote domains of the servers a user operates, or that a user administers."""

    serializer_class = DomainSerializer
    create_serializer_class = DomainCreateSerializer
    update_serializer_class = DomainUpdateSerializer
    permission_classes = [IsAuthenticated, OperatorChangesDomains]
    filter_params = {
        "server": Param("server_id", description="Only domains of this virtual server."),
        "type": Param("type", kind=list(DomainType.values)),
    }
    ordering_fields = ["id", "name", "type", "created_at"]

    def get_queryset(self):
        return (
            permissions.domains_visible_to(self.request.user)
            .select_related("server", "alias_of")
            .prefetch_related("administrators")
        )

    @extend_schema(request=DomainCreateSerializer, responses={201: DomainSerializer})
    def create(self, request):
        data = self.validated()
        administrators = data.pop("administrators", None)
        ceiling = data.pop("max_mailbox_quota_mb", None)
        with transaction.atomic():
            domain = services.add_domain(data.pop("server"), data.pop("name"), actor=self.actor, **data)
            if ceiling:
                domain = services.set_mailbox_quota_ceiling(domain, ceiling, actor=self.actor, acting_user=request.user)
            if administrators is not None:
                set_domain_administrators(domain, administrators, actor=self.actor)
        return self.respond(domain, status=status.HTTP_201_CREATED)

    @extend_schema(request=DomainUpdateSerializer, responses=DomainSerializer)
    def update(self, request, pk=None, partial=False):
        """Change the type (with alias target and relaying), quota ceiling, sender lists, administrators or
        language; names are fixed."""
        domain = self.get_object()
        data = self.validated(partial=True)
        administrators = data.pop("administrators", None)
        language = data.pop("language", None)
        with transaction.atomic():
            if language is not None:
                domain = services.set_domain_language(domain, language, actor=self.actor)
            if "max_mailbox_quota_mb" in data:
                domain = services.set_mailbox_quota_ceiling(
                    domain, data.pop("max_mailbox_quota_mb"), actor=self.actor, acting_user=request.user
                )
            if "sender_allow" in data or "sender_deny" in data:
                domain = services.set_domain_sender_lists(
                    domain,
                    sender_allow=data.pop("sender_allow", None),
                    sender_deny=data.pop("sender_deny", None),
                    actor=self.actor,
                    acting_user=request.user,
                )
            if data:
                new_type = data.get("type", domain.type)
                alias_of = data.get("alias_of", domain.alias_of if new_type == DomainType.ALIAS else None)
                relay_allowed = data.get("relay_allowed", domain.relay_allowed and new_type == DomainType.REMOTE)
                domain = services.change_domain_type(
                    domain, new_type, alias_of=alias_of, relay_allowed=relay_allowed, actor=self.actor
                )
            if administrators is not None:
                set_domain_administrators(domain, administrators, actor=self.actor)
        return self.respond(domain)

    @extend_schema(request=DomainUpdateSerializer, responses=DomainSerializer)
    def partial_update(self, request, pk=None):
        return self.update(request, pk, partial=True)

    def destroy(self, request, pk=None):
        services.remove_domain(self.get_object(), actor=self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=DomainSerializer, summary="Make this local domain the server's default")
    @action(detail=True, methods=["post"], url_path="set-default")
    def set_default(self, request, pk=None):
        return self.respond(services.set_default_domain(self.get_object(), actor=self.actor))

    @extend_schema(
        request=None,
        responses=DomainSerializer,
        summary="Lock the domain: its mailboxes still receive mail but cannot sign in",
    )
    @action(detail=True, methods=["post"])
    def lock(self, request, pk=None):
        return self.respond(services.set_domain_lock(self.get_object(), True, actor=self.actor))

    @extend_schema(request=None, responses=DomainSerializer, summary="Unlock the domain")
    @action(detail=True, methods=["post"])
    def unlock(self, request, pk=None):
        return self.respond(services.set_domain_lock(self.get_object(), False, actor=self.actor))

    @extend_schema(
        methods=["GET"],
        request=None,
        responses=DkimRecordSerializer,
        summary="The DKIM record to publish for the key that signs the domain's mail (404 without one)",
    )
    @extend_schema(
        methods=["POST"],
        request=DkimGenerateSerializer,
        responses={201: DkimRecordSerializer},
        summary="Generate the domain's DKIM key, or rotate it: a new selector signs at once, the old one is "
        "kept (retired) until removed; publish the record returned",
    )
    @action(detail=True, methods=["get", "post"], pagination_class=None, filter_backends=[])
    def dkim(self, request, pk=None):
        domain = self.get_object()
        if request.method == "POST":
            data = self.validated(DkimGenerateSerializer)
            services.rotate_dkim_key(domain, algorithm=data.get("algorithm"), actor=self.actor)
        record = dkim.dkim_record(domain)
        if record is None:
            raise NotFound("The domain has no DKIM key.")
        created = request.method == "POST"
        return Response(
            DkimRecordSerializer(record).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    @extend_schema(
        request=None,
        responses=DnsReadinessSerializer,
        summary="DNS readiness of a local domain: MX, PTR, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, autoconfig and "
        "SRV records, each ok, missing or wrong, with the record to publish (asked within a few seconds)",
    )
    @action(detail=True, methods=["get"], url_path="dns-check", pagination_class=None, filter_backends=[])
    def dns_check(self, request, pk=None):
        domain = self.get_object()
        return Response(DnsReadinessSerializer(dns_readiness.check_domain(domain)).data)
