"""Domains of a virtual server: local, alias and remote (the IIS "Domains" node)."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.utils.translation import gettext

from servers.models import Domain, DomainType, VirtualServer

from .audit import record_change, snapshot_of
from .errors import RefusedError
from .names import canonical_domain_name, check_path_name
from .nodes import request_reconcile
from .permissions import acts_only_as_domain_administrator
from .postmaster import ensure_postmaster
from .virtual_servers import bump_config_version


def _resolve_alias_target(server: VirtualServer, alias_of: Domain | str | None) -> Domain:
    if alias_of is None or alias_of == "":
        raise RefusedError("An alias domain must name the local domain it stands for.", field="alias_of")
    if isinstance(alias_of, Domain):
        target = alias_of
    else:
        target = Domain.objects.filter(server=server, name=canonical_domain_name(alias_of, field="alias_of")).first()
        if target is None:
            raise RefusedError(f"Server {server.name!r} has no domain {alias_of!r}.", field="alias_of")
    if target.server_id != server.pk or target.type != DomainType.LOCAL:
        raise RefusedError("An alias domain must point at a local domain of the same server.", field="alias_of")
    return target


def _changed(server: VirtualServer) -> None:
    bump_config_version(server)
    request_reconcile(server.node)


@transaction.atomic
def add_domain(
    server: VirtualServer,
    name: str,
    *,
    type: str = DomainType.LOCAL,
    alias_of: Domain | str | None = None,
    relay_allowed: bool = False,
    actor: str = "system",
) -> Domain:
    """Add a local, alias or remote domain to a server."""
    if server.is_submission:
        # It delivers for every domain of its node already; a domain of its own would split one.
        raise RefusedError("A submission server holds no domains; add the domain to a mail server.", field="name")
    try:
        domain_type = DomainType(type)
    except ValueError:
        raise RefusedError(f"{type!r} is not a domain type (local, alias, remote).", field="type") from None
    canonical = check_path_name(canonical_domain_name(name), field="name", what="A domain name")
    if Domain.objects.filter(server=server, name=canonical).exists():
        raise RefusedError(f"Server {server.name!r} already has the domain {canonical}.", field="name")
    domain = Domain(server=server, name=canonical, type=domain_type)
    if domain_type == DomainType.ALIAS:
        domain.alias_of = _resolve_alias_target(server, alias_of)
    elif alias_of:
        raise RefusedError("Only an alias domain points at another domain.", field="alias_of")
    if relay_allowed and domain_type != DomainType.REMOTE:
        raise RefusedError("Only a remote domain can allow relaying to it.", field="relay_allowed")
    domain.relay_allowed = relay_allowed
    domain.save()
    ensure_postmaster(domain)
    record_change(actor=actor, action="add_domain", obj=domain, after=snapshot_of(domain))
    _changed(server)
    return domain


@transaction.atomic
def set_default_domain(domain: Domain, *, actor: str = "system") -> Domain:
    """Make a local domain the server's default domain."""
    domain = Domain.objects.select_related("server__node").get(pk=domain.pk)
    if domain.is_default:
        return domain
    if domain.type != DomainType.LOCAL:
        raise RefusedError("Only a local domain can be the default domain.", field="is_default")
    previous = Domain.objects.filter(server=domain.server, is_default=True).first()
    Domain.objects.filter(server=domain.server, is_default=True).update(is_default=False)
    domain.is_default = True
    domain.save(update_fields=["is_default"])
    record_change(
        actor=actor,
        action="set_default_domain",
        obj=domain,
        before={"default_domain": previous.name if previous else None},
        after={"default_domain": domain.name},
    )
    _changed(domain.server)
    return domain


@transaction.atomic
def change_domain_type(
    domain: Domain,
    type: str,
    *,
    alias_of: Domain | str | None = None,
    relay_allowed: bool = False,
    actor: str = "system",
) -> Domain:
    """Turn a domain into another type; the default domain must stay local."""
    domain = Domain.objects.select_related("server__node").get(pk=domain.pk)
    try:
        new_type = DomainType(type)
    except ValueError:
        raise RefusedError(f"{type!r} is not a domain type (local, alias, remote).", field="type") from None
    if domain.is_default and new_type != DomainType.LOCAL:
        raise RefusedError("The default domain must stay a local domain.", field="type")
    if domain.type == DomainType.LOCAL and new_type != DomainType.LOCAL:
        if domain.mailboxes.exists():
            raise RefusedError(f"{domain.name} still has mailboxes; delete them first.", field="type")
        if domain.aliases.exists():
            raise RefusedError(f"Alias domains still point at {domain.name}; change them first.", field="type")
        _check_keeps_a_local_domain(domain)
    before = snapshot_of(domain)
    if domain.type == DomainType.LOCAL and new_type != DomainType.LOCAL:
        # Group addresses (postmaster included) belong to local domains only.
        domain.groups.all().delete()
    domain.type = new_type
    domain.alias_of = _resolve_alias_target(domain.server, alias_of) if new_type == DomainType.ALIAS else None
    if domain.alias_of_id == domain.pk:
        raise RefusedError("A domain cannot be an alias of itself.", field="alias_of")
    if relay_allowed and new_type != DomainType.REMOTE:
        raise RefusedError("Only a remote domain can allow relaying to it.", field="relay_allowed")
    domain.relay_allowed = relay_allowed
    domain.save()
    ensure_postmaster(domain)
    record_change(actor=actor, action="change_domain_type", obj=domain, before=before, after=snapshot_of(domain))
    _changed(domain.server)
    return domain


def _check_keeps_a_local_domain(domain: Domain) -> None:
    others = Domain.objects.filter(server=domain.server, type=DomainType.LOCAL).exclude(pk=domain.pk)
    if not others.exists():
        raise RefusedError("A virtual server must keep at least one local domain.", field="name")


@transaction.atomic
def remove_domain(domain: Domain, *, actor: str = "system") -> None:
    """Remove a domain; the default domain and the last local domain stay."""
    domain = Domain.objects.select_related("server__node").get(pk=domain.pk)
    if domain.is_default:
        raise RefusedError("The default domain cannot be deleted; make another domain the default first.", field="name")
    if domain.type == DomainType.LOCAL:
        _check_keeps_a_local_domain(domain)
        if domain.aliases.exists():
            raise RefusedError(f"Alias domains still point at {domain.name}; remove them first.", field="name")
    if domain.mailboxes.exists():
        raise RefusedError(f"{domain.name} still has mailboxes; delete them first.", field="name")
    record_change(actor=actor, action="remove_domain", obj=domain, before=snapshot_of(domain))
    server = domain.server
    domain.delete()
    _changed(server)


MAX_QUOTA_CEILING_MB = 2**31 - 1


@transaction.atomic
def set_domain_language(domain: Domain, language: str, *, actor: str = "system") -> Domain:
    """The language of the reports the server writes to the domain's people ("" : the installation's)."""
    language = (language or "").strip().lower()
    if language and language not in dict(settings.LANGUAGES):
        choices = ", ".join(code for code, _ in settings.LANGUAGES)
        raise RefusedError(
            gettext("%(language)s is not a language of MailConsole (%(choices)s, or empty).")
            % {"language": repr(language), "choices": choices},
            field="language",
        )
    domain = Domain.objects.select_for_update().get(pk=domain.pk)
    if language != domain.language:
        before = {"language": domain.language}
        domain.language = language
        domain.save(update_fields=["language"])
        record_change(
            actor=actor, action="set_domain_language", obj=domain, before=before, after={"language": language}
        )
    return domain


def set_mailbox_quota_ceiling(
    domain: Domain, ceiling_mb: int | str | None, *, actor: str = "system", acting_user=None
) -> Domain:
    """Cap the quota a domain administrator may give a mailbox of `domain` (None, "" or 0: no ceiling).

    Administrators and the server's operators set it; mailboxes already above it keep their quota.
    """
    domain = Domain.objects.select_related("server__node").select_for_update().get(pk=domain.pk)
    if acts_only_as_domain_administrator(acting_user, domain):
        raise RefusedError(
            "Only an administrator or an operator of the server can change the quota ceiling.",
            field="max_mailbox_quota_mb",
        )
    if ceiling_mb is None or ceiling_mb == "":
        value = None
    else:
        try:
            value = int(ceiling_mb)
        except (TypeError, ValueError):
            raise RefusedError(f"{ceiling_mb!r} is not a whole number of MB.", field="max_mailbox_quota_mb") from None
        if not 0 <= value <= MAX_QUOTA_CEILING_MB:
            raise RefusedError(
                f"Enter a number of MB between 0 and {MAX_QUOTA_CEILING_MB}.", field="max_mailbox_quota_mb"
            )
        value = value or None
    if value != domain.max_mailbox_quota_mb:
        before = {"max_mailbox_quota_mb": domain.max_mailbox_quota_mb}
        domain.max_mailbox_quota_mb = value
        domain.save(update_fields=["max_mailbox_quota_mb"])
        record_change(
            actor=actor,
            action="set_mailbox_quota_ceiling",
            obj=domain,
            before=before,
            after={"max_mailbox_quota_mb": value},
        )
    return domain


@transaction.atomic
def set_domain_sender_lists(
    domain: Domain,
    *,
    sender_allow: object = None,
    sender_deny: object = None,
    actor: str = "system",
    acting_user=None,
) -> Domain:
    """Set a local domain's sender allow and deny lists (None: keep that one); each is checked, one entry a line.

    Allowed senders skip the anti-spam checks for the domain's recipients; denied ones are refused
    at RCPT for them. Operators of the server change them (the domain itself is theirs to change).
    """
    from .virtual_servers import clean_sender_list

    domain = Domain.objects.select_related("server__node").select_for_update().get(pk=domain.pk)
    if acts_only_as_domain_administrator(acting_user, domain):
        raise RefusedError("Only an administrator or an operator of the server can change the sender lists.")
    changes = {}
    for field, value in (("sender_allow", sender_allow), ("sender_deny", sender_deny)):
        if value is None:
            continue
        cleaned = clean_sender_list(value, field)
        if cleaned and domain.type != DomainType.LOCAL:
            raise RefusedError("Only a local domain has sender lists (an alias domain uses its target's).", field=field)
        if cleaned != getattr(domain, field):
            changes[field] = cleaned
    if changes:
        before = {field: getattr(domain, field) for field in changes}
        for field, value in changes.items():
            setattr(domain, field, value)
        domain.save(update_fields=list(changes))
        record_change(actor=actor, action="set_domain_sender_lists", obj=domain, before=before, after=changes)
        _changed(domain.server)
    return domain
