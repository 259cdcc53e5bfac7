"""The I/O of the Anti-spam tab for the SMTP adapter: DNSBL lookups and the greylist in Redis.

The decisions are pure functions of `servers.smtp_policy` (`dnsbl_refusal`, `greylist_decision`);
this module only asks DNS and Redis, with a time box, and fails open: a lookup that times out or a
Redis that is down never refuses mail. Each kind of failure is logged once until it recovers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence

import dns.asyncresolver
import dns.exception
import dns.resolver
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from servers.inbound_auth import InboundAuth
from servers.smtp_policy import (
    GREYLIST_PASS_S,
    GREYLIST_RETRY_WINDOW_S,
    dnsbl_answer_lists,
    dnsbl_query_name,
    greylist_decision,
    greylist_triplet,
)

log = logging.getLogger(__name__)

# All of a client's DNSBL lookups together take at most this long; what has not answered by then
# counts as "not listed".
DNSBL_TIMEOUT_S = 2.0
# How long one zone's answer about one address is kept in the worker.
DNSBL_CACHE_S = 300
DNSBL_CACHE_MAX = 10000
GREYLIST_PREFIX = "mailconsole:greylist:"
# How long a worker remembers a passed triplet without asking Redis again, and how many it remembers.
GREYLIST_KNOWN_S = 300
GREYLIST_KNOWN_MAX = 50000


def greylist_keys(server_id: int, triplet: str) -> tuple[str, str]:
    """Redis keys of a triplet's first attempt and of its pass (epoch seconds); the triplet is hashed
    so that no address the client typed becomes part of a key."""
    digest = hashlib.sha256(triplet.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"{GREYLIST_PREFIX}{server_id}:seen:{digest}", f"{GREYLIST_PREFIX}{server_id}:pass:{digest}"


def make_resolver(dns_server: str, *, timeout_s: float = DNSBL_TIMEOUT_S) -> dns.asyncresolver.Resolver:
    """An async resolver asking `dns_server` ("ip", "ip:port", "[v6]:port"), or the system's when empty."""
    if dns_server:
        from servers.delivery.routing import parse_dns_server

        resolver = dns.asyncresolver.Resolver(configure=False)
        address, port = parse_dns_server(dns_server)
        resolver.nameservers = [address]
        resolver.port = port
    else:
        resolver = dns.asyncresolver.Resolver()
    resolver.lifetime = timeout_s
    resolver.timeout = timeout_s
    return resolver


class InboundChecks:
    """One worker's DNSBL cache and greylist store; `clock` gives epoch seconds (tests move it)."""

    def __init__(self, redis: aioredis.Redis | None, *, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.clock = clock
        # (zone, client address) -> (listed, expires at on the monotonic clock)
        self._dnsbl_cache: dict[tuple[str, str], tuple[bool, float]] = {}
        self._resolvers: dict[str, dns.asyncresolver.Resolver] = {}
        self._dns_failing: set[str] = set()
        self._redis_down_logged = False
        # pass key -> until when (on `clock`) this worker trusts that the triplet passed
        self._known_passes: dict[str, float] = {}
        # SPF, DKIM and DMARC lookups (their cache and resolvers).
        self.auth = InboundAuth()

    # -- DNSBL ------------------------------------------------------------------------------------
    async def listed_zones(self, client_ip: str, zones: Sequence[str], dns_server: str) -> tuple[str, ...]:
        """The zones that list `client_ip`, asked in parallel within DNSBL_TIMEOUT_S, cached DNSBL_CACHE_S."""
        now = time.monotonic()
        listed: dict[str, bool] = {}
        to_ask: dict[str, str] = {}
        for zone in zones:
            cached = self._dnsbl_cache.get((zone, client_ip))
            if cached is not None and cached[1] > now:
                listed[zone] = cached[0]
                continue
            name = dnsbl_query_name(client_ip, zone)
            if name is not None:
                to_ask[zone] = name
        if to_ask:
            resolver = self._resolvers.get(dns_server)
            if resolver is None:
                resolver = self._resolvers[dns_server] = make_resolver(dns_server)
            tasks = {zone: asyncio.ensure_future(self._ask(resolver, zone, name)) for zone, name in to_ask.items()}
            done, pending = await asyncio.wait(tasks.values(), timeout=DNSBL_TIMEOUT_S)
            for task in pending:
                task.cancel()
            if len(self._dnsbl_cache) > DNSBL_CACHE_MAX:
                self._dnsbl_cache.clear()
            for zone, task in tasks.items():
                if task not in done:
                    self._note_dns_failure(zone, "no answer within the time limit")
                elif task.exception() is not None:
                    self._note_dns_failure(zone, f"{type(task.exception()).__name__}: {task.exception()}")
                elif task.result() is not None:
                    listed[zone] = bool(task.result())
                    self._dnsbl_cache[(zone, client_ip)] = (listed[zone], now + DNSBL_CACHE_S)
        return tuple(zone for zone in zones if listed.get(zone))

    async def _ask(self, resolver: dns.asyncresolver.Resolver, zone: str, name: str) -> bool | None:
        """Whether the zone lists the name's address; None if the lookup failed."""
        try:
            answer = await resolver.resolve(name, "A")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            self._dns_failing.discard(zone)
            return False
        except (dns.exception.DNSException, OSError) as exc:
            self._note_dns_failure(zone, f"{type(exc).__name__}: {exc}")
            return None
        self._dns_failing.discard(zone)
        return dnsbl_answer_lists(record.to_text() for record in answer)

    def _note_dns_failure(self, zone: str, reason: str) -> None:
        if zone not in self._dns_failing:
            self._dns_failing.add(zone)
            log.warning("DNSBL %s: lookup failed (%s); clients pass unchecked until it answers", zone, reason)

    # -- greylisting --------------------------------------------------------------------------------
    async def greylisted(self, server_id: int, client_ip: str, sender: str, recipient: str, delay_s: int) -> bool:
        """Whether to defer this RCPT now; records first attempts and passes in Redis (SET NX for the first)."""
        if self.redis is None:
            return False
        seen_key, pass_key = greylist_keys(server_id, greylist_triplet(client_ip, sender, recipient))
        now = self.clock()
        # A known triplet (passed for 36 days) is answered from memory for a while: no Redis round
        # trip for every RCPT of a regular correspondent.
        if self._known_passes.get(pass_key, 0.0) > now:
            return False
        try:
            first_seen, passed_until = await self.redis.mget(seen_key, pass_key)
            decision = greylist_decision(
                None if first_seen is None else float(first_seen),
                None if passed_until is None else float(passed_until),
                now=now,
                delay_s=delay_s,
            )
            window_s = int(GREYLIST_RETRY_WINDOW_S + 60)
            if decision.record_first_seen:
                if first_seen is None:
                    # Two sessions racing on a new triplet: the first attempt's time wins.
                    await self.redis.set(seen_key, repr(now), nx=True, ex=window_s)
                else:
                    await self.redis.set(seen_key, repr(now), ex=window_s)
            if decision.record_pass:
                await self.redis.set(pass_key, repr(now + GREYLIST_PASS_S), ex=GREYLIST_PASS_S)
            if not decision.deferred:
                if len(self._known_passes) > GREYLIST_KNOWN_MAX:
                    self._known_passes.clear()
                self._known_passes[pass_key] = now + GREYLIST_KNOWN_S
        except (RedisError, OSError, ValueError) as exc:
            if not self._redis_down_logged:
                self._redis_down_logged = True
                log.warning("greylisting: Redis unavailable (%s); accepting without greylisting", exc)
            return False
        self._redis_down_logged = False
        return decision.deferred
