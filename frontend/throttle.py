"""Login throttling: failed sign-ins counted per client address and per username in the cache.

A username or an address that failed too often is refused until the lockout window passes,
even with the right password, so guessing cannot continue from many addresses at one user or
from one address at many users.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache

log = logging.getLogger(__name__)


def _cache() -> BaseCache:
    return caches["console"] if "console" in settings.CACHES else caches["default"]


def _key(kind: str, value: str) -> str:
    digest = hashlib.sha256(value.strip().lower().encode()).hexdigest()[:32]
    return f"login-failures:{kind}:{digest}"


@dataclass(frozen=True)
class LoginThrottle:
    """The failure counters of one sign-in attempt: its client address and the username typed."""

    client_address: str
    username: str

    def _keys(self) -> list[tuple[str, int]]:
        return [
            (_key("address", self.client_address), settings.CONSOLE_LOGIN_FAILURES_PER_ADDRESS),
            (_key("username", self.username), settings.CONSOLE_LOGIN_FAILURES_PER_USERNAME),
        ]

    def is_locked_out(self) -> bool:
        try:
            counts = _cache().get_many([key for key, _ in self._keys()])
        except Exception as exc:  # cache down: do not lock everybody out of the console
            log.warning("login throttle unavailable: %s", exc)
            return False
        return any(counts.get(key, 0) >= limit for key, limit in self._keys())

    def record_failure(self) -> None:
        cache = _cache()
        try:
            for key, _ in self._keys():
                if cache.add(key, 1, timeout=settings.CONSOLE_LOGIN_LOCKOUT_S):
                    continue
                try:
                    cache.incr(key)
                except ValueError:  # expired between add() and incr()
                    cache.add(key, 1, timeout=settings.CONSOLE_LOGIN_LOCKOUT_S)
        except Exception as exc:
            log.warning("login throttle unavailable: %s", exc)

    def record_success(self) -> None:
        try:
            _cache().delete(_key("username", self.username))
        except Exception as exc:
            log.warning("login throttle unavailable: %s", exc)


def lockout_minutes() -> int:
    return max(1, settings.CONSOLE_LOGIN_LOCKOUT_S // 60)
