"""Objects the tests build, always through the services so that the invariants hold."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model

from servers import services
from servers.models import Domain, ImapService, Mailbox, Pop3Service, VirtualServer
from tests.helpers import free_port

_counter = 0

# The console users' password (mailboxes get PASSWORD below).
USER_PASSWORD = "Correct-Horse-9"


@dataclass
class People:
    """The one cast of console users; each test grants the roles its scenario needs.

    alice administers; bob operates a server; carol administers a domain; dave is signed in with no
    role. The console tests call the operator `oscar` and the domain administrator `dora`: the same people.
    """

    alice: object  # administrator
    bob: object  # server operator
    carol: object  # domain administrator
    dave: object  # signed in, no role

    @property
    def oscar(self):
        return self.bob

    @property
    def dora(self):
        return self.carol


def make_user(username: str, *, superuser: bool = False, password: str = USER_PASSWORD):
    users = get_user_model().objects
    if superuser:
        return users.create_superuser(username, f"{username}@example.test", password)
    return users.create_user(username, f"{username}@example.test", password)


def make_people() -> People:
    return People(
        alice=make_user("alice", superuser=True),
        bob=make_user("bob"),
        carol=make_user("carol"),
        dave=make_user("dave"),
    )


def make_server(
    *,
    name: str | None = None,
    domain: str | None = None,
    port: int | None = None,
    ip_address: str = "127.0.0.1",
    home_dir: Path | None = None,
    start: bool = False,
    **kwargs,
) -> VirtualServer:
    """A virtual server on loopback with a fresh port and home directory (stopped unless asked)."""
    global _counter
    _counter += 1
    name = name or f"server-{_counter}"
    return services.create_virtual_server(
        name=name,
        default_domain=domain or f"d{_counter}.example.test",
        ip_address=ip_address,
        port=port or free_port(),
        home_dir=home_dir or settings.VAR_DIR / "homes" / f"{name}-{_counter}",
        start=start,
        **kwargs,
    )


def default_domain_of(server: VirtualServer) -> Domain:
    """The server's default domain (every server made through the services has one)."""
    assert server.default_domain is not None
    return server.default_domain


PASSWORD = "Labpass123"


def make_mailbox(
    server: VirtualServer, local_part: str, *, domain: str | None = None, password: str = PASSWORD, **kwargs
) -> Mailbox:
    """A mailbox in the server's default domain (or the named local domain of that server)."""
    target = server.domains.get(name=domain) if domain else server.default_domain
    return services.add_mailbox(target, local_part, password, **kwargs)


def make_pop3_service(**kwargs) -> Pop3Service:
    """The test node's POP3 service on loopback, with fresh ports for POP3 and POP3S."""
    kwargs.setdefault("ip_address", "127.0.0.1")
    kwargs.setdefault("port", free_port())
    kwargs.setdefault("tls_port", free_port())
    return services.create_pop3_service(**kwargs)


def make_imap_service(**kwargs) -> ImapService:
    """The test node's IMAP service on loopback, with fresh ports for IMAP and IMAPS."""
    kwargs.setdefault("ip_address", "127.0.0.1")
    kwargs.setdefault("port", free_port())
    kwargs.setdefault("tls_port", free_port())
    return services.create_imap_service(**kwargs)


@dataclass
class MailboxOwners:
    """The cast's mailboxes on one server: helena's (the webmail and POP3 tests' reader) and bob's."""

    server: VirtualServer
    helena: Mailbox
    bob: Mailbox


def make_mailbox_owners(server: VirtualServer) -> MailboxOwners:
    return MailboxOwners(server=server, helena=make_mailbox(server, "helena"), bob=make_mailbox(server, "bob"))
