"""Console sign-in throttling, on the shared sign-in guard (servers/services/signin_guard.py).

A user name or an address that failed too often is refused until the lockout window passes,
even with the right password, so guessing cannot continue from many addresses at one user or
from one address at many users. The attempt is reserved atomically before the password is
checked, so parallel guesses cannot slip past the limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings

from servers.services import signin_guard


@dataclass
class LoginThrottle:
    """One console (or Django admin) sign-in attempt: ask `is_locked_out()` first, then record the result."""

    client_address: str
    username: str
    _attempt: signin_guard.Attempt | None = field(default=None, repr=False)

    def is_locked_out(self) -> bool:
        """Reserve this attempt; True when the user name or the address is over its limit."""
        self._attempt = signin_guard.reserve_console_sign_in(self.username, self.client_address)
        return not self._attempt.allowed

    def record_failure(self) -> None:
        if self._attempt is None:
            self.is_locked_out()
        if self._attempt is not None:
            self._attempt.failed()

    def record_success(self) -> None:
        if self._attempt is not None:
            self._attempt.succeeded()


def lockout_minutes() -> int:
    return max(1, settings.CONSOLE_LOGIN_LOCKOUT_S // 60)
