"""DKIM keys of local domains: generate, rotate, remove the retired ones, show the record to publish.

A local domain has at most one active key, which signs everything the domain sends. Rotating makes
a new key (a new selector) active at once and retires the old one; the old record stays in DNS (and
its row here) until an operator removes retired keys, so mail signed just before the rotation still
verifies. Publish the new record right after rotating: until it is in DNS, receivers cannot check
the new signatures.

An alias domain has no key of its own: mail From: the alias is signed with its target's key under
d=<the alias> (DMARC wants d= to match the From: domain), so the target's record is also published
at `<selector>._domainkey.<alias>`. `dkim_record` of an alias names that place.

Private keys are encrypted at rest (`servers.stored_secrets`) and never leave this module except
to the delivery engine (`signing_keys_of_server`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from servers import dkim_signing, stored_secrets
from servers.models import DkimAlgorithm, DkimKey, DkimKeyState, Domain, DomainType, VirtualServer

from .audit import record_change
from .errors import RefusedError

log = logging.getLogger(__name__)

SELECTOR_PREFIX = "mc"


@dataclass(frozen=True)
class DkimRecord:
    """What to publish for a domain's active key (never the private key)."""

    domain: str
    selector: str
    algorithm: str
    txt_name: str
    txt_value: str
    txt_strings: list[str]
    created_at: datetime
    retired_selectors: list[str]


@dataclass(frozen=True)
class SigningKey:
    """What the delivery engine signs with for one domain name (d=)."""

    domain: str
    selector: str
    algorithm: str
    private_pem: str


def _key_domain(domain: Domain) -> Domain:
    """The domain whose keys sign for `domain`: itself, or an alias's target."""
    if domain.type == DomainType.ALIAS and domain.alias_of is not None:
        return domain.alias_of
    return domain


def _check_local(domain: Domain) -> None:
    if domain.type != DomainType.LOCAL:
        raise RefusedError(
            gettext("Only a local domain has DKIM keys (an alias domain signs with its target's key)."), field="domain"
        )


def _algorithm(algorithm: str) -> str:
    try:
        return DkimAlgorithm(algorithm).value
    except ValueError:
        choices = ", ".join(DkimAlgorithm.values)
        raise RefusedError(
            gettext("%(algorithm)s is not a DKIM algorithm (%(choices)s).")
            % {"algorithm": repr(algorithm), "choices": choices},
            field="algorithm",
        ) from None


def next_selector(domain: Domain, now: datetime | None = None) -> str:
    """A selector never used by `domain`: `mc` and the date (`mc20261202`), then `…b`, `…c`, … on the same day."""
    base = f"{SELECTOR_PREFIX}{(now or timezone.now()):%Y%m%d}"
    taken = set(DkimKey.objects.filter(domain=domain, selector__startswith=base).values_list("selector", flat=True))
    if base not in taken:
        return base
    for suffix in [*"bcdefghijklmnopqrstuvwxyz", *(str(n) for n in range(27, 1000))]:
        if base + suffix not in taken:
            return base + suffix
    raise RefusedError(
        gettext("%(domain)s has run out of DKIM selectors for today.") % {"domain": domain.name}, field="selector"
    )


def _new_key(domain: Domain, algorithm: str) -> DkimKey:
    private_pem, public_key = dkim_signing.generate_key_pair(algorithm)
    return DkimKey.objects.create(
        domain=domain,
        selector=next_selector(domain),
        algorithm=algorithm,
        private_key=stored_secrets.conceal(private_pem),
        public_key=public_key,
        state=DkimKeyState.ACTIVE,
    )


def _audit(key: DkimKey) -> dict[str, str]:
    return {"selector": key.selector, "algorithm": key.algorithm, "state": key.state}


@transaction.atomic
def generate_dkim_key(domain: Domain, *, algorithm: str = DkimAlgorithm.RSA_SHA256, actor: str = "system") -> DkimKey:
    """Give a local domain its first active DKIM key; refused if it has one (rotate it instead)."""
    domain = Domain.objects.select_for_update().get(pk=domain.pk)
    _check_local(domain)
    algorithm = _algorithm(algorithm)
    if domain.dkim_keys.filter(state=DkimKeyState.ACTIVE).exists():
        raise RefusedError(
            gettext("%(domain)s already has an active DKIM key; rotate it instead.") % {"domain": domain.name},
            field="domain",
        )
    key = _new_key(domain, algorithm)
    record_change(actor=actor, action="generate_dkim_key", obj=key, after=_audit(key))
    return key


@transaction.atomic
def rotate_dkim_key(domain: Domain, *, algorithm: str | None = None, actor: str = "system") -> DkimKey:
    """Make a new key (new selector) active and retire the current one; without one, the first key.

    `algorithm` None keeps the current key's algorithm (RSA for a first key).
    """
    domain = Domain.objects.select_for_update().get(pk=domain.pk)
    _check_local(domain)
    current = domain.dkim_keys.filter(state=DkimKeyState.ACTIVE).first()
    chosen = _algorithm(algorithm or (current.algorithm if current else DkimAlgorithm.RSA_SHA256))
    before = None
    if current is not None:
        before = _audit(current)
        current.state = DkimKeyState.RETIRED
        current.retired_at = timezone.now()
        current.save(update_fields=["state", "retired_at"])
    key = _new_key(domain, chosen)
    record_change(actor=actor, action="rotate_dkim_key", obj=key, before=before, after=_audit(key))
    return key


@transaction.atomic
def remove_retired_dkim_keys(domain: Domain, *, actor: str = "system") -> list[str]:
    """Delete a domain's retired keys (after their DNS records were taken down); returns their selectors."""
    retired = list(Domain.objects.get(pk=domain.pk).dkim_keys.filter(state=DkimKeyState.RETIRED))
    for key in retired:
        record_change(actor=actor, action="remove_dkim_key", obj=key, before=_audit(key))
        key.delete()
    return [key.selector for key in retired]


def dkim_record(domain: Domain) -> DkimRecord | None:
    """The TXT record to publish for the key that signs `domain`'s mail (an alias: its target's key)."""
    owner = _key_domain(domain)
    keys = list(DkimKey.objects.filter(domain=owner).order_by("-created_at", "-id"))
    active = next((key for key in keys if key.state == DkimKeyState.ACTIVE), None)
    if active is None:
        return None
    value = dkim_signing.txt_value(active.algorithm, active.public_key)
    return DkimRecord(
        domain=domain.name,
        selector=active.selector,
        algorithm=active.algorithm,
        txt_name=dkim_signing.txt_name(active.selector, domain.name),
        txt_value=value,
        txt_strings=dkim_signing.txt_strings(value),
        created_at=active.created_at,
        retired_selectors=[key.selector for key in keys if key.state == DkimKeyState.RETIRED],
    )


def signing_keys_of_server(server: VirtualServer | int) -> dict[str, SigningKey]:
    """Every domain name of the server that signs, with its key: local domains with an active key,
    and their aliases (same key, d= the alias). For the delivery engine only, once per attempt: two
    plain queries, no ordering (a server without keys costs one)."""
    server_id = server if isinstance(server, int) else server.pk
    active = {
        domain_id: (selector, algorithm, private_key)
        for domain_id, selector, algorithm, private_key in DkimKey.objects.filter(
            domain__server_id=server_id, state=DkimKeyState.ACTIVE
        )
        .order_by()
        .values_list("domain_id", "selector", "algorithm", "private_key")
    }
    if not active:
        return {}
    keys: dict[str, SigningKey] = {}
    domains = (
        Domain.objects.filter(server_id=server_id, type__in=[DomainType.LOCAL, DomainType.ALIAS])
        .order_by()
        .values_list("name", "type", "pk", "alias_of_id")
    )
    for name, type_, domain_id, alias_of_id in domains:
        key = active.get(alias_of_id if type_ == DomainType.ALIAS else domain_id)
        if key is None:
            continue
        selector, algorithm, concealed = key
        try:
            private_pem = stored_secrets.reveal(concealed)
        except stored_secrets.SecretUnreadableError:
            # A lost MAILCONSOLE_SECRETS_KEY: send unsigned rather than not at all; rotating makes a new key.
            log.warning("the DKIM key %s of %s cannot be decrypted; its mail goes out unsigned", selector, name)
            continue
        keys[name] = SigningKey(domain=name, selector=selector, algorithm=algorithm, private_pem=private_pem)
    return keys
