"""What each resource shows and which fields a request may set.

Read serializers describe the objects; the *Create/*Update serializers only validate input, which
the views hand to `servers.services`. Fields not listed there cannot be set through the API.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import models
from django.utils.translation import gettext
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.relations import MANY_RELATION_KWARGS

from api import fields as strict
from api import patterns
from servers.delivery.models import DeliverySettings
from servers.delivery.services import EDITABLE_DELIVERY_FIELDS, INTERVAL_FIELDS
from servers.models import (
    AccessRule,
    AccessRuleKind,
    AuditEntry,
    DkimAlgorithm,
    Domain,
    DomainType,
    GroupAddress,
    ImapService,
    Logon,
    Mailbox,
    Node,
    RelayRule,
    VirtualServer,
)
from servers.services import dns_readiness, mailbox_usage
from servers.services.virtual_servers import (
    EDITABLE_FIELDS,
    MAX_WORKER_PROCESSES,
    OPTIONAL_LIMIT_FIELDS,
    POSITIVE_FIELDS,
)

MAX_INT = 2**31 - 1
MAX_BIGINT = 2**63 - 1


class ListOnlyManyRelatedField(serializers.ManyRelatedField):
    """A list of references that is a JSON array, as the schema says (DRF would take an object's keys)."""

    def to_internal_value(self, data):
        if not isinstance(data, list):
            self.fail("not_a_list", input_type=type(data).__name__)
        return super().to_internal_value(data)


class ListOnlyManyMixin:
    @classmethod
    def many_init(cls, *args, **kwargs):
        list_kwargs = {"child_relation": cls(*args, **kwargs)}
        list_kwargs.update({key: value for key, value in kwargs.items() if key in MANY_RELATION_KWARGS})
        return ListOnlyManyRelatedField(**list_kwargs)


class UsernameField(ListOnlyManyMixin, serializers.SlugRelatedField):
    pass


class ScopedPrimaryKeyRelatedField(ListOnlyManyMixin, strict.PrimaryKeyRelatedField):
    """An id that must name an object the requesting user can see (`Model.objects.for_user`)."""

    def get_queryset(self):
        return self.queryset.model.objects.for_user(self.context["request"].user)


def checked_text(pattern: str, message: str, **kwargs) -> serializers.CharField:
    """Text checked against `pattern` exactly as the schema publishes it (untrimmed: the schema sees no trim)."""
    return strict.CharField(trim_whitespace=False, validators=[patterns.pattern_validator(pattern, message)], **kwargs)


def domain_name_field(**kwargs) -> serializers.CharField:
    return checked_text(
        patterns.DOMAIN_NAME,
        "Enter a domain name (letters, digits and hyphens between dots; Unicode is fine).",
        max_length=254,
        **kwargs,
    )


def local_part_field(**kwargs) -> serializers.CharField:
    return checked_text(patterns.LOCAL_PART, patterns.LOCAL_PART_HELP, max_length=64, **kwargs)


def password_field(**kwargs) -> serializers.CharField:
    return checked_text(
        patterns.PASSWORD,
        f"The password must have {patterns.PASSWORD_HELP}",
        max_length=200,
        write_only=True,
        help_text=patterns.PASSWORD_HELP,
        **kwargs,
    )


def usernames_field(**kwargs) -> serializers.ManyRelatedField:
    """A list of user names, each naming a user; the role services refuse one who may not hold a role."""
    user_model = get_user_model()
    return UsernameField(many=True, slug_field=user_model.USERNAME_FIELD, queryset=user_model.objects.all(), **kwargs)


# -- nodes ----------------------------------------------------------------------------------------


class NodeSerializer(serializers.ModelSerializer):
    server_count = serializers.SerializerMethodField()

    class Meta:
        model = Node
        fields = ["id", "name", "smtp_service_state", "registered_at", "last_seen_at", "server_count"]
        read_only_fields = fields

    def get_server_count(self, node: Node) -> int:
        return node.servers.count()


# -- virtual servers ------------------------------------------------------------------------------

# Supervisor bookkeeping that means nothing to a client.
SERVER_INTERNAL_FIELDS = {"consecutive_failures", "next_start_at", "operators"}


class VirtualServerSerializer(serializers.ModelSerializer):
    default_domain = serializers.SerializerMethodField()
    operators = serializers.SerializerMethodField()
    plaintext_passwords_allowed = serializers.BooleanField(
        read_only=True,
        help_text="AUTH PLAIN/LOGIN is taken before STARTTLS: passwords may be sent unencrypted. "
        "Set auth_requires_tls (or require_tls) to stop it.",
    )

    class Meta:
        model = VirtualServer
        fields = [
            field.name for field in VirtualServer._meta.concrete_fields if field.name not in SERVER_INTERNAL_FIELDS
        ] + ["default_domain", "operators", "plaintext_passwords_allowed"]
        read_only_fields = fields

    def get_operators(self, server: VirtualServer) -> list[str]:
        return sorted(user.get_username() for user in server.operators.all())

    def get_default_domain(self, server: VirtualServer) -> str | None:
        domain = server.default_domain
        return domain.name if domain else None


# The bounds the services enforce, published in the schema so that it and the validators agree.
SETTING_BOUNDS: dict[str, dict] = {
    **{name: {"min_value": 1} for name in (*OPTIONAL_LIMIT_FIELDS, *POSITIVE_FIELDS, *INTERVAL_FIELDS)},
    "tls_port": {"min_value": 0, "max_value": 65535, "help_text": "0 or null: no separate TLS port."},
    "worker_processes": {"min_value": 1, "max_value": MAX_WORKER_PROCESSES},
    "smart_host_port": {"min_value": 1, "max_value": 65535},
    "outbound_port": {"min_value": 1, "max_value": 65535},
    "max_outbound_connections": {"min_value": 1},
    "dnsbl_zones": {
        "max_length": 2000,
        "allow_blank": True,
        "help_text": "DNSBL zone names, one a line or comma-separated; empty: no lookups.",
    },
    "greylisting_delay_s": {"min_value": 1, "max_value": 86400},
    "spam_tag_score": {
        "min_value": -1000,
        "max_value": 1000,
        "help_text": "From this rspamd score on: X-Spam-Flag and the subject prefix; null: never.",
    },
    "spam_junk_score": {
        "min_value": -1000,
        "max_value": 1000,
        "help_text": "From this score on (at least spam_tag_score): filed in the Junk folder; null: never.",
    },
    "spam_refuse_score": {
        "min_value": -1000,
        "max_value": 1000,
        "help_text": "From this score on (at least spam_junk_score): refused, 554 5.7.1; null: never.",
    },
    "max_attachment_size_kb": {"min_value": 1, "help_text": "Largest attachment (decoded); null: no limit."},
    **{
        name: {
            "max_length": 100000,
            "allow_blank": True,
            "trim_whitespace": False,
            "validators": [patterns.pattern_validator(patterns.SENDER_LIST, patterns.SENDER_LIST_HELP)],
            "help_text": "Sender addresses or domains (a domain matches its subdomains), one a line.",
        }
        for name in ("sender_allow", "sender_deny")
    },
}


def _setting_kwargs(model: type[models.Model], names) -> dict[str, dict]:
    """Every setting optional, and integers bounded to what the database column holds."""
    kwargs = {}
    for name in names:
        field = model._meta.get_field(name)
        extra: dict = {"required": False}
        if isinstance(field, models.PositiveBigIntegerField):
            extra.update(min_value=0, max_value=MAX_BIGINT)
        elif isinstance(field, models.PositiveIntegerField | models.PositiveSmallIntegerField):
            extra.update(min_value=0, max_value=MAX_INT)
        extra.update(SETTING_BOUNDS.get(name, {}))
        kwargs[name] = extra
    return kwargs


class VirtualServerSettingsSerializer(serializers.ModelSerializer):
    """Every setting the services let change (their `EDITABLE_FIELDS`), typed from the model."""

    serializer_field_mapping = strict.STRICT_FIELD_MAPPING

    name = checked_text(patterns.NAME, "Enter a name.", max_length=100, required=False)
    ip_address = checked_text(
        patterns.IP_ADDRESS,
        "Enter an IP address, or nothing.",
        max_length=45,
        required=False,
        allow_blank=True,
        help_text='An IP address; empty or "0.0.0.0" for all unassigned.',
    )
    port = strict.IntegerField(min_value=1, max_value=65535, required=False)
    max_message_size_kb = strict.IntegerField(min_value=1, max_value=MAX_INT, required=False)
    forbidden_extensions = checked_text(
        patterns.FILE_EXTENSIONS,
        "Enter file name extensions (like exe), separated by commas or new lines.",
        max_length=4000,
        required=False,
        allow_blank=True,
    )
    forbidden_mime_types = checked_text(
        patterns.MIME_TYPES,
        "Enter MIME types (like application/x-msdownload, or video/*), separated by commas or new lines.",
        max_length=4000,
        required=False,
        allow_blank=True,
    )
    virus_scanner = checked_text(
        patterns.VIRUS_SCANNER,
        "Enter tcp://host:port or unix:/path/to/clamd.socket, or nothing.",
        max_length=255,
        required=False,
        allow_blank=True,
        help_text="clamd (INSTREAM): tcp://host:port or unix:/path; empty: no virus scanning.",
    )
    rspamd_url = checked_text(
        patterns.RSPAMD_URL,
        "Enter rspamd's http:// URL (like http://127.0.0.1:11333), or nothing.",
        max_length=255,
        required=False,
        allow_blank=True,
        help_text="rspamd's normal worker; empty: the RSPAMD_URL setting (both empty: no spam scoring).",
    )
    spam_subject_prefix = checked_text(
        patterns.SUBJECT_PREFIX, "At most 40 printable ASCII characters.", required=False, allow_blank=True
    )

    class Meta:
        model = VirtualServer
        fields = list(EDITABLE_FIELDS)
        extra_kwargs = _setting_kwargs(VirtualServer, EDITABLE_FIELDS)
        # The services check uniqueness themselves, with messages that name the node.
        validators: list = []


class VirtualServerCreateSerializer(VirtualServerSettingsSerializer):
    node = strict.PrimaryKeyRelatedField(
        queryset=Node.objects.all(), required=False, help_text="Defaults to the node running the console."
    )
    name = checked_text(patterns.NAME, "Enter a name.", max_length=100)
    port = strict.IntegerField(min_value=1, max_value=65535, default=25)
    home_dir = strict.CharField(
        max_length=500,
        required=False,
        allow_blank=True,
        help_text="Fixed once the server exists; defaults to var/mailroot/<name>.",
    )
    default_domain = domain_name_field()
    start = strict.BooleanField(default=True, help_text="Start the server once it is created.")
    operators = usernames_field(required=False)

    class Meta(VirtualServerSettingsSerializer.Meta):
        fields = [
            *VirtualServerSettingsSerializer.Meta.fields,
            "node",
            "home_dir",
            "default_domain",
            "start",
            "operators",
        ]


class VirtualServerUpdateSerializer(VirtualServerSettingsSerializer):
    home_dir = strict.CharField(
        max_length=500, required=False, help_text="Accepted only if unchanged: the home directory is fixed."
    )
    operators = usernames_field(required=False, help_text="Administrators only.")

    class Meta(VirtualServerSettingsSerializer.Meta):
        fields = [*VirtualServerSettingsSerializer.Meta.fields, "home_dir", "operators"]


# -- domains --------------------------------------------------------------------------------------


class DomainSerializer(serializers.ModelSerializer):
    server_name = strict.CharField(source="server.name", read_only=True)
    alias_of_name = strict.CharField(source="alias_of.name", read_only=True, default=None, allow_null=True)
    administrators = serializers.SlugRelatedField(many=True, read_only=True, slug_field="username")

    class Meta:
        model = Domain
        fields = [
            "id",
            "server",
            "server_name",
            "name",
            "type",
            "alias_of",
            "alias_of_name",
            "relay_allowed",
            "is_default",
            "is_locked",
            "max_mailbox_quota_mb",
            "sender_allow",
            "sender_deny",
            "administrators",
            "language",
            "created_at",
        ]
        read_only_fields = fields


def quota_ceiling_field() -> serializers.IntegerField:
    return strict.IntegerField(
        min_value=0,
        max_value=MAX_INT,
        required=False,
        allow_null=True,
        help_text="The largest mailbox quota (MB) a domain administrator may give; null or 0: no ceiling.",
    )


class DomainCreateSerializer(serializers.Serializer):
    server = ScopedPrimaryKeyRelatedField(queryset=VirtualServer.objects.all())
    name = domain_name_field()
    type = serializers.ChoiceField(choices=DomainType.choices, default=DomainType.LOCAL)
    alias_of = ScopedPrimaryKeyRelatedField(
        queryset=Domain.objects.all(),
        required=False,
        allow_null=True,
        help_text="For an alias domain: the local domain it stands for.",
    )
    relay_allowed = strict.BooleanField(default=False, help_text="Remote domains only.")
    max_mailbox_quota_mb = quota_ceiling_field()
    administrators = usernames_field(required=False)


def sender_list_field() -> serializers.CharField:
    return checked_text(
        patterns.SENDER_LIST,
        patterns.SENDER_LIST_HELP,
        required=False,
        allow_blank=True,
        max_length=100000,
        help_text="Sender addresses or domains (a domain matches its subdomains), one a line; "
        "allow: the anti-spam checks are skipped for this domain's recipients, deny: refused at RCPT.",
    )


class DomainUpdateSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=DomainType.choices, required=False)
    alias_of = ScopedPrimaryKeyRelatedField(queryset=Domain.objects.all(), required=False, allow_null=True)
    relay_allowed = strict.BooleanField(required=False)
    max_mailbox_quota_mb = quota_ceiling_field()
    sender_allow = sender_list_field()
    sender_deny = sender_list_field()
    administrators = usernames_field(required=False)
    language = serializers.ChoiceField(
        choices=[("", "the installation's"), *settings.LANGUAGES],
        required=False,
        allow_blank=True,
        help_text="The language of the reports (DSNs) to the domain's people; empty: the installation's.",
    )


class DkimRecordSerializer(serializers.Serializer):
    """The DKIM record to publish for a domain's active key; the private key is never shown."""

    selector = strict.CharField(read_only=True)
    algorithm = serializers.ChoiceField(choices=DkimAlgorithm.choices, read_only=True)
    txt_name = strict.CharField(
        read_only=True, help_text="Where to publish the TXT record: <selector>._domainkey.<domain>."
    )
    txt_value = strict.CharField(read_only=True, help_text="The TXT record's value, as one string.")
    txt_strings = serializers.ListField(
        child=strict.CharField(),
        read_only=True,
        help_text="The same value cut into strings of at most 255 octets, as a zone file needs them.",
    )
    created_at = serializers.DateTimeField(read_only=True)
    retired_selectors = serializers.ListField(
        child=strict.CharField(),
        read_only=True,
        help_text="Selectors of retired keys whose records may stay published until they are removed.",
    )


class ZoneRecordSerializer(serializers.Serializer):
    """One record to publish."""

    name = strict.CharField(read_only=True, help_text="The owner name, fully qualified (with the final dot).")
    ttl = serializers.IntegerField(read_only=True)
    type = strict.CharField(read_only=True, help_text="MX, TXT, PTR, A, AAAA, CNAME or SRV.")
    value = strict.CharField(read_only=True, help_text="The record's data as a DNS provider's form takes it.")
    zone_line = strict.CharField(read_only=True, help_text="The whole record as a zone-file line.")


class DnsCheckSerializer(serializers.Serializer):
    """One DNS readiness check."""

    key = strict.CharField(read_only=True, help_text="mx, ptr, spf, dkim, dkim-retired-<selector>, dmarc, …")
    label = strict.CharField(read_only=True)
    status = serializers.ChoiceField(
        choices=[(status, status) for status in dns_readiness.STATUSES],
        read_only=True,
        help_text="ok, missing, wrong, pending (a rotated DKIM key not published yet) or unknown (DNS did not "
        "answer: the explanation says why).",
    )
    explanation = strict.CharField(read_only=True)
    publish = ZoneRecordSerializer(many=True, read_only=True, help_text="What to publish (empty when ok).")
    found = serializers.ListField(child=strict.CharField(), read_only=True, help_text="What DNS answered.")


class DnsReadinessSerializer(serializers.Serializer):
    """Whether the records a local domain needs are published, as its server's resolver answers."""

    domain = strict.CharField(read_only=True)
    resolver = strict.CharField(read_only=True, help_text="The DNS server asked.")
    ok = serializers.BooleanField(read_only=True, help_text="Every check is ok.")
    problems = serializers.IntegerField(read_only=True, help_text="How many checks are not ok.")
    elapsed_s = serializers.FloatField(read_only=True)
    checks = DnsCheckSerializer(many=True, read_only=True)


class DkimGenerateSerializer(serializers.Serializer):
    algorithm = serializers.ChoiceField(
        choices=DkimAlgorithm.choices,
        required=False,
        help_text="rsa-sha256 (RSA-2048, the default for a first key) or ed25519-sha256; a rotation keeps the "
        "current key's algorithm unless told otherwise.",
    )


# -- mailboxes ------------------------------------------------------------------------------------


class MailboxSerializer(serializers.ModelSerializer):
    address = strict.CharField(read_only=True)
    size_bytes = serializers.SerializerMethodField()
    message_count = serializers.SerializerMethodField()

    class Meta:
        model = Mailbox
        fields = [
            "id",
            "domain",
            "address",
            "local_part",
            "display_name",
            "quota_bytes",
            "quota_messages",
            "is_catch_all",
            "is_locked",
            "size_bytes",
            "message_count",
            "last_logon_at",
            "last_logon_from",
            "outbound_max_messages_per_hour",
            "outbound_max_messages_per_day",
            "outbound_max_new_recipients_per_day",
            "sending_blocked_at",
            "sending_blocked_reason",
            "created_at",
        ]
        read_only_fields = fields

    def _usage(self, mailbox: Mailbox):
        # Both columns come from one scan of the Maildir.
        cached = getattr(mailbox, "_api_usage", None)
        if cached is None:
            cached = mailbox._api_usage = mailbox_usage(mailbox)
        return cached

    def get_size_bytes(self, mailbox: Mailbox) -> int:
        return self._usage(mailbox).size_bytes

    def get_message_count(self, mailbox: Mailbox) -> int:
        return self._usage(mailbox).message_count


class MailboxCreateSerializer(serializers.Serializer):
    domain = ScopedPrimaryKeyRelatedField(queryset=Domain.objects.all())
    local_part = local_part_field()
    password = password_field()
    display_name = strict.CharField(max_length=200, required=False, allow_blank=True)
    quota_bytes = strict.IntegerField(min_value=0, max_value=MAX_BIGINT, required=False, allow_null=True)
    quota_messages = strict.IntegerField(min_value=0, max_value=MAX_INT, required=False, allow_null=True)
    is_catch_all = strict.BooleanField(required=False)


class MailboxUpdateSerializer(serializers.Serializer):
    display_name = strict.CharField(max_length=200, required=False, allow_blank=True)
    quota_bytes = strict.IntegerField(min_value=0, max_value=MAX_BIGINT, required=False, allow_null=True)
    quota_messages = strict.IntegerField(min_value=0, max_value=MAX_INT, required=False, allow_null=True)
    is_catch_all = strict.BooleanField(required=False)
    outbound_max_messages_per_hour = strict.IntegerField(
        min_value=0,
        max_value=MAX_INT,
        required=False,
        allow_null=True,
        help_text="This mailbox's own limit; null: the server's, 0: none. Operators and administrators only.",
    )
    outbound_max_messages_per_day = strict.IntegerField(
        min_value=0, max_value=MAX_INT, required=False, allow_null=True, help_text="As the hourly limit, per day."
    )
    outbound_max_new_recipients_per_day = strict.IntegerField(
        min_value=0,
        max_value=MAX_INT,
        required=False,
        allow_null=True,
        help_text="Recipients the mailbox never wrote to before, per day; null: the server's, 0: none.",
    )


class ReleaseSendingSerializer(serializers.Serializer):
    delete_held = strict.BooleanField(
        required=False, default=False, help_text="Delete the held queued mail instead of letting it go."
    )


class ReleaseSendingResultSerializer(serializers.Serializer):
    mailbox = MailboxSerializer(read_only=True)
    held_messages = strict.IntegerField(read_only=True, help_text="Held messages let go (or deleted).")


class PasswordSerializer(serializers.Serializer):
    password = password_field()


# -- group addresses ------------------------------------------------------------------------------


class GroupAddressSerializer(serializers.ModelSerializer):
    address = serializers.SerializerMethodField()
    member_addresses = serializers.SerializerMethodField()

    class Meta:
        model = GroupAddress
        fields = ["id", "domain", "local_part", "address", "members", "member_addresses", "created_at"]
        read_only_fields = fields

    def get_address(self, group: GroupAddress) -> str:
        return str(group)

    def get_member_addresses(self, group: GroupAddress) -> list[str]:
        return [member.address for member in group.members.all()]


class GroupAddressCreateSerializer(serializers.Serializer):
    domain = ScopedPrimaryKeyRelatedField(queryset=Domain.objects.all())
    local_part = local_part_field()
    members = ScopedPrimaryKeyRelatedField(queryset=Mailbox.objects.all(), many=True, required=False)


class GroupAddressUpdateSerializer(serializers.Serializer):
    members = ScopedPrimaryKeyRelatedField(queryset=Mailbox.objects.all(), many=True)


# -- logs and statistics --------------------------------------------------------------------------


class LogonSerializer(serializers.ModelSerializer):
    address = strict.CharField(source="mailbox.address", read_only=True)

    class Meta:
        model = Logon
        fields = ["id", "mailbox", "address", "protocol", "client_address", "logon_at", "last_access_at"]
        read_only_fields = fields


class AuditEntrySerializer(serializers.ModelSerializer):
    before = serializers.JSONField(read_only=True)
    after = serializers.JSONField(read_only=True)

    class Meta:
        model = AuditEntry
        fields = ["id", "at", "actor", "action", "object_type", "object_id", "object_repr", "before", "after"]
        read_only_fields = fields


@extend_schema_field(
    {"type": "object", "additionalProperties": {"type": "integer"}, "example": {"running": 1, "stopped": 2}}
)
class CountsField(serializers.DictField):
    pass


class StatsSerializer(serializers.Serializer):
    servers = strict.IntegerField()
    servers_by_state = CountsField(help_text="Observed state of each server the user manages.")
    servers_by_desired_state = CountsField()
    domains = strict.IntegerField()
    domains_by_type = CountsField()
    mailboxes = strict.IntegerField()
    locked_mailboxes = strict.IntegerField()
    groups = strict.IntegerField()
    messages_stored = strict.IntegerField()
    bytes_stored = strict.IntegerField()


# -- access and relay rules -----------------------------------------------------------------------


class AccessRuleSerializer(serializers.ModelSerializer):
    server_name = strict.CharField(source="server.name", read_only=True)

    class Meta:
        model = AccessRule
        fields = ["id", "server", "server_name", "kind", "value", "created_at"]
        read_only_fields = fields


class RelayRuleSerializer(AccessRuleSerializer):
    class Meta(AccessRuleSerializer.Meta):
        model = RelayRule


class RuleCreateSerializer(serializers.Serializer):
    server = ScopedPrimaryKeyRelatedField(queryset=VirtualServer.objects.all())
    kind = serializers.ChoiceField(
        choices=AccessRuleKind.choices, help_text="address, network (CIDR), range (start-end) or domain name."
    )
    value = strict.CharField(max_length=300)

    def validate_value(self, value: str) -> str:
        # Stored lower-cased; a few characters grow when lower-cased, and the column holds 300.
        if len(value.lower()) > 300:
            raise serializers.ValidationError(gettext("Ensure this field has no more than 300 characters."))
        return value


# -- current sessions -----------------------------------------------------------------------------


class SessionSerializer(serializers.Serializer):
    """One open connection to a server's worker, as the worker last reported it (a second or two old)."""

    id = strict.CharField()
    protocol = strict.CharField()
    client = strict.CharField(help_text="The client's IP address.")
    user = strict.CharField(allow_blank=True, help_text="The signed-in mailbox, if any.")
    connected_at = serializers.DateTimeField()
    state = strict.CharField(help_text="The last command, or the protocol state.")
    messages = strict.IntegerField()
    bytes = strict.IntegerField()
    tls = strict.BooleanField()

    def to_representation(self, session: dict) -> dict:
        connected = session.get("connected_at") or 0
        session = {**session, "connected_at": datetime.fromtimestamp(float(connected), tz=UTC)}
        return super().to_representation(session)


class ImapSessionSerializer(SessionSerializer):
    """One open connection to the IMAP service, with the folder it has selected."""

    folder = strict.CharField(allow_blank=True, help_text="The selected folder (IMAP name), if any.")

    def to_representation(self, session: dict) -> dict:
        return super().to_representation({"folder": "", **session})


# -- the node's IMAP service ----------------------------------------------------------------------


class ImapServiceSerializer(serializers.ModelSerializer):
    node_name = strict.CharField(source="node.name", read_only=True)
    plaintext_passwords_allowed = serializers.BooleanField(
        read_only=True,
        help_text="LOGIN and AUTHENTICATE are taken before STARTTLS: passwords may be sent unencrypted. "
        "Set plaintext_requires_tls to stop it.",
    )

    class Meta:
        model = ImapService
        fields = [
            field.name for field in ImapService._meta.concrete_fields if field.name not in SERVER_INTERNAL_FIELDS
        ] + ["node_name", "plaintext_passwords_allowed"]
        read_only_fields = fields


class ImapServiceUpdateSerializer(serializers.Serializer):
    """The IMAP service's settings (`servers.services.mail_services.EDITABLE_FIELDS`), all optional."""

    ip_address = checked_text(
        patterns.IP_ADDRESS,
        "Enter an IP address, or nothing.",
        max_length=45,
        required=False,
        allow_blank=True,
        help_text='An IP address; empty or "0.0.0.0" for all unassigned.',
    )
    port = strict.IntegerField(min_value=1, max_value=65535, required=False)
    tls_port = strict.IntegerField(
        min_value=0, max_value=65535, required=False, allow_null=True, help_text="IMAPS, usually 993; 0 or null: none."
    )
    default_domain = domain_name_field(
        required=False, allow_blank=True, help_text="Appended to a bare user name at login; empty: the first server's."
    )
    plaintext_requires_tls = strict.BooleanField(required=False, help_text="Refuse LOGIN before STARTTLS.")


# -- the queue ------------------------------------------------------------------------------------


class QueuedRecipientSerializer(serializers.Serializer):
    address = strict.CharField()
    state = strict.CharField()
    status = strict.CharField(allow_blank=True, help_text="The enhanced status code of the last reply.")
    last_reply = strict.CharField(allow_blank=True)


class QueueEntrySerializer(serializers.Serializer):
    """One message waiting for remote delivery (IIS "Queues", Exchange's Queue Viewer)."""

    id = strict.IntegerField()
    server = strict.IntegerField()
    name = strict.CharField(help_text="The file name in the server's Queue folder.")
    sender = strict.CharField(allow_blank=True)
    recipients = QueuedRecipientSerializer(many=True)
    size_octets = strict.IntegerField()
    queued_at = serializers.DateTimeField()
    attempts = strict.IntegerField()
    last_reply = strict.CharField(allow_blank=True)
    next_retry_at = serializers.DateTimeField(allow_null=True)
    frozen = strict.BooleanField()
    in_delivery = strict.BooleanField(help_text="A worker holds the message now; actions wait for it.")
    held = strict.BooleanField(
        help_text="Its sender's mailbox passed an outbound limit: held until the mailbox is released "
        "(POST /mailboxes/<id>/release-sending/)."
    )


# -- the Delivery tab -----------------------------------------------------------------------------


class DeliverySettingsSerializer(serializers.ModelSerializer):
    """A server's Delivery tab: retries, expiry, smart host, outbound limits. The password is never shown."""

    serializer_field_mapping = strict.STRICT_FIELD_MAPPING

    smart_host_password_set = serializers.SerializerMethodField()
    smart_host = checked_text(
        patterns.SMART_HOST, "Enter a host name or an IP address.", max_length=255, required=False, allow_blank=True
    )
    dns_server = checked_text(
        patterns.DNS_SERVER,
        "Enter an IP address, optionally with :port.",
        max_length=100,
        required=False,
        allow_blank=True,
    )
    ndr_copy_address = checked_text(
        patterns.NDR_COPY_ADDRESS,
        "Enter an e-mail address, or nothing.",
        max_length=320,
        required=False,
        allow_blank=True,
    )

    class Meta:
        model = DeliverySettings
        fields = [*EDITABLE_DELIVERY_FIELDS, "smart_host_password_set"]
        extra_kwargs = {
            **_setting_kwargs(DeliverySettings, EDITABLE_DELIVERY_FIELDS),
            "smart_host_password": {
                "write_only": True,
                "required": False,
                "max_length": 255,
                "help_text": "Write-only; stored encrypted, never shown back.",
            },
        }
        validators: list = []

    def get_smart_host_password_set(self, config: DeliverySettings) -> bool:
        return bool(config.smart_host_password)
