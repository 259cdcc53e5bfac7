"""The API's views, one module per group of resources."""

from .access import AccessRuleViewSet, RelayRuleViewSet
from .domains import DomainViewSet
from .imap import ImapServiceViewSet
from .logs import AuditEntryViewSet, LogonViewSet
from .mailboxes import GroupAddressViewSet, MailboxViewSet
from .nodes import NodeViewSet
from .queue import QueueViewSet
from .servers import VirtualServerViewSet
from .stats import StatsView

__all__ = [
    "AccessRuleViewSet",
    "AuditEntryViewSet",
    "DomainViewSet",
    "GroupAddressViewSet",
    "ImapServiceViewSet",
    "LogonViewSet",
    "MailboxViewSet",
    "NodeViewSet",
    "QueueViewSet",
    "RelayRuleViewSet",
    "StatsView",
    "VirtualServerViewSet",
]
