"""What a signed-in mailbox has sent lately, counted in Redis for the outbound abuse limits.

Per canonical mailbox address and server: messages in the current hour and day (fixed windows,
keys that expire with their window), new recipients today, and the set of recipients it has ever
written to (hashed, bounded: at most KNOWN_MAX entries, kept KNOWN_TTL_S after the last write).
The decision is `smtp_policy.outbound_limit_exceeded`; blocking and release are in
`servers.services.outbound_limits`. Redis down: nothing is counted and nothing is blocked (fail
open, logged once), as greylisting does.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

PREFIX = "mailconsole:outbound:"
HOUR_S = 3600
DAY_S = 86400
KNOWN_MAX = 10000
KNOWN_TTL_S = 180 * DAY_S


def counter_keys(server_id: int, address: str, now: float) -> tuple[str, str, str, str]:
    """Redis keys of (this hour's messages, today's messages, today's new recipients, known recipients)."""
    base = f"{PREFIX}{server_id}:{address.lower()}"
    hour, day = int(now // HOUR_S), int(now // DAY_S)
    return f"{base}:h:{hour}", f"{base}:d:{day}", f"{base}:n:{day}", f"{base}:known"


def recipient_digest(recipient: str) -> str:
    return hashlib.sha256(recipient.lower().encode("utf-8", "surrogateescape")).hexdigest()[:20]


class Sent(NamedTuple):
    """The mailbox's figures with one more message counted."""

    messages_this_hour: int
    messages_today: int
    new_recipients_today: int


class OutboundCounters:
    def __init__(self, redis: aioredis.Redis | None, *, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.clock = clock
        self._down_logged = False

    @property
    def enabled(self) -> bool:
        """Without Redis (in-process tests, tools) the limits are not applied at all."""
        return self.redis is not None

    async def count_message(self, server_id: int, address: str, recipients: Iterable[str]) -> Sent | None:
        """Count one message to `recipients` (new ones are remembered); None when Redis is unavailable."""
        if self.redis is None:
            return None
        now = self.clock()
        hour_key, day_key, new_key, known_key = counter_keys(server_id, address, now)
        digests = list(dict.fromkeys(recipient_digest(r) for r in recipients))
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(hour_key)
                pipe.expire(hour_key, HOUR_S + 60)
                pipe.incr(day_key)
                pipe.expire(day_key, DAY_S + 60)
                if digests:
                    pipe.sadd(known_key, *digests)
                else:
                    pipe.scard(known_key)
                pipe.expire(known_key, KNOWN_TTL_S)
                in_hour, _, in_day, _, added, _ = await pipe.execute()
            added = int(added) if digests else 0
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incrby(new_key, added)
                pipe.expire(new_key, DAY_S + 60)
                pipe.scard(known_key)
                new_today, _, known = await pipe.execute()
            if int(known) > KNOWN_MAX:
                await self.redis.spop(known_key, int(known) - KNOWN_MAX)
        except (RedisError, OSError, ValueError) as exc:
            if not self._down_logged:
                self._down_logged = True
                log.warning("outbound limits: Redis unavailable (%s); counting nothing until it is back", exc)
            return None
        self._down_logged = False
        return Sent(int(in_hour), int(in_day), int(new_today))
