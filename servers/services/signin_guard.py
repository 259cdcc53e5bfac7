"""One guard for every sign-in: failed attempts counted per identity and per client, in Redis.

Each face (SMTP AUTH, POP3, webmail, the console, the Django admin, and IMAP to come) asks
`reserve()` *before* it checks a password. The reservation is one atomic Redis script: if any
counter is at its limit the attempt is refused without touching the password hash; otherwise
every counter goes up by one at once. A success gives its reservation back, a failure keeps it.
So a burst of parallel guesses cannot all be checked against a limit that each of them read
as "not reached yet" (check-then-count), and the counters are shared by every worker process
and every protocol: ten guesses through POP3 and ten through SMTP are twenty guesses.

Identities are canonical before they are counted (`canonical_mailbox_identity`): `User@Dom.`,
`user@dom` and the IDNA spellings of a domain share one counter. If Redis is down the guard
lets attempts through (and says so in the log): a cache outage must not lock every user out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import unicodedata
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import redis
from django.conf import settings

from servers.livestate import redis_client

from .errors import RefusedError
from .names import canonical_client_address

log = logging.getLogger("mailconsole.signin")

KEY_PREFIX = "mailconsole:signin:"
# Failures an identity or client may have before failure replies slow down (workers only).
FREE_FAILURES = 3

# KEYS: the counters; ARGV: their limits, then their windows. Refuse if any counter is at its
# limit (counting nothing); otherwise count the attempt on every counter and give back the
# highest count seen before it. A counter lives `window` seconds after its last counted failure.
_RESERVE_SCRIPT = """
local n = #KEYS
local prior = 0
for i = 1, n do
  local count = tonumber(redis.call('GET', KEYS[i]) or '0')
  if count >= tonumber(ARGV[i]) then
    return {0, count}
  end
  if count > prior then prior = count end
end
for i = 1, n do
  redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[n + i]))
end
return {1, prior}
"""

# Give one reservation back, never below zero.
_RELEASE_SCRIPT = """
for i = 1, #KEYS do
  local count = tonumber(redis.call('GET', KEYS[i]) or '0')
  if count > 0 then redis.call('DECR', KEYS[i]) end
end
return 1
"""


@dataclass(frozen=True)
class Counter:
    """One thing failures are counted against: `kind` and `value` name it, `limit` per `window_s`."""

    kind: str
    value: str
    limit: int
    window_s: int

    @property
    def key(self) -> str:
        digest = hashlib.sha256(self.value.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return f"{KEY_PREFIX}{self.kind}:{digest}"


@dataclass
class Attempt:
    """A reserved (or refused) sign-in attempt. Call `succeeded()` or `failed()` once it is checked."""

    allowed: bool
    prior_failures: int
    counters: tuple[Counter, ...] = field(default_factory=tuple)
    counted: bool = False

    @property
    def failure_delay_s(self) -> float:
        """How long a worker waits before it answers this attempt's failure (an asyncio sleep)."""
        excess = self.prior_failures - FREE_FAILURES
        return 0.0 if excess < 0 else min(0.5 * 2**excess, settings.MAILBOX_SIGNIN_MAX_DELAY_MS / 1000)

    def succeeded(self) -> None:
        """Give the reservation back: a right password is not a failure."""
        if not self.counted:
            return
        self.counted = False
        try:
            _scripts()[1](keys=[c.key for c in self.counters])
        except (redis.RedisError, OSError) as exc:
            log.warning("sign-in guard unavailable, cannot release a reservation: %s", exc)

    def failed(self) -> None:
        """Keep the reservation: it was a failure, and it was counted when reserved."""
        self.counted = False


class ClientSlots:
    """At most `per_client` password checks at once per client address, in one worker process.

    The thread pool that checks hashes is shared by every session of the process: one address
    guessing over many connections must not take all of it and stall everybody else's sign-in.
    """

    def __init__(self, per_client: int = 2) -> None:
        self.per_client = per_client
        # A semaphore lives while someone holds or waits for it.
        self._slots: weakref.WeakValueDictionary[str, asyncio.Semaphore] = weakref.WeakValueDictionary()

    @contextlib.asynccontextmanager
    async def hold(self, client_address: str) -> AsyncIterator[None]:
        key = canonical_client_address(client_address)
        slots = self._slots.get(key)
        if slots is None:
            slots = self._slots[key] = asyncio.Semaphore(self.per_client)
        async with slots:
            yield


@functools.cache
def _client() -> redis.Redis:
    # One client and connection pool per process, shared by the sign-in threads.
    return redis_client()


@functools.cache
def _scripts():
    client = _client()
    return client.register_script(_RESERVE_SCRIPT), client.register_script(_RELEASE_SCRIPT)


def reserve(counters: list[Counter] | tuple[Counter, ...]) -> Attempt:
    """Count one attempt on every counter at once, or refuse it if any counter is at its limit."""
    counters = tuple(counters)
    try:
        allowed, prior = _scripts()[0](
            keys=[c.key for c in counters],
            args=[max(0, c.limit) for c in counters] + [max(1, c.window_s) for c in counters],
        )
    except (redis.RedisError, OSError) as exc:
        log.warning("sign-in guard unavailable, attempt not counted: %s", exc)
        return Attempt(allowed=True, prior_failures=0, counters=counters, counted=False)
    if not allowed:
        log.info("sign-in refused without a check: %s over its limit", ", ".join(c.kind for c in counters))
    return Attempt(allowed=bool(allowed), prior_failures=int(prior), counters=counters, counted=bool(allowed))


def canonical_mailbox_identity(typed: str) -> str:
    """The one spelling of a mailbox address a failure is counted under.

    `User@Dom.` and `user@xn--d1acufc.xn--p1ai` count as their canonical address. A name that is
    no valid address still gets a stable (lowercased) key: it can never sign in anyway.
    """
    from .mailboxes import split_address  # mailboxes imports this module's callers

    text = unicodedata.normalize("NFKC", (typed or "").strip())
    try:
        local_part, domain = split_address(text)
    except RefusedError:
        return "invalid:" + text.casefold()
    return f"{local_part}@{domain}"


def canonical_console_username(typed: str) -> str:
    """Console user names counted case-insensitively after the NFKC folding Django's forms apply."""
    return unicodedata.normalize("NFKC", (typed or "").strip()).casefold()


def mailbox_counters(identity: str, client_address: str, *extra: Counter) -> list[Counter]:
    """The counters of a mailbox sign-in, shared by SMTP AUTH, POP3, webmail and IMAP."""
    window = settings.MAILBOX_SIGNIN_LOCKOUT_S
    return [
        Counter("mailbox", canonical_mailbox_identity(identity), settings.MAILBOX_SIGNIN_FAILURES_PER_MAILBOX, window),
        Counter(
            "mailbox-client",
            canonical_client_address(client_address),
            settings.MAILBOX_SIGNIN_FAILURES_PER_CLIENT,
            window,
        ),
        *extra,
    ]


def console_counters(username: str, client_address: str) -> list[Counter]:
    """The counters of a console (and Django admin) sign-in."""
    window = settings.CONSOLE_LOGIN_LOCKOUT_S
    return [
        Counter(
            "console-user", canonical_console_username(username), settings.CONSOLE_LOGIN_FAILURES_PER_USERNAME, window
        ),
        Counter(
            "console-client",
            canonical_client_address(client_address),
            settings.CONSOLE_LOGIN_FAILURES_PER_ADDRESS,
            window,
        ),
    ]


def reserve_mailbox_sign_in(identity: str, client_address: str, *extra: Counter) -> Attempt:
    return reserve(mailbox_counters(identity, client_address, *extra))


def reserve_console_sign_in(username: str, client_address: str) -> Attempt:
    return reserve(console_counters(username, client_address))


def forget_all() -> None:
    """Drop every counter (tests, and `manage.py` after an incident)."""
    client = _client()
    for key in client.scan_iter(match=f"{KEY_PREFIX}*", count=500):
        client.delete(key)
