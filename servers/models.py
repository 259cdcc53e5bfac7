"""Configuration of nodes, virtual SMTP servers and their domains.

Rows here are changed only through `servers.services`, which enforces the invariants and writes
the audit log; the managers hold the queries every face shares.
"""

from __future__ import annotations

from pathlib import Path

from django.db import models


class ServiceState(models.TextChoices):
    """What an administrator asks a server (or a node's whole service) to be."""

    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    STOPPED = "stopped", "Stopped"


class ObservedState(models.TextChoices):
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
    """A host that runs SMTP/POP3 workers and a Celery worker listening on a queue of its name."""

    name = models.CharField(max_length=100, unique=True)
    smtp_service_state = models.CharField(
        max_length=10, choices=ServiceState.choices, default=ServiceState.RUNNING
    )
    registered_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class VirtualServerQuerySet(models.QuerySet):
    def on_node(self, node: Node | str) -> VirtualServerQuerySet:
        if isinstance(node, str):
            return self.filter(node__name=node)
        return self.filter(node=node)


class VirtualServer(models.Model):
    """An IIS-style virtual SMTP server: one listening address, one home directory, its domains."""

    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="servers")
    name = models.CharField(max_length=100)
    # "0.0.0.0" is IIS's "(All Unassigned)".
    ip_address = models.GenericIPAddressField(default="0.0.0.0", unpack_ipv4=True)
    port = models.PositiveIntegerField(default=25)
    home_dir = models.CharField(max_length=500, unique=True)
    max_message_size_kb = models.PositiveIntegerField(default=2048)

    desired_state = models.CharField(
        max_length=10, choices=ServiceState.choices, default=ServiceState.RUNNING
    )
    state = models.CharField(
        max_length=10, choices=ObservedState.choices, default=ObservedState.STOPPED
    )
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
    def default_domain(self) -> Domain | None:
        return self.domains.filter(is_default=True).first()

    @property
    def effective_desired_state(self) -> str:
        """The state the worker should be in: the server's own, capped by its node's service."""
        node_state = ServiceState(self.node.smtp_service_state)
        own_state = ServiceState(self.desired_state)
        return min(node_state, own_state, key=STATE_RANK.__getitem__).value


class DomainType(models.TextChoices):
    LOCAL = "local", "Local"
    ALIAS = "alias", "Alias"
    REMOTE = "remote", "Remote"


class DomainQuerySet(models.QuerySet):
    def accepting_mail(self) -> DomainQuerySet:
        """Domains whose mail this server takes in for local handling."""
        return self.filter(type__in=[DomainType.LOCAL, DomainType.ALIAS])


class Domain(models.Model):
    """A mail domain of one virtual server (IIS "Domains" node)."""

    server = models.ForeignKey(VirtualServer, on_delete=models.CASCADE, related_name="domains")
    # Canonical form: lowercase IDNA A-label without a trailing dot.
    name = models.CharField(max_length=253)
    type = models.CharField(max_length=10, choices=DomainType.choices, default=DomainType.LOCAL)
    alias_of = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="aliases"
    )
    # Remote domains only: "Allow incoming mail to be relayed to this domain".
    relay_allowed = models.BooleanField(default=False)
    is_default = models.BooleanField(default=False)
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


class AuditEntry(models.Model):
    """Who changed what, when and from where; written by the services for every change."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.CharField(max_length=150, blank=True, default="")
    source = models.CharField(max_length=50, blank=True, default="")
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

