"""Canonical forms of the names users type.

Every face (SMTP AUTH, POP3, webmail, the console, the API) reduces what a user typed to one
canonical form before anything is looked up, counted or checked, so that `User@Dom.`, `user@dom`
and `user@xn--...` are one identity with one failure counter.
"""

import ipaddress

import idna
from django.utils.translation import gettext

from .errors import RefusedError


def canonical_domain_name(raw: str, *, field: str = "name") -> str:
    """Return the lowercase IDNA A-label form of a domain name.

    One trailing dot (the DNS root, `example.com.`) is accepted and dropped; anything more
    (`example.com..`, empty labels) is refused, so a name never has two spellings.
    """
    name = (raw or "").strip()
    if not name:
        raise RefusedError(gettext("Enter a domain name."), field=field)
    try:
        # UTS #46 maps case, full-width letters and ideographic full stops before encoding.
        canonical = idna.encode(name, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError) as exc:
        raise RefusedError(
            gettext("%(name)s is not a valid domain name: %(reason)s") % {"name": repr(raw), "reason": exc}, field=field
        ) from None
    if canonical.endswith("."):
        canonical = canonical[:-1]
    if not canonical or canonical.startswith(".") or canonical.endswith(".") or ".." in canonical:
        raise RefusedError(
            gettext("%(name)s is not a valid domain name: empty label.") % {"name": repr(raw)}, field=field
        )
    if len(canonical) > 253:
        raise RefusedError(gettext("A domain name is at most 253 characters long."), field=field)
    return canonical


def canonical_client_address(raw: str) -> str:
    """The address a client is counted under: IPv4 as itself (also when IPv4-mapped), IPv6 by its /64.

    One IPv6 host usually holds a whole /64, so counting single IPv6 addresses would let it sign
    in from 2**64 fresh counters.
    """
    try:
        address = ipaddress.ip_address((raw or "").strip().split("%", 1)[0])
    except ValueError:
        return (raw or "").strip().lower() or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


# -- names that become folders on disk ---------------------------------------------------------


def check_path_name(name: str, *, field: str, what: str = "The name") -> str:
    """Refuse a name that becomes one folder on disk (local part, domain, folder) if it could leave it."""
    from servers.storage import path_name_problem

    problem = "cannot start with a dot" if name.startswith(".") else path_name_problem(name)
    if problem is not None:
        raise RefusedError(f"{what} {problem} (it names a folder on disk).", field=field)
    return name


def check_home_dir_text(raw: object, *, field: str = "home_dir") -> None:
    """Refuse a home directory with `..` components or control characters before it is resolved."""
    import re
    from pathlib import PurePath

    text = str(raw)
    if re.search(r"[\x00-\x1f\x7f]", text):
        raise RefusedError(gettext("A home directory cannot contain control characters."), field=field)
    if ".." in PurePath(text).parts:
        raise RefusedError(gettext("A home directory cannot contain '..' components."), field=field)
