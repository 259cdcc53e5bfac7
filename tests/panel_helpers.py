"""The console tests' lab: the one cast of people (tests.factories) with a server and domains to run.

alice administers; oscar (the cast's operator, bob) operates `server`; dora (the cast's domain
administrator, carol) administers `domain` only.
"""

from __future__ import annotations

from dataclasses import dataclass

from servers import services
from servers.livestate import redis_client
from servers.models import Domain, VirtualServer
from servers.services import signin_guard
from tests.factories import USER_PASSWORD, People, default_domain_of, make_people, make_server, make_user

PASSWORD = USER_PASSWORD
__all__ = ["PASSWORD", "Cast", "clear_login_throttle", "make_cast", "make_user"]


@dataclass
class Cast(People):
    server: VirtualServer
    other_server: VirtualServer
    domain: Domain
    other_domain: Domain


def make_cast() -> Cast:
    people = make_people()
    server = make_server(name="Lab server", domain="lab.example.test")
    other_server = make_server(name="Other server", domain="other.example.test")
    domain = services.add_domain(server, "dora.example.test", actor="test")
    # There is no service for roles yet: the tests grant them as the Django admin would.
    server.operators.add(people.oscar)
    domain.administrators.add(people.dora)
    return Cast(
        alice=people.alice,
        bob=people.bob,
        carol=people.carol,
        dave=people.dave,
        server=server,
        other_server=other_server,
        domain=domain,
        other_domain=default_domain_of(server),
    )


def clear_login_throttle() -> None:
    """Forget failed sign-ins; only the console's keys, since Celery and heartbeats share this Redis."""
    client = redis_client()
    for key in client.scan_iter(match="mailconsole:console:*", count=500):
        client.delete(key)
    signin_guard.forget_all()
