"""Configuration of nodes, virtual SMTP servers and their domains.

Rows here are changed only through `servers.services`, which enforces the invariants and writes
the audit log; the managers hold the queries every face shares.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models

from servers.choices import TextChoices
from servers.message_filters import DEFAULT_FORBIDDEN_EXTENSIONS, DEFAULT_FORBIDDEN_MIME_TYPES


class ServiceState(TextChoices):
    """What an administrator asks a server (or a node's whole service) to be."""

    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    STOPPED = "stopped", "Stopped"


class ObservedState(TextChoices):
    """What the supervisor last saw a worker process doing."""

    STARTING = "starting", "Starting"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    STOPPING = "stopping", "Stopping"
    STOPPED = "stopped", "Stopped"
    ERROR = "error", "Error"


# Ordering used to combine a node's service state with a server's own: the lower one wins.
STATE_RANK = {ServiceState.STOPPED: 0, ServiceState.PAUSED: 1, ServiceState.RUNNING: 2}


class Node(models.Model):
    """A host that runs SMTP, POP3 and IMAP workers and a Celery worker listening on a queue of its name."""

    name = models.CharField(max_length=100, unique=True)
    smtp_service_state = models.CharField(max_length=10, choices=ServiceState.choices, default=ServiceState.RUNNING)
    registered_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SupervisedProcess(models.Model):
    """What the node supervisor keeps about anything it runs as a worker process.

    Subclasses name their `process_kind` (the heartbeat key and the `run_<kind>d` command) and say
    which arguments start their worker.
    """

    process_kind = ""

    desired_state = models.CharField(max_length=10, choices=ServiceState.choices, default=ServiceState.RUNNING)
    state = models.CharField(max_length=10, choices=ObservedState.choices, default=ObservedState.STOPPED)
    last_error = models.TextField(blank=True, default="")
    pid = models.PositiveIntegerField(null=True, blank=True)
    restart_count = models.PositiveIntegerField(default=0)
    # Failures since the worker last stayed up; drives the restart back-off.
    consecutive_failures = models.PositiveIntegerField(default=0)
    next_start_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    state_changed_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Bumped by every configuration change; a worker running an older version reloads.
    config_version = models.PositiveIntegerField(default=1)
    # The last time the worker died while it should have run, and what is known about why.
    last_exit_at = models.DateTimeField(
        null=True, blank=True, help_text="When the worker process last exited while it should have run."
    )
    last_exit_status = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text='How it exited: "exited with code N", "killed by signal SIGKILL", or why that is unknown.',
    )
    last_exit_log = models.TextField(
        blank=True, default="", help_text="The last lines of the worker's own log when it exited."
    )

    class Meta:
        abstract = True

    @property
    def effective_desired_state(self) -> str:
        return self.desired_state

    def worker_argv(self) -> list[str]:
        raise NotImplementedError


class VirtualServerQuerySet(models.QuerySet):
    def on_node(self, node: Node | str) -> VirtualServerQuerySet:
        if isinstance(node, str):
            return self.filter(node__name=node)
        return self.filter(node=node)

    def for_user(self, user) -> VirtualServerQuerySet:
        """Servers a user may manage: all for an administrator, assigned ones for an operator."""
        if user.is_superuser:
            return self.all()
        if not user.is_authenticated:
            return self.none()
        return self.filter(operators=user)


class VirtualServer(SupervisedProcess):
    """An IIS-style virtual SMTP server: one listening address, one home directory, its domains."""

    process_kind = "smtp"

    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="servers")
    name = models.CharField(max_length=100)
    # "0.0.0.0" is IIS's "(All Unassigned)".
    ip_address = models.GenericIPAddressField(default="0.0.0.0", unpack_ipv4=True)
    port = models.PositiveIntegerField(default=25)
    home_dir = models.CharField(max_length=500, unique=True)

    # General tab. Empty limits mean "unlimited", as IIS's unchecked boxes do.
    max_connections = models.PositiveIntegerField(null=True, blank=True)
    max_connections_per_client = models.PositiveIntegerField(null=True, blank=True)
    idle_timeout_s = models.PositiveIntegerField(default=600)
    max_session_duration_s = models.PositiveIntegerField(default=3600)
    # After the first minute, a session slower than this (bytes/s, commands included) is closed.
    min_data_rate_bps = models.PositiveIntegerField(default=0)
    protocol_logging = models.BooleanField(default=False)
    # Processes that serve this server's sessions. Above 1, one process accepts and hands each
    # connection to a session process chosen by the client's address, so both cores work while
    # every per-client limit still sees all of a client's sessions.
    worker_processes = models.PositiveSmallIntegerField(default=1)

    # Messages tab (IIS defaults).
    max_message_size_kb = models.PositiveIntegerField(default=2048)
    max_session_size_kb = models.PositiveIntegerField(default=10240)
    max_messages_per_connection = models.PositiveIntegerField(default=20)
    max_recipients_per_message = models.PositiveIntegerField(default=100)
    max_hop_count = models.PositiveIntegerField(default=15)

    # Access tab: authentication and TLS.
    allow_anonymous = models.BooleanField(default=True)
    # A submission server (RFC 6409): it owns no domain, takes mail from signed-in users only, and
    # delivers to every local mailbox of its node (its snapshot spans the node's domains) or relays.
    is_submission = models.BooleanField(default=False)
    # "Basic authentication": AUTH PLAIN and AUTH LOGIN against mailbox credentials.
    allow_basic_auth = models.BooleanField(default=True)
    # AUTH and MAIL only after STARTTLS (or on the implicit-TLS port).
    require_tls = models.BooleanField(default=False)
    # AUTH only after STARTTLS (or on the implicit-TLS port); mail from other servers still comes in
    # plaintext, as RFC 3207 4 wants of a public MX. New servers off loopback start with it on
    # (services.virtual_servers.passwords_need_tls_by_default); off is IIS's plaintext AUTH.
    auth_requires_tls = models.BooleanField(default=False)
    tls_port = models.PositiveIntegerField(null=True, blank=True)

    # Access tab: connection control ("only the list below" or "all except the list below").
    connection_policy = models.CharField(
        max_length=12,
        default="all_except",
        choices=[("all_except", "All except the list below"), ("only_listed", "Only the list below")],
    )
    # Access tab: relay restrictions, beyond authenticated users and the relay list.
    pop_before_smtp_minutes = models.PositiveIntegerField(default=0)

    # Optional checks, off by default.
    require_client_ptr = models.BooleanField(default=False)
    require_auth_for_local_senders = models.BooleanField(default=False)
    # After this many unknown recipients in a session, slow down, then disconnect (0 = off).
    harvest_unknown_recipients_limit = models.PositiveIntegerField(default=0)
    max_messages_per_sender_per_hour = models.PositiveIntegerField(default=0)
    max_messages_per_client_per_hour = models.PositiveIntegerField(default=0)
    max_auth_failures_per_connection = models.PositiveIntegerField(default=3)
    max_auth_failures_per_client_per_hour = models.PositiveIntegerField(default=20)

    # Anti-spam tab, off by default; never applied to signed-in users or relay-list clients.
    # DNS blocklist zones (canonical names, one a line) asked about every client before its MAIL.
    dnsbl_zones = models.TextField(blank=True, default="")
    dnsbl_action = models.CharField(
        max_length=6,
        default="tag",
        choices=[("tag", "Add an X-DNSBL header"), ("reject", "Refuse the mail (554 5.7.1)")],
    )
    # Unknown (client network, sender, recipient) triplets are deferred (451 4.7.1) for this long.
    greylisting = models.BooleanField(default=False)
    greylisting_delay_s = models.PositiveIntegerField(default=300)
    # SPF (RFC 7208) of MAIL FROM (of the HELO name for the null sender), asked at MAIL.
    spf_action = models.CharField(
        max_length=6,
        default="none",
        choices=[
            ("none", "Do not check"),
            ("tag", "Check and record the result"),
            ("reject", "Refuse a fail (550 5.7.23)"),
        ],
    )
    # DMARC (RFC 7489) of the From: domain, after DATA: p=reject refuses, p=quarantine files into Junk.
    dmarc_action = models.CharField(
        max_length=6,
        default="none",
        choices=[("none", "Do not check"), ("honour", "Honour the sender domain's policy")],
    )

    # Filters tab, off by default; never applied to signed-in users or relay-list clients.
    # Attachments: off, refuse the message (554 5.7.1 naming the file), or strip the file and say so.
    attachment_filter = models.CharField(
        max_length=6,
        default="off",
        choices=[
            ("off", "Off"),
            ("refuse", "Refuse the message (554 5.7.1)"),
            ("strip", "Remove the attachment and say so in its place"),
        ],
    )
    # File name extensions (without the dot) and MIME types, one a line.
    forbidden_extensions = models.TextField(blank=True, default=DEFAULT_FORBIDDEN_EXTENSIONS)
    forbidden_mime_types = models.TextField(blank=True, default=DEFAULT_FORBIDDEN_MIME_TYPES)
    # Empty: no limit on one attachment's (decoded) size.
    max_attachment_size_kb = models.PositiveIntegerField(null=True, blank=True, default=None)
    # clamd (INSTREAM): "tcp://host:port" or "unix:/path"; empty: no virus scanning.
    virus_scanner = models.CharField(max_length=255, blank=True, default="")
    virus_scanner_failure = models.CharField(
        max_length=6,
        default="open",
        choices=[
            ("open", "Accept the mail unscanned"),
            ("closed", "Defer the mail (451 4.7.1)"),
        ],
    )
    # rspamd's score thresholds (RSPAMD_URL, or this server's own rspamd_url); empty: that step is off.
    rspamd_url = models.CharField(max_length=255, blank=True, default="")
    spam_tag_score = models.FloatField(null=True, blank=True, default=6.0)
    spam_subject_prefix = models.CharField(max_length=40, blank=True, default="[SPAM]")
    spam_junk_score = models.FloatField(null=True, blank=True, default=10.0)
    spam_refuse_score = models.FloatField(null=True, blank=True, default=None)
    # MAIL FROM's domain must have an MX or an address record (550 5.1.8); a DNS timeout accepts.
    require_sender_domain = models.BooleanField(default=False)
    # The client's forward-confirmed PTR name must lie in MAIL FROM's domain (550 5.7.1).
    ptr_matches_sender = models.BooleanField(default=False)
    # Senders (addresses, or domains with their subdomains), one a line: deny refuses at MAIL,
    # allow skips the anti-spam checks (DNSBL, greylisting, the sender checks above).
    sender_allow = models.TextField(blank=True, default="")
    sender_deny = models.TextField(blank=True, default="")

    # Outbound abuse limits for mail a signed-in mailbox sends (0 = off); a mailbox may override them.
    # Over a limit, the mailbox is blocked from sending and its queued mail is held until released.
    outbound_max_messages_per_hour = models.PositiveIntegerField(default=0)
    outbound_max_messages_per_day = models.PositiveIntegerField(default=0)
    outbound_max_new_recipients_per_day = models.PositiveIntegerField(default=0)

    # The IIS Security tab's "Operators": users who manage this server, its domains and mailboxes.
    operators = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="operated_servers")

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = VirtualServerQuerySet.as_manager()

    class Meta:
        ordering = ["node__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["node", "name"], name="server_name_unique_per_node"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def home_path(self) -> Path:
        return Path(self.home_dir)

    @property
    def drop_dir(self) -> Path:
        return self.home_path / "Drop"

    @property
    def cert_path(self) -> Path:
        return self.home_path / "tls" / "server.crt"

    @property
    def key_path(self) -> Path:
        return self.home_path / "tls" / "server.key"

    @property
    def default_domain(self) -> Domain | None:
        return self.domains.filter(is_default=True).first()

    @property
    def plaintext_passwords_allowed(self) -> bool:
        """Whether AUTH PLAIN/LOGIN is taken before STARTTLS on the SMTP port (passwords in the clear)."""
        return self.allow_basic_auth and not (self.require_tls or self.auth_requires_tls)

    def worker_argv(self) -> list[str]:
        return ["run_smtpd", "--server", str(self.pk)]

    @property
    def effective_desired_state(self) -> str:
        """The state the worker should be in: the server's own, capped by its node's service."""
        node_state = ServiceState(self.node.smtp_service_state)
        own_state = ServiceState(self.desired_state)
        return min(node_state, own_state, key=STATE_RANK.__getitem__).value


class AccessRuleKind(TextChoices):
    """How a rule names clients: Courier-style addresses and ranges, or a (reverse-DNS) name."""

    ADDRESS = "address", "Single address"
    NETWORK = "network", "Network (CIDR)"
    RANGE = "range", "Address range (start-end)"
    DOMAIN = "domain", "Domain name"


class ClientRule(models.Model):
    """One entry of a list of clients on a server's Access tab."""

    kind = models.CharField(max_length=10, choices=AccessRuleKind.choices)
    value = models.CharField(max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True
        ordering = ["server_id", "id"]

    def __str__(self) -> str:
        return self.value


class AccessRule(ClientRule):
    """The connection-control list (Access tab, "Connection..."); its meaning follows connection_policy."""

    server = models.ForeignKey("VirtualServer", on_delete=models.CASCADE, related_name="access_rules")


class RelayRule(ClientRule):
    """A client that may relay without authenticating (Access tab, "Relay...": the trusted LAN)."""

    server = models.ForeignKey("VirtualServer", on_delete=models.CASCADE, related_name="relay_rules")


class DomainType(TextChoices):
    LOCAL = "local", "Local"
    ALIAS = "alias", "Alias"
    REMOTE = "remote", "Remote"


class DomainQuerySet(models.QuerySet):
    def accepting_mail(self) -> DomainQuerySet:
        """Domains whose mail this server takes in for local handling."""
        return self.filter(type__in=[DomainType.LOCAL, DomainType.ALIAS])

    def for_user(self, user) -> DomainQuerySet:
        """Domains a user may see: via the servers they operate, or as the domain's administrator."""
        if user.is_superuser:
            return self.all()
        if not user.is_authenticated:
            return self.none()
        return self.filter(models.Q(server__operators=user) | models.Q(administrators=user)).distinct()


class Domain(models.Model):
    """A mail domain of one virtual server (IIS "Domains" node)."""

    server = models.ForeignKey(VirtualServer, on_delete=models.CASCADE, related_name="domains")
    # Canonical form: lowercase IDNA A-label without a trailing dot.
    name = models.CharField(max_length=253)
    type = models.CharField(max_length=10, choices=DomainType.choices, default=DomainType.LOCAL)
    alias_of = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="aliases")
    # Remote domains only: "Allow incoming mail to be relayed to this domain".
    relay_allowed = models.BooleanField(default=False)
    is_default = models.BooleanField(default=False)
    # winpop lock DOMAIN: its mailboxes still receive mail but cannot log in.
    is_locked = models.BooleanField(default=False)
    # The largest mailbox quota a domain administrator may give (and never "unlimited"); empty: no
    # ceiling. Set by administrators and the server's operators.
    max_mailbox_quota_mb = models.PositiveIntegerField(null=True, blank=True)
    # Delegated administrators (as in Kerio): they manage only this domain's mailboxes and groups.
    administrators = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="administered_domains")
    # The language of the mail the server writes to this domain's people (non-delivery and delay
    # reports); empty: the installation's (MAILCONSOLE_MAIL_LANGUAGE, else English).
    language = models.CharField(max_length=8, blank=True, default="", choices=[("", "—"), *settings.LANGUAGES])
    # Senders allowed (anti-spam checks skipped) or denied (550 at RCPT) for this domain's recipients;
    # addresses or domains (with their subdomains), one a line.
    sender_allow = models.TextField(blank=True, default="")
    sender_deny = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DomainQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["server", "name"], name="domain_name_unique_per_server"),
            models.UniqueConstraint(
                fields=["server"],
                condition=models.Q(is_default=True),
                name="one_default_domain_per_server",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class DkimAlgorithm(TextChoices):
    RSA_SHA256 = "rsa-sha256", "RSA-2048 (rsa-sha256)"
    # RFC 8463; not every receiver verifies it yet, so RSA stays the default.
    ED25519_SHA256 = "ed25519-sha256", "Ed25519 (ed25519-sha256)"


class DkimKeyState(TextChoices):
    ACTIVE = "active", "Active"
    # No longer signs; kept so its DNS record is remembered until an operator removes it.
    RETIRED = "retired", "Retired"


class DkimKey(models.Model):
    """A DKIM signing key of a local domain (RFC 6376); its public half is published at
    `<selector>._domainkey.<domain>`. Changed only through `servers.services.dkim`."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="dkim_keys")
    selector = models.CharField(max_length=63)
    algorithm = models.CharField(max_length=20, choices=DkimAlgorithm.choices, default=DkimAlgorithm.RSA_SHA256)
    # The PEM (PKCS#8), concealed by `servers.stored_secrets` ("fernet:<token>"); no face shows it.
    private_key = models.TextField()
    # The p= tag: base64 of the DER SubjectPublicKeyInfo (RSA) or of the raw 32-byte key (Ed25519).
    public_key = models.TextField()
    state = models.CharField(max_length=10, choices=DkimKeyState.choices, default=DkimKeyState.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["domain__name", "-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["domain", "selector"], name="dkim_selector_unique_per_domain"),
            models.UniqueConstraint(
                fields=["domain"], condition=models.Q(state="active"), name="one_active_dkim_key_per_domain"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.selector}._domainkey.{self.domain.name}"


class Pop3ServiceQuerySet(models.QuerySet):
    def on_node(self, node: Node | str) -> Pop3ServiceQuerySet:
        if isinstance(node, str):
            return self.filter(node__name=node)
        return self.filter(node=node)


class Pop3Service(SupervisedProcess):
    """The POP3 service of a node: it serves every mailbox of the node's virtual servers."""

    process_kind = "pop3"

    node = models.OneToOneField(Node, on_delete=models.CASCADE, related_name="pop3_service")
    ip_address = models.GenericIPAddressField(default="0.0.0.0", unpack_ipv4=True)
    port = models.PositiveIntegerField(default=110)
    # Implicit TLS (POP3S, usually 995); empty means none.
    tls_port = models.PositiveIntegerField(null=True, blank=True)
    # Appended to a bare user name at login ("USER alice" means alice@<default_domain>).
    default_domain = models.CharField(max_length=253, blank=True, default="")
    # RFC 2595: refuse USER/PASS and AUTH PLAIN until the client has run STLS.
    plaintext_requires_tls = models.BooleanField(default=False)

    objects = Pop3ServiceQuerySet.as_manager()

    def __str__(self) -> str:
        return f"POP3 service of {self.node.name}"

    @property
    def plaintext_passwords_allowed(self) -> bool:
        """Whether USER/PASS and AUTH are taken before STLS on the POP3 port (passwords in the clear)."""
        return not self.plaintext_requires_tls

    def worker_argv(self) -> list[str]:
        return ["run_pop3d", "--service", str(self.pk)]

    @property
    def cert_path(self) -> Path:
        return settings.VAR_DIR / "tls" / f"pop3-{self.pk}.crt"

    @property
    def key_path(self) -> Path:
        return settings.VAR_DIR / "tls" / f"pop3-{self.pk}.key"


class ImapServiceQuerySet(models.QuerySet):
    def on_node(self, node: Node | str) -> ImapServiceQuerySet:
        if isinstance(node, str):
            return self.filter(node__name=node)
        return self.filter(node=node)


class ImapService(SupervisedProcess):
    """The IMAP4rev2 service of a node: it serves every mailbox of the node's virtual servers."""

    process_kind = "imap"

    node = models.OneToOneField(Node, on_delete=models.CASCADE, related_name="imap_service")
    ip_address = models.GenericIPAddressField(default="0.0.0.0", unpack_ipv4=True)
    port = models.PositiveIntegerField(default=143)
    # Implicit TLS (IMAPS, usually 993); empty means none.
    tls_port = models.PositiveIntegerField(null=True, blank=True)
    # Appended to a bare user name at login ("LOGIN alice" means alice@<default_domain>).
    default_domain = models.CharField(max_length=253, blank=True, default="")
    # RFC 9051 section 11.1 / RFC 8314: refuse LOGIN and AUTHENTICATE until the client has run STARTTLS.
    plaintext_requires_tls = models.BooleanField(default=False)

    objects = ImapServiceQuerySet.as_manager()

    def __str__(self) -> str:
        return f"IMAP service of {self.node.name}"

    @property
    def plaintext_passwords_allowed(self) -> bool:
        """Whether LOGIN and AUTHENTICATE are taken before STARTTLS on the IMAP port (passwords in the clear)."""
        return not self.plaintext_requires_tls

    def worker_argv(self) -> list[str]:
        return ["run_imapd", "--service", str(self.pk)]

    @property
    def cert_path(self) -> Path:
        return settings.VAR_DIR / "tls" / f"imap-{self.pk}.crt"

    @property
    def key_path(self) -> Path:
        return settings.VAR_DIR / "tls" / f"imap-{self.pk}.key"


class MailboxQuerySet(models.QuerySet):
    def for_address(self, address: str) -> MailboxQuerySet:
        local_part, _, domain = address.lower().rpartition("@")
        return self.filter(local_part=local_part, domain__name=domain)

    def for_user(self, user) -> MailboxQuerySet:
        if user.is_superuser:
            return self.all()
        return self.filter(domain__in=Domain.objects.for_user(user))


class Mailbox(models.Model):
    """A POP3 mailbox in a local domain, stored as a Maildir under its server's home directory."""

    domain = models.ForeignKey(Domain, on_delete=models.PROTECT, related_name="mailboxes")
    local_part = models.CharField(max_length=64)
    display_name = models.CharField(max_length=200, blank=True, default="")
    password = models.CharField(max_length=200)
    quota_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    quota_messages = models.PositiveIntegerField(null=True, blank=True)
    is_locked = models.BooleanField(default=False)
    # Receives mail for every unknown address of its domain.
    is_catch_all = models.BooleanField(default=False)
    last_logon_at = models.DateTimeField(null=True, blank=True)
    last_logon_from = models.CharField(max_length=100, blank=True, default="")
    # The server's outbound limits for this mailbox (empty: the server's; 0: off).
    outbound_max_messages_per_hour = models.PositiveIntegerField(null=True, blank=True)
    outbound_max_messages_per_day = models.PositiveIntegerField(null=True, blank=True)
    outbound_max_new_recipients_per_day = models.PositiveIntegerField(null=True, blank=True)
    # Set when the mailbox passed an outbound limit: it may not send, its queued mail is held.
    sending_blocked_at = models.DateTimeField(null=True, blank=True)
    sending_blocked_reason = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = MailboxQuerySet.as_manager()

    class Meta:
        ordering = ["domain__name", "local_part"]
        verbose_name_plural = "mailboxes"
        constraints = [
            models.UniqueConstraint(fields=["domain", "local_part"], name="mailbox_unique_per_domain"),
            models.UniqueConstraint(
                fields=["domain"], condition=models.Q(is_catch_all=True), name="one_catch_all_per_domain"
            ),
        ]

    def __str__(self) -> str:
        return self.address

    @property
    def address(self) -> str:
        return f"{self.local_part}@{self.domain.name}"

    @property
    def maildir(self) -> Path:
        return Path(self.domain.server.home_dir) / "Mailbox" / self.domain.name / self.local_part


class GroupAddressQuerySet(models.QuerySet):
    def for_user(self, user) -> GroupAddressQuerySet:
        if user.is_superuser:
            return self.all()
        return self.filter(domain__in=Domain.objects.for_user(user))


class GroupAddress(models.Model):
    """One address that delivers to several mailboxes (the seed's info@company).

    A group with no members delivers to its server's Drop folder; every local domain gets a
    `postmaster` group so that RFC 5321's postmaster is always accepted.
    """

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="groups")
    local_part = models.CharField(max_length=64)
    members = models.ManyToManyField(Mailbox, blank=True, related_name="groups")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = GroupAddressQuerySet.as_manager()

    class Meta:
        ordering = ["domain__name", "local_part"]
        constraints = [
            models.UniqueConstraint(fields=["domain", "local_part"], name="group_unique_per_domain"),
        ]

    def __str__(self) -> str:
        return f"{self.local_part}@{self.domain.name}"


class Logon(models.Model):
    """One sign-in to a mailbox (Exchange's Logons view): through POP3, IMAP or webmail."""

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="logons")
    protocol = models.CharField(max_length=10, default="POP3")
    client_address = models.CharField(max_length=100)
    logon_at = models.DateTimeField(db_index=True)
    last_access_at = models.DateTimeField()

    class Meta:
        ordering = ["-logon_at"]

    def __str__(self) -> str:
        return f"{self.mailbox} from {self.client_address} at {self.logon_at:%Y-%m-%d %H:%M:%S}"


class AuditEntry(models.Model):
    """Who changed what, and when; written by the services for every change."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.CharField(max_length=150, blank=True, default="")
    action = models.CharField(max_length=100)
    object_type = models.CharField(max_length=50)
    object_id = models.CharField(max_length=50, blank=True, default="")
    object_repr = models.CharField(max_length=300, blank=True, default="")
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.object_repr}"


from servers.delivery.models import *  # noqa: E402,F403
