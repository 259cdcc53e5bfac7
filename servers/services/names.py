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


# -- names that become folders on disk ---------------------------------------------------------


def check_path_name(name: str, *, field: str, what: str = "The name") -> str:
    """Refuse a name that becomes one folder on disk (local part, domain, folder) if it could leave it."""
    from servers.storage import path_name_problem

    problem = "cannot start with a dot" if name.startswith(".") else path_name_problem(name)
    if problem is not None:
        raise DomainError(f"{what} {problem} (it names a folder on disk).", field=field)
    return name


def check_home_dir_text(raw: object, *, field: str = "home_dir") -> None:
    """Refuse a home directory with `..` components or control characters before it is resolved."""
    import re
    from pathlib import PurePath

    text = str(raw)
    if re.search(r"[\x00-\x1f\x7f]", text):
        raise DomainError("A home directory cannot contain control characters.", field=field)
    if ".." in PurePath(text).parts:
        raise DomainError("A home directory cannot contain '..' components.", field=field)
