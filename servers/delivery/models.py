"""The Delivery tab's settings, remote-domain routes, and the index of queued messages."""

from __future__ import annotations

from django.db import models

__all__ = ["DeliverySettings", "QueuedMessage", "QueuedRecipient", "RecipientState", "RemoteDomainRoute"]

MINUTE_S = 60
HOUR_S = 60 * MINUTE_S
DAY_S = 24 * HOUR_S


class DeliverySettings(models.Model):
    """A virtual server's Delivery tab, with the IIS 6 defaults; made on first use by `for_server`."""

    server = models.OneToOneField("servers.VirtualServer", on_delete=models.CASCADE, related_name="delivery")
    # Outbound: "First retry interval (minutes): 10" ... "Subsequent retry interval: 15".
    first_retry_interval_s = models.PositiveIntegerField(default=10 * MINUTE_S)
    second_retry_interval_s = models.PositiveIntegerField(default=10 * MINUTE_S)
    third_retry_interval_s = models.PositiveIntegerField(default=10 * MINUTE_S)
    subsequent_retry_interval_s = models.PositiveIntegerField(default=15 * MINUTE_S)
    delay_notification_s = models.PositiveIntegerField(default=12 * HOUR_S)
    expiration_timeout_s = models.PositiveIntegerField(default=2 * DAY_S)
    # Advanced: smart host ("[10.0.0.5]" or a name; brackets are accepted and ignored).
    smart_host = models.CharField(max_length=255, blank=True, default="")
    smart_host_port = models.PositiveIntegerField(default=25)
    smart_host_username = models.CharField(max_length=255, blank=True, default="")
    # Sent with AUTH, so it is encrypted, not hashed (`servers.stored_secrets`); nothing shows it back.
    smart_host_password = models.CharField(max_length=1000, blank=True, default="")
    attempt_direct_before_smart_host = models.BooleanField(default=False)
    # Outbound connections: TCP port, limit, time-out.
    outbound_port = models.PositiveIntegerField(default=25)
    max_outbound_connections = models.PositiveIntegerField(default=1000)
    outbound_timeout_s = models.PositiveIntegerField(default=10 * MINUTE_S)
    # Messages tab: "Send copy of Non-Delivery Report to".
    ndr_copy_address = models.CharField(max_length=320, blank=True, default="")
    # "ip" or "ip:port" of the DNS server to ask; empty: MAILCONSOLE_DNS_SERVER, else the system's.
    dns_server = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        app_label = "servers"
        verbose_name_plural = "delivery settings"

    def __str__(self) -> str:
        return f"Delivery settings of {self.server}"

    @classmethod
    def for_server(cls, server) -> DeliverySettings:
        """The server's Delivery tab, created with the defaults if it has never been saved."""
        server_id = server if isinstance(server, int) else server.pk
        return cls.objects.get_or_create(server_id=server_id)[0]

    def retry_interval_s(self, failed_attempts: int) -> int:
        """Seconds to wait after the `failed_attempts`-th failed attempt (1 = the first)."""
        intervals = [self.first_retry_interval_s, self.second_retry_interval_s, self.third_retry_interval_s]
        if 1 <= failed_attempts <= len(intervals):
            return intervals[failed_attempts - 1]
        return self.subsequent_retry_interval_s


class RemoteDomainRoute(models.Model):
    """Where mail for a remote domain goes instead of its MX hosts: a named smart host."""

    domain = models.OneToOneField("servers.Domain", on_delete=models.CASCADE, related_name="route")
    smart_host = models.CharField(max_length=255)
    port = models.PositiveIntegerField(default=25)
    username = models.CharField(max_length=255, blank=True, default="")
    # Encrypted like the server's smart-host password.
    password = models.CharField(max_length=1000, blank=True, default="")

    class Meta:
        app_label = "servers"

    def __str__(self) -> str:
        return f"{self.domain} via {self.smart_host}:{self.port}"


class QueuedMessageQuerySet(models.QuerySet):
    def due(self, now) -> QueuedMessageQuerySet:
        return self.filter(frozen=False, held=False, next_attempt_at__lte=now)


class QueuedMessage(models.Model):
    """One file in a server's Queue folder, and how its delivery is going.

    The file (`Queue/<name>`) is the message; this row can be rebuilt from it (recipients then
    start again as pending: a duplicate is possible, a loss is not).
    """

    server = models.ForeignKey("servers.VirtualServer", on_delete=models.CASCADE, related_name="queued_messages")
    name = models.CharField(max_length=100)
    mail_from = models.CharField(max_length=320, blank=True, default="")
    size_octets = models.PositiveBigIntegerField(default=0)
    queued_at = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=0)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(db_index=True)
    last_reply = models.TextField(blank=True, default="")
    frozen = models.BooleanField(default=False)
    # Its sender's mailbox passed an outbound limit (services.outbound_limits): no attempt, no
    # expiry, until the mailbox is released.
    held = models.BooleanField(default=False)
    delay_notified = models.BooleanField(default=False)
    # "host:pid:start-time" of the process delivering it now; a dead claimant's claim is void.
    claimed_by = models.CharField(max_length=100, blank=True, default="")
    claimed_at = models.DateTimeField(null=True, blank=True)
    # When the scan last queued a Celery task for it, so one due message is not sent twice a tick.
    dispatched_at = models.DateTimeField(null=True, blank=True)

    objects = QueuedMessageQuerySet.as_manager()

    class Meta:
        app_label = "servers"
        ordering = ["queued_at", "id"]
        constraints = [models.UniqueConstraint(fields=["server", "name"], name="queued_message_unique_per_server")]

    def __str__(self) -> str:
        return self.name


class RecipientState(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class QueuedRecipient(models.Model):
    """One envelope recipient of a queued message, with its own result."""

    message = models.ForeignKey(QueuedMessage, on_delete=models.CASCADE, related_name="recipients")
    address = models.CharField(max_length=320)
    state = models.CharField(max_length=10, choices=RecipientState.choices, default=RecipientState.PENDING)
    # RFC 3463 enhanced status of the last result ("5.1.1"), the reply text, and who gave it.
    status = models.CharField(max_length=10, blank=True, default="")
    last_reply = models.TextField(blank=True, default="")
    remote_host = models.CharField(max_length=255, blank=True, default="")
    # A failed recipient is reported to the sender exactly once (DSN sent, BadMail written).
    notified = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "servers"
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.address} ({self.state})"
