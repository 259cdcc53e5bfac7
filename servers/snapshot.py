"""The configuration a worker process runs on, read from the database at start and on reload.

Workers keep this in memory so that nothing on the SMTP hot path waits on the database. It is
data plus the routing table (`accepts_domain`, `destination`) that both the SMTP session and the
delivery engine read; the rules that decide on it are in `servers.smtp_policy`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from django.conf import settings

from servers.delivery.models import DeliverySettings
from servers.maildir import has_own_folder
from servers.message_filters import AttachmentRules
from servers.models import Domain, DomainType, GroupAddress, Mailbox, VirtualServer
from servers.smtp_policy import ClientList, SenderList, split_zone_list


@dataclass(frozen=True)
class SmtpPolicy:
    """The General, Messages and Access tabs as the SMTP session needs them."""

    max_connections: int | None = None
    max_connections_per_client: int | None = None
    idle_timeout_s: int = 600
    max_session_duration_s: int = 3600
    min_data_rate_bps: int = 0
    protocol_logging: bool = False
    max_session_size_bytes: int = 10240 * 1024
    max_messages_per_connection: int = 20
    max_recipients_per_message: int = 100
    max_hop_count: int = 15
    allow_anonymous: bool = True
    allow_basic_auth: bool = True
    require_tls: bool = False
    auth_requires_tls: bool = False
    tls_port: int | None = None
    connection_policy: str = "all_except"
    access_list: ClientList = field(default_factory=ClientList)
    relay_list: ClientList = field(default_factory=ClientList)
    pop_before_smtp_minutes: int = 0
    require_client_ptr: bool = False
    require_auth_for_local_senders: bool = False
    harvest_unknown_recipients_limit: int = 0
    max_messages_per_sender_per_hour: int = 0
    max_messages_per_client_per_hour: int = 0
    max_auth_failures_per_connection: int = 3
    max_auth_failures_per_client_per_hour: int = 20
    worker_processes: int = 1
    # Anti-spam tab.
    dnsbl_zones: tuple[str, ...] = ()
    dnsbl_action: str = "tag"
    greylisting: bool = False
    greylisting_delay_s: int = 300
    spf_action: str = "none"
    dmarc_action: str = "none"
    require_sender_domain: bool = False
    ptr_matches_sender: bool = False
    sender_allow: SenderList = field(default_factory=SenderList)
    sender_deny: SenderList = field(default_factory=SenderList)
    # Outbound abuse limits of signed-in mailboxes (0 = off); MailboxEntry.outbound_overrides.
    outbound_max_messages_per_hour: int = 0
    outbound_max_messages_per_day: int = 0
    outbound_max_new_recipients_per_day: int = 0
    # The resolver inbound checks ask: the Delivery tab's DNS server, else MAILCONSOLE_DNS_SERVER,
    # else the system's ("" here).
    dns_server: str = ""
    # Filters tab (end of DATA).
    attachment_filter: str = "off"
    attachment_rules: AttachmentRules = field(default_factory=AttachmentRules)
    virus_scanner: str = ""
    virus_scanner_failure: str = "open"
    # The server's own rspamd_url, else RSPAMD_URL; empty: no spam scoring.
    rspamd_url: str = ""
    spam_tag_score: float | None = 6.0
    spam_subject_prefix: str = "[SPAM]"
    spam_junk_score: float | None = 10.0
    spam_refuse_score: float | None = None


# Fields of SmtpPolicy computed from other settings rather than copied from one.
_COMPUTED_POLICY_FIELDS = frozenset(
    {
        "max_session_size_bytes",
        "access_list",
        "relay_list",
        "dnsbl_zones",
        "dns_server",
        "attachment_rules",
        "rspamd_url",
        "sender_allow",
        "sender_deny",
    }
)
# VirtualServer settings the SMTP session reads, copied into the snapshot under the same names: every
# other field of SmtpPolicy, so a new setting is declared once in SERVER_SETTINGS
# (servers/services/virtual_servers.py) and once here, as a typed field with its default.
POLICY_FIELDS = tuple(f.name for f in fields(SmtpPolicy) if f.name not in _COMPUTED_POLICY_FIELDS)


@dataclass(frozen=True)
class MailboxEntry:
    """What the SMTP path needs to know about one mailbox, without asking the database."""

    address: str
    maildir: Path
    quota_bytes: int | None
    quota_messages: int | None
    # The mailbox's own outbound limits per hour, per day, new recipients per day (None: the server's).
    outbound_overrides: tuple[int | None, int | None, int | None] = (None, None, None)


@dataclass(frozen=True)
class Destination:
    """Where mail for one recipient goes: mailboxes, or (IIS-style) the server's Drop folder."""

    mailboxes: tuple[MailboxEntry, ...] = ()
    to_drop: bool = False


@dataclass(frozen=True)
class ServerSnapshot:
    server_id: int
    name: str
    ip_address: str
    port: int
    home_dir: Path
    hostname: str
    desired_state: str
    config_version: int
    max_message_size_bytes: int
    default_domain: str
    local_domains: frozenset[str] = field(default_factory=frozenset)
    # alias domain -> the local domain it stands for
    alias_targets: dict[str, str] = field(default_factory=dict)
    mailboxes: dict[str, MailboxEntry] = field(default_factory=dict)
    # group address -> member mailbox addresses (empty: the Drop folder)
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # domain -> the address of its catch-all mailbox
    catch_all: dict[str, str] = field(default_factory=dict)
    # remote domains with "allow incoming mail to be relayed to this domain"
    relay_domains: frozenset[str] = field(default_factory=frozenset)
    # local domain -> its (allow, deny) sender lists, for domains that have one
    domain_sender_lists: dict[str, tuple[SenderList, SenderList]] = field(default_factory=dict)
    policy: SmtpPolicy = field(default_factory=SmtpPolicy)
    cert_path: Path | None = None
    key_path: Path | None = None

    @property
    def alias_domains(self) -> frozenset[str]:
        return frozenset(self.alias_targets)

    @property
    def drop_dir(self) -> Path:
        return self.home_dir / "Drop"

    @property
    def tmp_dir(self) -> Path:
        return self.home_dir / ".tmp"

    def accepts_domain(self, domain: str) -> bool:
        """Whether mail for `domain` is ours to take in (local or alias domain)."""
        return domain in self.local_domains or domain in self.alias_targets

    def destination(self, local_part: str, domain: str) -> Destination | None:
        """Where mail for local_part@domain goes, or None if there is no such address here.

        An alias domain delivers like its local domain; a domain without any mailbox keeps the IIS
        behaviour of taking all its mail into Drop/.
        """
        domain = self.alias_targets.get(domain, domain)
        if domain not in self.local_domains:
            return None
        address = f"{local_part}@{domain}"
        if address in self.mailboxes:
            return Destination(mailboxes=(self.mailboxes[address],))
        if address in self.groups:
            members = tuple(self.mailboxes[m] for m in self.groups[address] if m in self.mailboxes)
            return Destination(mailboxes=members) if members else Destination(to_drop=True)
        if domain in self.catch_all:
            return Destination(mailboxes=(self.mailboxes[self.catch_all[domain]],))
        if not any(a.endswith(f"@{domain}") for a in self.mailboxes):
            return Destination(to_drop=True)
        return None


def _domain_scope(server: VirtualServer) -> dict:
    """The lookup that selects the domains whose mail this server delivers: its own, or for a
    submission server every domain of its node (it owns none)."""
    return {"server__node_id": server.node_id} if server.is_submission else {"server": server}


def _mail_routes(server: VirtualServer) -> dict:
    mailboxes = {}
    catch_all = {}
    scope = _domain_scope(server)
    for mailbox in Mailbox.objects.filter(**{f"domain__{k}": v for k, v in scope.items()}).select_related("domain"):
        if not has_own_folder(mailbox.domain.name, mailbox.local_part):
            continue  # a name from before names were checked: its folder may be another mailbox's
        entry = MailboxEntry(
            mailbox.address,
            mailbox.maildir,
            mailbox.quota_bytes,
            mailbox.quota_messages,
            (
                mailbox.outbound_max_messages_per_hour,
                mailbox.outbound_max_messages_per_day,
                mailbox.outbound_max_new_recipients_per_day,
            ),
        )
        mailboxes[entry.address] = entry
        if mailbox.is_catch_all:
            catch_all[mailbox.domain.name] = entry.address
    groups: dict[str, list[str]] = {}
    for group in GroupAddress.objects.filter(**{f"domain__{k}": v for k, v in scope.items()}).select_related("domain"):
        groups[str(group)] = []
    memberships = GroupAddress.members.through.objects.filter(
        **{f"groupaddress__domain__{k}": v for k, v in scope.items()}
    ).values_list(
        "groupaddress__local_part", "groupaddress__domain__name", "mailbox__local_part", "mailbox__domain__name"
    )
    for local_part, domain, member_local_part, member_domain in memberships:
        groups[f"{local_part}@{domain}"].append(f"{member_local_part}@{member_domain}")
    return {
        "mailboxes": mailboxes,
        "catch_all": catch_all,
        "groups": {address: tuple(members) for address, members in groups.items()},
    }


def load_snapshot(server_id: int) -> ServerSnapshot:
    """Read one server's configuration; raises VirtualServer.DoesNotExist if it was deleted."""
    server = VirtualServer.objects.select_related("node").get(pk=server_id)
    scoped = Domain.objects.filter(**_domain_scope(server))
    domains = list(scoped.values_list("name", "type", "is_default"))
    if server.is_submission:
        # Bare names complete with the default domain of the node's first server.
        first = scoped.filter(is_default=True).order_by("server_id").values_list("name", flat=True).first()
        domains = [(name, kind, name == first) for name, kind, _ in domains]
    snapshot = ServerSnapshot(
        server_id=server.pk,
        name=server.name,
        ip_address=server.ip_address,
        port=server.port,
        home_dir=server.home_path,
        hostname=settings.MAIL_HOSTNAME,
        desired_state=server.effective_desired_state,
        config_version=server.config_version,
        max_message_size_bytes=server.max_message_size_kb * 1024,
        default_domain=next((name for name, _, is_default in domains if is_default), ""),
        local_domains=frozenset(name for name, kind, _ in domains if kind == DomainType.LOCAL),
        alias_targets=dict(
            scoped.filter(type=DomainType.ALIAS, alias_of__isnull=False).values_list("name", "alias_of__name")
        ),
        relay_domains=frozenset(
            server.domains.filter(type=DomainType.REMOTE, relay_allowed=True).values_list("name", flat=True)
        ),
        policy=SmtpPolicy(
            **{name: getattr(server, name) for name in POLICY_FIELDS},
            max_session_size_bytes=server.max_session_size_kb * 1024,
            access_list=ClientList.from_rules(server.access_rules.values_list("kind", "value")),
            relay_list=ClientList.from_rules(server.relay_rules.values_list("kind", "value")),
            dnsbl_zones=tuple(split_zone_list(server.dnsbl_zones)),
            sender_allow=SenderList.from_text(server.sender_allow),
            sender_deny=SenderList.from_text(server.sender_deny),
            dns_server=(
                DeliverySettings.objects.filter(server=server).values_list("dns_server", flat=True).first()
                or settings.DELIVERY_DNS_SERVER
                or ""
            ),
            attachment_rules=AttachmentRules.from_settings(
                server.forbidden_extensions, server.forbidden_mime_types, server.max_attachment_size_kb
            ),
            rspamd_url=server.rspamd_url or settings.RSPAMD_URL,
        ),
        domain_sender_lists={
            name: (SenderList.from_text(allow), SenderList.from_text(deny))
            for name, allow, deny in server.domains.filter(type=DomainType.LOCAL)
            .exclude(sender_allow="", sender_deny="")
            .values_list("name", "sender_allow", "sender_deny")
        },
        cert_path=server.cert_path,
        key_path=server.key_path,
        **_mail_routes(server),
    )
    return snapshot
