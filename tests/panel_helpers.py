"""Personas and objects the console tests share: alice administers, oscar operates, dora runs a domain."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.contrib.auth.models import User

from servers import services
from servers.livestate import redis_client
from servers.models import Domain, VirtualServer
from servers.services import signin_guard
from tests.factories import make_server

PASSWORD = "Correct-Horse-9"

# The role-scoped managers filter on VirtualServer.operators; until the model has that field, every
# query for a user who is not an administrator fails, so the tests of those roles wait for it.
ROLES_AVAILABLE = any(field.name == "operators" for field in VirtualServer._meta.get_fields())
needs_roles = pytest.mark.skipif(
    not ROLES_AVAILABLE, reason="servers.models.VirtualServer has no `operators` field yet"
)


@dataclass
class Cast:
    alice: User  # administrator
    oscar: User  # operator of `server`
    dora: User  # administrator of `domain` only
    server: VirtualServer
    other_server: VirtualServer
    domain: Domain
    other_domain: Domain


def make_user(username: str, *, superuser: bool = False) -> User:
    if superuser:
        return User.objects.create_superuser(username, f"{username}@example.test", PASSWORD)
    return User.objects.create_user(username, f"{username}@example.test", PASSWORD)


def make_cast() -> Cast:
    alice = make_user("alice", superuser=True)
    oscar = make_user("oscar")
    dora = make_user("dora")
    server = make_server(name="Lab server", domain="lab.example.test")
    other_server = make_server(name="Other server", domain="other.example.test")
    domain = services.add_domain(server, "dora.example.test", actor="test")
    # There is no service for roles yet: the tests grant them as the Django admin would.
    if ROLES_AVAILABLE:
        server.operators.add(oscar)
    domain.administrators.add(dora)
    return Cast(
        alice=alice,
        oscar=oscar,
        dora=dora,
        server=server,
        other_server=other_server,
        domain=domain,
        other_domain=server.default_domain,
    )


def clear_login_throttle() -> None:
    """Forget failed sign-ins; only the console's keys, since Celery and heartbeats share this Redis."""
    client = redis_client()
    for key in client.scan_iter(match="mailconsole:console:*", count=500):
        client.delete(key)
    signin_guard.forget_all()
