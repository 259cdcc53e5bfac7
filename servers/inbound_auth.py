"""The I/O of SPF, DKIM and DMARC on incoming mail: cached, asynchronous, time-boxed DNS.

The evaluations are pure (servers.spf, servers.message_auth; the decisions servers.smtp_policy's
`spf_refusal` and `dmarc_refusal`); this module asks DNS for them and runs dkimpy off the loop.

The rules (README, "Anti-spam"):

- Every lookup goes to the server's resolver (the Delivery tab's DNS server, else
  MAILCONSOLE_DNS_SERVER, else the system's: `inbound_checks.make_resolver`) through dnspython's
  asyncresolver; nothing blocks the event loop. dkimpy is synchronous: the keys of a message's
  signatures are fetched first, asynchronously, and dkimpy gets a lookup function that only reads
  those answers; it runs in a thread (hashing a large body takes time).
- Answers are cached in the worker (their TTL, at most 5 minutes; a missing name 1 minute; a
  failed lookup TEMPERROR_CACHE_S, so the next messages of a session do not wait for it again).
- Time box: each of the two steps waits at most AUTH_TIMEOUT_S for DNS: SPF at MAIL, and at the end
  of DATA the DKIM keys and the DMARC records (of the From: domain and of its organisational
  domain), asked all at once. What has not answered by then is a temperror. So a dead DNS server
  delays a message by at most 2 x AUTH_TIMEOUT_S, and the further messages of its session hardly
  at all (the failures are cached). Why not one box for the whole session: a sender whose own
  SPF record answers slowly would spend it at MAIL, and a forged From: of a p=reject domain would
  then get dmarc=temperror and pass; with a box of its own, DMARC always gets its full time.
- Fail open: temperror never refuses mail. SPF temperror is accepted (even with spf_action=reject),
  a DKIM key that could not be fetched is dkim=temperror, a DMARC record that could not be fetched
  (or an SPF/DKIM temperror when nothing aligned passed) is dmarc=temperror and no policy is
  applied; the Authentication-Results header says temperror. Each failing DNS server is logged
  once until it answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time

import dkim
import dkim.util
import dns.asyncresolver
import dns.exception
import dns.resolver

from servers.message_auth import (
    DkimResult,
    DmarcOutcome,
    dmarc_outcome,
    from_domain,
    organizational_domain,
    parse_dmarc_record,
)
from servers.spf import Lookup, SpfResult, SpfTempError, check_host

log = logging.getLogger(__name__)

# SPF (at MAIL) waits at most this long for DNS; DKIM keys and DMARC records (after DATA) as well.
AUTH_TIMEOUT_S = 2.0
ANSWER_CACHE_MAX_S = 300
MISSING_CACHE_S = 60
TEMPERROR_CACHE_S = 15
CACHE_MAX_ENTRIES = 20000
MAX_SIGNATURES = 5  # signatures verified per message; more is a cost, not a help


def _record_texts(answer: dns.resolver.Answer, rdtype: str) -> list[str]:
    texts: list[str] = []
    for record in answer:
        if rdtype == "TXT":
            texts.append(b"".join(record.strings).decode("utf-8", "replace"))
        elif rdtype in ("A", "AAAA"):
            texts.append(record.address)
        elif rdtype == "MX":
            texts.append(record.exchange.to_text(omit_final_dot=True).lower())
        else:  # PTR
            texts.append(record.target.to_text(omit_final_dot=True).lower())
    return texts


class InboundAuth:
    """One worker's SPF/DKIM/DMARC lookups: resolvers per DNS server and the answer cache."""

    def __init__(self) -> None:
        self._resolvers: dict[str, dns.asyncresolver.Resolver] = {}
        # (dns server, name, rdtype) -> (records, or the reason it failed; expires at, monotonic)
        self._cache: dict[tuple[str, str, str], tuple[list[str] | str, float]] = {}
        self._failing: set[str] = set()

    # -- DNS -----------------------------------------------------------------------------------------
    def lookup_for(self, dns_server: str) -> Lookup:
        """A lookup function for one step: cached answers, else the resolver until AUTH_TIMEOUT_S from now."""
        deadline = time.monotonic() + AUTH_TIMEOUT_S

        async def lookup(name: str, rdtype: str) -> list[str]:
            key = (dns_server, name.lower(), rdtype)
            cached = self._cache.get(key)
            if cached is not None and cached[1] > time.monotonic():
                if isinstance(cached[0], str):
                    raise SpfTempError(cached[0])
                return cached[0]
            if len(self._cache) > CACHE_MAX_ENTRIES:
                self._cache.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SpfTempError(f"{rdtype} {name}: no time left")
            try:
                records, ttl = await self._resolve(dns_server, name, rdtype, remaining)
            except SpfTempError as error:
                self._cache[key] = (str(error), time.monotonic() + TEMPERROR_CACHE_S)
                raise
            self._cache[key] = (records, time.monotonic() + ttl)
            return records

        return lookup

    async def _resolve(self, dns_server: str, name: str, rdtype: str, timeout_s: float) -> tuple[list[str], float]:
        resolver = self._resolvers.get(dns_server)
        if resolver is None:
            from servers.inbound_checks import make_resolver

            resolver = self._resolvers[dns_server] = make_resolver(dns_server, timeout_s=AUTH_TIMEOUT_S)
        try:
            answer = await asyncio.wait_for(resolver.resolve(name, rdtype, search=False), timeout_s)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.YXDOMAIN):
            self._recovered(dns_server)
            return [], MISSING_CACHE_S
        except (TimeoutError, dns.exception.DNSException, OSError) as error:
            reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            if dns_server not in self._failing:
                self._failing.add(dns_server)
                log.warning(
                    "SPF/DKIM/DMARC: DNS lookup %s %s failed (%s); such results are temperror and mail is accepted",
                    rdtype,
                    name,
                    reason,
                )
            raise SpfTempError(f"{rdtype} {name}: {reason}") from None
        self._recovered(dns_server)
        ttl = answer.rrset.ttl if answer.rrset is not None else MISSING_CACHE_S
        return _record_texts(answer, rdtype), max(1, min(ttl, ANSWER_CACHE_MAX_S))

    def _recovered(self, dns_server: str) -> None:
        self._failing.discard(dns_server)

    # -- SPF ---------------------------------------------------------------------------------------------
    async def spf(self, client_ip: str, mail_from: str, helo: str, dns_server: str) -> tuple[SpfResult, str]:
        """check_host of MAIL FROM, or of the HELO name for the null sender; and which identity it was."""
        lookup = self.lookup_for(dns_server)
        if mail_from:
            domain = mail_from.rpartition("@")[2]
            return await check_host(client_ip, domain, mail_from, helo=helo, lookup=lookup), "mailfrom"
        helo_name = helo.strip().strip("[]")
        return await check_host(client_ip, helo_name, f"postmaster@{helo_name}", helo=helo, lookup=lookup), "helo"

    # -- DKIM and DMARC, after DATA -----------------------------------------------------------------------
    async def dkim_and_dmarc(
        self, message: bytes, spf: SpfResult | None, dns_server: str, *, sample: int
    ) -> tuple[list[DkimResult], DmarcOutcome]:
        """Every DKIM signature's result (up to MAX_SIGNATURES) and the message's DMARC outcome.

        The signatures' keys and the DMARC records of the From: domain and of its organisational
        domain are asked all at once, in one time box; dkimpy then runs in a thread on those answers.
        """
        lookup = self.lookup_for(dns_server)
        signatures = _signatures(message)
        key_names = sorted(
            {f"{selector}._domainkey.{domain}" for domain, selector in signatures if domain and selector}
        )
        author = from_domain(message)
        dmarc_names: list[str] = []
        if author is not None:
            dmarc_names.append(f"_dmarc.{author}")
            organisation = organizational_domain(author)
            if organisation != author:
                dmarc_names.append(f"_dmarc.{organisation}")
        names = key_names + dmarc_names
        answers = await asyncio.gather(*(lookup(name, "TXT") for name in names), return_exceptions=True)
        found: dict[str, list[str] | BaseException] = dict(zip(names, answers, strict=True))
        dkim_results: list[DkimResult] = []
        if signatures:
            loop = asyncio.get_running_loop()
            dkim_results = await loop.run_in_executor(None, _verify_signatures, message, signatures, found)
        return dkim_results, _dmarc_of(author, dmarc_names, found, spf, dkim_results, sample)


def _dmarc_of(
    author: str | None,
    names: list[str],
    found: dict[str, list[str] | BaseException],
    spf: SpfResult | None,
    dkim_results: list[DkimResult],
    sample: int,
) -> DmarcOutcome:
    """DMARC from the fetched records: the From: domain's, else its organisational domain's (RFC 7489 6.6.3)."""
    for position, name in enumerate(names):
        answer = found[name]
        if isinstance(answer, BaseException):
            return dmarc_outcome(author, None, record_at_org=False, spf=spf, dkim=dkim_results, lookup_failed=True)
        record = parse_dmarc_record(answer)
        if record is not None:
            at_org = position > 0
            return dmarc_outcome(author, record, record_at_org=at_org, spf=spf, dkim=dkim_results, sample=sample)
    return dmarc_outcome(author, None, record_at_org=False, spf=spf, dkim=dkim_results)


def _signatures(message: bytes) -> list[tuple[str, str]]:
    """(d=, s=) of each DKIM-Signature header, in order, at most MAX_SIGNATURES."""
    found: list[tuple[str, str]] = []
    try:
        headers, _ = dkim.rfc822_parse(message)
    except Exception:  # dkimpy's parser raises its own and plain errors on malformed input
        return []
    for name, value in headers:
        if name.lower() != b"dkim-signature":
            continue
        try:
            tags = dkim.util.parse_tag_value(value)
        except dkim.util.InvalidTagValueList:
            found.append(("", ""))
            continue
        domain = tags.get(b"d", b"").decode("ascii", "replace").strip().lower()
        selector = tags.get(b"s", b"").decode("ascii", "replace").strip().lower()
        found.append((domain, selector))
        if len(found) >= MAX_SIGNATURES:
            break
    return found


def _verify_signatures(
    message: bytes, signatures: list[tuple[str, str]], keys: dict[str, list[str] | BaseException]
) -> list[DkimResult]:
    """dkimpy's verdict on each signature, given the prefetched key records (runs in a thread)."""
    verifier = dkim.DKIM(message, logger=logging.getLogger("servers.inbound_auth.dkimpy"))
    results: list[DkimResult] = []
    for index, (domain, selector) in enumerate(signatures):
        if not domain or not selector:
            results.append(DkimResult("permerror", domain, selector, "malformed signature"))
            continue
        name = f"{selector}._domainkey.{domain}"
        answer = keys.get(name)
        if isinstance(answer, BaseException):
            results.append(DkimResult("temperror", domain, selector, "key lookup failed"))
            continue
        records = [text for text in answer or [] if "p=" in text]
        if not records:
            results.append(DkimResult("permerror", domain, selector, "no key"))
            continue
        record = records[0].encode("utf-8", "replace")

        def prefetched(qname: bytes, timeout: float = 5, record: bytes = record) -> bytes:
            return record

        try:
            passed = verifier.verify(idx=index, dnsfunc=prefetched)
        except dkim.DKIMException as error:
            results.append(
                DkimResult("permerror" if "algorithm" in str(error) else "fail", domain, selector, str(error)[:80])
            )
            continue
        except Exception as error:  # dkimpy raises plain errors on odd keys (e.g. ed25519 without PyNaCl)
            results.append(DkimResult("permerror", domain, selector, type(error).__name__))
            continue
        results.append(DkimResult("pass" if passed else "fail", domain, selector, "" if passed else "bad signature"))
    return results


# Used by the DMARC pct= sampling; a function so tests can fix it.
def dmarc_sample() -> int:
    import random

    return random.randrange(100)
