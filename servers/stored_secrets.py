"""Secrets MailConsole must use on someone else's behalf (smart-host passwords, DKIM private keys),
encrypted at rest.

They are stored as `fernet:<token>` under `settings.SECRETS_KEYS` (the first encrypts; every one
decrypts, so a key can be rotated) and decrypted only where they are used: the delivery client, just
before AUTH, and the delivery engine's DKIM signing. Nothing shows them back.
"""

from __future__ import annotations

import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

PREFIX = "fernet:"
# What a form or the API accepts; the stored token is longer.
MAX_SECRET_LENGTH = 255


class SecretUnreadableError(Exception):
    """A stored secret that the configured keys cannot decrypt (a lost or changed key)."""


@functools.cache
def _box(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _current_box() -> MultiFernet:
    return _box(tuple(settings.SECRETS_KEYS))


def is_concealed(stored: str) -> bool:
    return (stored or "").startswith(PREFIX)


def conceal(plaintext: str) -> str:
    """What to store for `plaintext`: "" stays "" (no secret), anything else becomes a token."""
    if not plaintext:
        return ""
    return PREFIX + _current_box().encrypt(plaintext.encode("utf-8")).decode("ascii")


def reveal(stored: str) -> str:
    """The plaintext of a stored secret; only the code that sends it calls this."""
    if not stored:
        return ""
    if not is_concealed(stored):
        raise SecretUnreadableError("the stored secret is not encrypted")
    try:
        return _current_box().decrypt(stored[len(PREFIX) :].encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError, UnicodeError):
        raise SecretUnreadableError(
            "the stored secret cannot be decrypted with MAILCONSOLE_SECRETS_KEY or var/secrets_key "
            "(was the key changed or lost? enter the password again)"
        ) from None
