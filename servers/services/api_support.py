"""Who may manage what: the role assignments the REST API changes (operators, domain administrators)."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from servers.models import Domain, VirtualServer

from . import permissions
from .audit import record_change
from .errors import RefusedError


def _usernames(users: Iterable) -> list[str]:
    return sorted(user.get_username() for user in users)


def _check_may_hold_role(users: list, *, field: str) -> None:
    for user in users:
        refusal = permissions.role_refusal(user)
        if refusal is not None:
            raise RefusedError(refusal, field=field)


@transaction.atomic
def set_server_operators(server: VirtualServer, users: Iterable, *, actor: str = "system") -> VirtualServer:
    """Make exactly `users` the operators of a server (each one may hold a role: `permissions.role_refusal`)."""
    users = list(users)
    _check_may_hold_role(users, field="operators")
    server = VirtualServer.objects.select_for_update().get(pk=server.pk)
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
    """Make exactly `users` the delegated administrators of a domain (each one may hold a role)."""
    users = list(users)
    _check_may_hold_role(users, field="administrators")
    domain = Domain.objects.select_for_update().get(pk=domain.pk)
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
