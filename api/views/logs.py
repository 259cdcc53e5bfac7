from __future__ import annotations

from api.filters import Param
from api.serializers import AuditEntrySerializer, LogonSerializer
from servers.services import permissions

from .base import ServiceBackedViewSet


class LogonViewSet(ServiceBackedViewSet):
    """Sign-ins to the mailboxes a user manages (Exchange's Logons view); read-only."""

    serializer_class = LogonSerializer
    filter_params = {
        "mailbox": Param("mailbox_id", description="Only sign-ins to this mailbox."),
        "domain": Param("mailbox__domain_id", description="Only sign-ins to mailboxes of this domain."),
    }
    ordering_fields = ["id", "logon_at", "last_access_at", "client_address"]

    def get_queryset(self):
        return permissions.logons_visible_to(self.request.user)


class AuditEntryViewSet(ServiceBackedViewSet):
    """The audit log, read-only: an administrator sees every entry, anyone else the changes they made."""

    serializer_class = AuditEntrySerializer
    filter_params = {
        "object_type": Param("object_type", kind=str, description="e.g. virtualserver, domain, mailbox."),
        "object_id": Param("object_id", kind=str),
        "action": Param("action", kind=str, description="e.g. start_virtual_server."),
        "actor": Param("actor", kind=str),
    }
    ordering_fields = ["id", "at"]

    def get_queryset(self):
        return permissions.audit_entries_visible_to(self.request.user)
