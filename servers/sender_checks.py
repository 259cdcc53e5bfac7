"""The I/O of the sender checks for the SMTP adapter: does MAIL FROM's domain exist, what is the client's name.

The decisions are pure functions of `servers.smtp_policy` (`sender_domain_refusal`,
`ptr_sender_refusal`); this module only asks DNS, time-boxed. Documented rule for DNS trouble:
a lookup that times out or fails (SERVFAIL) accepts the mail -- fail open, as the DNSBL checks do --
and the failure is logged once until that resolver answers again. NXDOMAIN, and a name with no MX
and no A/AAAA, are answers, not failures.
"""

from __future__ import annotations

import asyncio
import logging
import time

import dns.asyncresolver
import dns.exception
import dns.resolver

from servers.dnsutil import forward_confirmed_names
from servers.inbound_checks import make_resolver
from servers.smtp_policy import SenderDomainLookup

log = logging.getLogger(__name__)

# One MAIL's lookups together take at most this long.
SENDER_CHECK_TIMEOUT_S = 2.0
# Answers are kept this long in the worker (a spam run repeats the same domains).
CACHE_S = 300
CACHE_MAX = 10000


class SenderChecks:
    """One worker's resolvers and answer caches for the sender checks."""

    def __init__(self) -> None:
        self._resolvers: dict[str, dns.asyncresolver.Resolver] = {}
        self._domains: dict[str, tuple[SenderDomainLookup, float]] = {}
        self._names: dict[str, tuple[tuple[str, ...], float]] = {}
        self._failing = False

    def _resolver(self, dns_server: str) -> dns.asyncresolver.Resolver:
        resolver = self._resolvers.get(dns_server)
        if resolver is None:
            resolver = self._resolvers[dns_server] = make_resolver(dns_server, timeout_s=SENDER_CHECK_TIMEOUT_S)
        return resolver

    def _note(self, failed: bool, what: str) -> None:
        if failed and not self._failing:
            log.warning("sender checks: DNS did not answer (%s); accepting mail unchecked until it does", what)
        elif not failed and self._failing:
            log.info("sender checks: DNS answers again")
        self._failing = failed

    async def sender_domain(self, domain: str, dns_server: str) -> SenderDomainLookup:
        """Whether `domain` has an MX, A or AAAA record (asked in parallel); `failed` on a timeout."""
        now = time.monotonic()
        cached = self._domains.get(domain)
        if cached is not None and cached[1] > now:
            return cached[0]
        resolver = self._resolver(dns_server)
        tasks = [asyncio.ensure_future(self._has(resolver, domain, rdtype)) for rdtype in ("MX", "A", "AAAA")]
        done, pending = await asyncio.wait(tasks, timeout=SENDER_CHECK_TIMEOUT_S)
        for task in pending:
            task.cancel()
        answers = [task.result() for task in done]
        if any(answer is True for answer in answers):
            lookup = SenderDomainLookup(exists=True)
        elif pending or any(answer is None for answer in answers):
            lookup = SenderDomainLookup(exists=False, failed=True)
        else:
            lookup = SenderDomainLookup(exists=False)
        self._note(lookup.failed, f"sender domain {domain}")
        if not lookup.failed:
            if len(self._domains) > CACHE_MAX:
                self._domains.clear()
            self._domains[domain] = (lookup, now + CACHE_S)
        return lookup

    @staticmethod
    async def _has(resolver: dns.asyncresolver.Resolver, domain: str, rdtype: str) -> bool | None:
        """Whether the name has records of this type; None when DNS did not answer."""
        try:
            answer = await resolver.resolve(domain, rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return False
        except (dns.exception.DNSException, OSError):
            return None
        if rdtype == "MX":
            # RFC 7505: a single "MX 0 ." says the domain takes no mail -- as good as none.
            return any(record.exchange.to_text() != "." for record in answer)
        return len(answer) > 0

    async def client_names(self, client_ip: str, dns_server: str) -> tuple[tuple[str, ...], bool]:
        """The client's forward-confirmed PTR names, and whether DNS failed to answer."""
        now = time.monotonic()
        cached = self._names.get(client_ip)
        if cached is not None and cached[1] > now:
            return cached[0], False
        try:
            names, failed = await asyncio.wait_for(
                forward_confirmed_names(self._resolver(dns_server), client_ip), SENDER_CHECK_TIMEOUT_S
            )
        except TimeoutError:
            names, failed = [], True
        self._note(failed, f"reverse DNS of {client_ip}")
        if not failed:
            if len(self._names) > CACHE_MAX:
                self._names.clear()
            self._names[client_ip] = (tuple(names), now + CACHE_S)
        return tuple(names), failed
