"""Who may manage what: the role assignments the REST API changes (operators, domain administrators)."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from servers.models import Domain, VirtualServer

from .audit import record_change


def _usernames(users: Iterable) -> list[str]:
    return sorted(user.get_username() for user in users)


@transaction.atomic
def set_server_operators(server: VirtualServer, users: Iterable, *, actor: str = "system") -> VirtualServer:
    """Make exactly `users` the operators of a server."""
    server = VirtualServer.objects.select_for_update().get(pk=server.pk)
    users = list(users)
    before = _usernames(server.operators.all())
    if before != _usernames(users):
        server.operators.set(users)
        record_change(
            actor=actor,
            action="set_server_operators",
            obj=server,
            before={"operators": before},
            after={"operators": _usernames(users)},
        )
    return server


@transaction.atomic
def set_domain_administrators(domain: Domain, users: Iterable, *, actor: str = "system") -> Domain:
    """Make exactly `users` the delegated administrators of a domain."""
    domain = Domain.objects.select_for_update().get(pk=domain.pk)
    users = list(users)
    before = _usernames(domain.administrators.all())
    if before != _usernames(users):
        domain.administrators.set(users)
        record_change(
            actor=actor,
            action="set_domain_administrators",
            obj=domain,
            before={"administrators": before},
            after={"administrators": _usernames(users)},
        )
    return domain
