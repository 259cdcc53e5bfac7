"""The Access tab's lists: connection control and the clients that may relay without signing in."""

from __future__ import annotations

from django.db import transaction

from servers.models import AccessRule, ClientRule, RelayRule, VirtualServer
from servers.smtp_policy import RuleError, normalize_rule

from .audit import record_change
from .errors import RefusedError
from .nodes import request_reconcile
from .virtual_servers import bump_config_version

AUDIT_NOUNS = {AccessRule: "access_rule", RelayRule: "relay_rule"}


def _clean(kind: str, value: str) -> str:
    try:
        return normalize_rule(kind, value)
    except RuleError as exc:
        raise RefusedError(str(exc), field="value") from None


def _changed(server: VirtualServer) -> None:
    bump_config_version(server)
    request_reconcile(server.node)


@transaction.atomic
def _add_rule(model: type[ClientRule], server: VirtualServer, kind: str, value: str, actor: str) -> ClientRule:
    rule = model.objects.create(server=server, kind=kind, value=_clean(kind, value))
    record_change(actor=actor, action=f"add_{AUDIT_NOUNS[model]}", obj=rule, after={"kind": kind, "value": rule.value})
    _changed(server)
    return rule


@transaction.atomic
def _remove_rule(rule: ClientRule, actor: str) -> None:
    server = rule.server
    record_change(
        actor=actor,
        action=f"remove_{AUDIT_NOUNS[type(rule)]}",
        obj=rule,
        before={"kind": rule.kind, "value": rule.value},
    )
    rule.delete()
    _changed(server)


def add_access_rule(server: VirtualServer, kind: str, value: str, *, actor: str = "system") -> AccessRule:
    """Add an entry to the connection-control list (its meaning depends on `connection_policy`)."""
    return _add_rule(AccessRule, server, kind, value, actor)


def remove_access_rule(rule: AccessRule, *, actor: str = "system") -> None:
    _remove_rule(rule, actor)


def add_relay_rule(server: VirtualServer, kind: str, value: str, *, actor: str = "system") -> RelayRule:
    """Let these clients (the trusted LAN) relay without authenticating."""
    return _add_rule(RelayRule, server, kind, value, actor)


def remove_relay_rule(rule: RelayRule, *, actor: str = "system") -> None:
    _remove_rule(rule, actor)
