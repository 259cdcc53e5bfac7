"""DNS answers as plain values, and the one place that asks DNS for them (dnspython's async resolver).

`Lookups` is what the pure checks of `dns_readiness` read: the answers fetched so far, noting every
(name, type) asked for that is not among them. `fetch` asks a resolver many questions at once and
gives every one an `Answer` by a deadline.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import dns.exception
import dns.resolver
from django.utils.translation import gettext as _

Query = tuple[str, str]  # (name: lowercase, no trailing dot; record type)


@dataclass(frozen=True)
class Answer:
    """What DNS said about one (name, type): its records as text, none (NXDOMAIN, no data), or why it could not say.

    Records read as in a zone file without the owner: A/AAAA an address, MX "10 mx.example.org",
    SRV "0 1 993 imap.example.org", TXT the strings joined, PTR/CNAME the target (names without a
    trailing dot, lowercase).
    """

    records: tuple[str, ...] = ()
    error: str = ""


TIMEOUT = Answer(error="timeout")


def canonical_name(name: str) -> str:
    return name.lower().rstrip(".")


def fqdn(name: str) -> str:
    return canonical_name(name) + "."


class Lookups:
    """The answers so far; asking for one that is not there notes it as wanted and reads as a timeout."""

    def __init__(self, answers: Mapping[Query, Answer]) -> None:
        self.answers = answers
        self.wanted: set[Query] = set()

    def ask(self, name: str, rdtype: str) -> Answer:
        query = (canonical_name(name), rdtype)
        answer = self.answers.get(query)
        if answer is None:
            self.wanted.add(query)
            return TIMEOUT
        return answer

    def addresses(self, name: str) -> tuple[list[str], str]:
        """A and AAAA of `name`, and the first error of the two ("" if both answered)."""
        found: list[str] = []
        errors = []
        for rdtype in ("A", "AAAA"):
            answer = self.ask(name, rdtype)
            found += answer.records
            if answer.error:
                errors.append(answer.error)
        return found, errors[0] if errors else ""


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def mx_hosts(lookups: Lookups, domain: str) -> tuple[list[tuple[int, str]], str]:
    answer = lookups.ask(domain, "MX")
    hosts = []
    for record in answer.records:
        preference, _sep, host = record.partition(" ")
        hosts.append((int(preference) if preference.isdigit() else 0, canonical_name(host)))
    return sorted(hosts), answer.error


def _record_text(rdtype: str, rdata) -> str:
    if rdtype == "TXT":
        return b"".join(rdata.strings).decode("utf-8", "replace")
    if rdtype == "MX":
        return f"{rdata.preference} {canonical_name(rdata.exchange.to_text()) or '.'}"
    if rdtype == "SRV":
        return f"{rdata.priority} {rdata.weight} {rdata.port} {canonical_name(rdata.target.to_text()) or '.'}"
    if rdtype in ("PTR", "CNAME"):
        return canonical_name(rdata.target.to_text())
    return rdata.to_text()


async def fetch(resolver, queries: Iterable[Query], deadline: float) -> dict[Query, Answer]:
    """Ask `resolver` (a dns.asyncresolver.Resolver) every query at once; by `deadline` (loop time) at the latest."""
    loop = asyncio.get_running_loop()

    async def one(query: Query) -> Answer:
        name, rdtype = query
        remaining = deadline - loop.time()
        if remaining <= 0:
            return TIMEOUT
        try:
            answer = await resolver.resolve(name + ".", rdtype, search=False, lifetime=remaining)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return Answer()
        except dns.exception.Timeout:
            return TIMEOUT
        except dns.resolver.NoNameservers as error:
            return Answer(error=_no_nameservers(error))
        except dns.exception.DNSException as error:
            return Answer(error=str(error) or type(error).__name__)
        return Answer(records=tuple(_record_text(rdtype, rdata) for rdata in answer))

    wanted = sorted(set(queries))
    tasks = {query: asyncio.ensure_future(one(query)) for query in wanted}
    if not tasks:
        return {}
    await asyncio.wait(tasks.values(), timeout=max(0.0, deadline - loop.time()) + 0.1)
    results = {}
    for query, task in tasks.items():
        if task.done() and not task.cancelled() and task.exception() is None:
            results[query] = task.result()
        else:
            task.cancel()
            results[query] = TIMEOUT
    return results


def _no_nameservers(error) -> str:
    """SERVFAIL, REFUSED or an unreachable server, in a few words."""
    text = str(error)
    for word in ("SERVFAIL", "REFUSED"):
        if word in text:
            return word
    if "refused" in text.lower() or "Errno 111" in text:
        return _("the DNS server refused the connection")
    return _("no DNS server answered")


class EveryAnswer(dict):
    """The same answer to every query (when no resolver could be made)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__()
        self.answer = answer

    def get(self, key, default=None):
        return self.answer
