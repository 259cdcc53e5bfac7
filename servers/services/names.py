"""Canonical forms of the names users type."""

import idna

from .errors import DomainError


def canonical_domain_name(raw: str, *, field: str = "name") -> str:
    """Return the lowercase IDNA A-label form of a domain name, without a trailing dot."""
    name = (raw or "").strip().rstrip(".")
    if not name:
        raise DomainError("Enter a domain name.", field=field)
    try:
        canonical = idna.encode(name, uts46=True).decode("ascii").lower()
    except idna.IDNAError as exc:
        raise DomainError(f"{raw!r} is not a valid domain name: {exc}", field=field) from None
    if len(canonical) > 253:
        raise DomainError("A domain name is at most 253 characters long.", field=field)
    return canonical
