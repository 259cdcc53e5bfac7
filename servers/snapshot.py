"""The configuration a worker process runs on, read from the database at start and on reload.

Workers keep this in memory so that nothing on the SMTP hot path waits on the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import connection

from servers.models import DomainType, VirtualServer


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
    alias_domains: frozenset[str] = field(default_factory=frozenset)

    @property
    def drop_dir(self) -> Path:
        return self.home_dir / "Drop"

    @property
    def tmp_dir(self) -> Path:
        return self.home_dir / ".tmp"

    def accepts_domain(self, domain: str) -> bool:
        """Whether mail for `domain` is ours to take in (local or alias domain)."""
        return domain in self.local_domains or domain in self.alias_domains


def load_snapshot(server_id: int) -> ServerSnapshot:
    """Read one server's configuration; raises VirtualServer.DoesNotExist if it was deleted."""
    server = VirtualServer.objects.select_related("node").get(pk=server_id)
    domains = list(server.domains.values_list("name", "type", "is_default"))
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
        alias_domains=frozenset(name for name, kind, _ in domains if kind == DomainType.ALIAS),
    )
    # The worker may not touch the database again for hours: give the connection back.
    connection.close()
    return snapshot
