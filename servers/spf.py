"""SPF (RFC 7208): check_host() of a client address against a domain's policy, without I/O of its own.

DNS comes from an injected async `lookup(name, rdtype) -> list[str]` (servers.inbound_auth gives
the worker's cached, time-boxed resolver; tests give a dict): it returns the answer's records as
text (TXT strings joined, A/AAAA addresses, MX and PTR target names), an empty list for NXDOMAIN or
no records (a "void lookup", RFC 7208 4.6.4), and raises `SpfTempError` for a timeout or SERVFAIL.

Covered: every mechanism (all, include, a, mx, ptr, ip4, ip6, exists), the redirect modifier (exp=
is parsed and ignored: we never send the explanation), the limits of 4.6.4 (10 DNS-querying terms,
10 MX or PTR names each, 2 void lookups), and the macros of section 7 that check_host needs
(%{s l o d i h v p}, with digits, "r" and delimiters; %{p} is "unknown", as 7.3 allows; an
upper-case macro letter is expanded like a lower-case one, without URL-encoding, which only exp=
text needs).

Why not pyspf: it resolves through a module-wide synchronous DNS function, so per-server
resolvers, asyncio and a time box would each need monkey-patching; this evaluator is ~330 lines.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Lookup = Callable[[str, str], Awaitable[list[str]]]

RESULTS = ("none", "neutral", "pass", "fail", "softfail", "temperror", "permerror")
MAX_DNS_TERMS = 10  # RFC 7208 4.6.4
MAX_VOID_LOOKUPS = 2
MAX_NAMES_PER_TERM = 10
_QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
_MODIFIER = re.compile(r"^([a-z][a-z0-9_.-]*)=(.*)$", re.IGNORECASE)
_MACRO = re.compile(r"%(?:\{([slodiphcrtv])([0-9]*)(r?)([.\-+,/_=]*)\}|(.))", re.IGNORECASE)


class SpfTempError(Exception):
    """A DNS lookup failed for now (timeout, SERVFAIL): the check's result is temperror."""


class SpfPermError(Exception):
    """The published policy is broken or exceeds a limit: the check's result is permerror."""


@dataclass(frozen=True)
class SpfResult:
    result: str  # one of RESULTS
    domain: str  # the domain checked (MAIL FROM's, or the HELO name's)
    reason: str = ""  # the matching mechanism, or what went wrong


@dataclass
class _Limits:
    dns_terms: int = 0
    void_lookups: int = 0
    depth: int = 0

    def count_term(self) -> None:
        self.dns_terms += 1
        if self.dns_terms > MAX_DNS_TERMS:
            raise SpfPermError(f"more than {MAX_DNS_TERMS} DNS-querying terms")


@dataclass
class _Context:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    sender: str  # local@domain
    helo: str
    lookup: Lookup
    limits: _Limits = field(default_factory=_Limits)

    async def ask(self, name: str, rdtype: str) -> list[str]:
        answer = await self.lookup(name, rdtype)
        if not answer:
            self.limits.void_lookups += 1
            if self.limits.void_lookups > MAX_VOID_LOOKUPS:
                raise SpfPermError(f"more than {MAX_VOID_LOOKUPS} void lookups")
        return answer


def client_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The client's address as SPF sees it: an IPv4-mapped IPv6 address is the IPv4 address (5.)."""
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def valid_domain(domain: str) -> bool:
    """Whether check_host may look the name up (4.3): a multi-label name, labels of 1 to 63 octets,
    not an address."""
    labels = domain.rstrip(".").split(".")
    if len(labels) < 2 or len(domain) > 253 or not all(0 < len(label) <= 63 for label in labels):
        return False
    return not labels[-1].isdigit()  # an address literal (a HELO of [192.0.2.1]) is not a domain


def spf_records(texts: list[str]) -> list[str]:
    """The TXT strings that are SPF records (4.5: "v=spf1" then a space or the end)."""
    return [t for t in texts if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]


async def check_host(ip: str, domain: str, sender: str, *, helo: str, lookup: Lookup) -> SpfResult:
    """The SPF result for `ip` sending as `sender` (local@domain; for the HELO check postmaster@helo)."""
    domain = domain.rstrip(".").lower()
    try:
        address = client_address(ip)
    except ValueError:
        return SpfResult("permerror", domain, "not an IP address")
    if not valid_domain(domain):
        return SpfResult("none", domain, "not a domain name")
    context = _Context(address, sender, helo, lookup)
    try:
        result, reason = await _check(context, domain)
    except SpfTempError as error:
        return SpfResult("temperror", domain, str(error) or "DNS lookup failed")
    except SpfPermError as error:
        return SpfResult("permerror", domain, str(error))
    return SpfResult(result, domain, reason)


async def _check(context: _Context, domain: str) -> tuple[str, str]:
    if context.limits.depth > MAX_DNS_TERMS:  # include/redirect loops end at the term limit anyway
        raise SpfPermError("include or redirect loop")
    if not valid_domain(domain):
        return "none", "not a domain name"
    records = spf_records(await context.lookup(domain, "TXT"))
    if not records:
        return "none", f"no SPF record at {domain}"
    if len(records) > 1:
        raise SpfPermError(f"more than one SPF record at {domain}")
    directives, redirect = _parse(records[0])
    for qualifier, mechanism, argument in directives:
        if await _matches(context, domain, mechanism, argument):
            return _QUALIFIERS[qualifier], f"{qualifier}{mechanism}{':' + argument if argument else ''}".lstrip("+")
    if redirect is not None:
        context.limits.count_term()
        target = _expand(context, redirect, domain)
        context.limits.depth += 1
        result, reason = await _check(context, target)
        context.limits.depth -= 1
        if result == "none":
            raise SpfPermError(f"redirect to {target}, which has no SPF record")
        return result, reason
    return "neutral", "no mechanism matched"


def _parse(record: str) -> tuple[list[tuple[str, str, str]], str | None]:
    """The directives (qualifier, mechanism, argument) and the redirect target of a record (4.6)."""
    directives: list[tuple[str, str, str]] = []
    modifiers: dict[str, str] = {}
    for term in record.split()[1:]:
        modifier = _MODIFIER.match(term)
        if modifier is not None:
            name = modifier.group(1).lower()
            if name in modifiers and name in ("redirect", "exp"):
                raise SpfPermError(f"{name}= appears twice")
            modifiers[name] = modifier.group(2)
            continue
        qualifier = "+"
        if term[0] in _QUALIFIERS:
            qualifier, term = term[0], term[1:]
        name, separator, argument = term.partition(":")
        cidr = ""
        if not separator and "/" in name:
            name, cidr = name.split("/", 1)
            argument = "/" + cidr
        name = name.lower()
        if name not in _MECHANISMS:
            raise SpfPermError(f"unknown mechanism {term!r}")
        if name in ("include", "exists", "ip4", "ip6") and not argument:
            raise SpfPermError(f"{name} needs an argument")
        if name == "all" and argument:
            raise SpfPermError("all takes no argument")
        directives.append((qualifier, name, argument))
    # A record with "all" never reaches its redirect (6.1); keep the redirect only without one.
    redirect = modifiers.get("redirect")
    if any(mechanism == "all" for _, mechanism, _ in directives):
        redirect = None
    if redirect == "":
        raise SpfPermError("redirect= without a domain")
    return directives, redirect


def _split_cidr(argument: str, *, default_v4: int = 32, default_v6: int = 128) -> tuple[str, int, int]:
    """ "domain/24//64" -> ("domain", 24, 64); either length may be missing."""
    v6 = default_v6
    if "//" in argument:
        argument, v6_text = argument.split("//", 1)
        v6 = _prefix(v6_text, 128)
    v4 = default_v4
    if "/" in argument:
        argument, v4_text = argument.split("/", 1)
        v4 = _prefix(v4_text, 32)
    return argument, v4, v6


def _prefix(text: str, maximum: int) -> int:
    if not text.isdigit() or int(text) > maximum or (len(text) > 1 and text.startswith("0")):
        raise SpfPermError(f"bad prefix length /{text}")
    return int(text)


def _in_network(context: _Context, address_text: str, v4: int, v6: int) -> bool:
    try:
        address = ipaddress.ip_address(address_text)
    except ValueError:
        return False
    if address.version != context.ip.version:
        return False
    prefix = v4 if address.version == 4 else v6
    return context.ip in ipaddress.ip_network(f"{address}/{prefix}", strict=False)


async def _matches(context: _Context, domain: str, mechanism: str, argument: str) -> bool:
    if mechanism == "all":
        return True
    if mechanism in ("ip4", "ip6"):
        version = 4 if mechanism == "ip4" else 6
        try:
            network = ipaddress.ip_network(argument, strict=False)
        except ValueError:
            raise SpfPermError(f"bad {mechanism} network {argument!r}") from None
        if network.version != version:
            raise SpfPermError(f"{argument!r} is not an {mechanism} network")
        return context.ip.version == version and context.ip in network
    if mechanism == "include":
        context.limits.count_term()
        target = _expand(context, argument, domain)
        context.limits.depth += 1
        result, _ = await _check(context, target)
        context.limits.depth -= 1
        if result == "none":
            raise SpfPermError(f"include:{target} has no SPF record")
        if result in ("temperror", "permerror"):  # raised already; kept for clarity
            raise SpfPermError(f"include:{target} {result}")
        return result == "pass"
    if mechanism == "exists":
        context.limits.count_term()
        return bool(await context.ask(_expand(context, argument, domain), "A"))
    if mechanism in ("a", "mx"):
        context.limits.count_term()
        spec, v4, v6 = _split_cidr(argument)
        target = _expand(context, spec, domain) if spec else domain
        rdtype = "A" if context.ip.version == 4 else "AAAA"
        if mechanism == "a":
            return any(_in_network(context, a, v4, v6) for a in await context.ask(target, rdtype))
        exchanges = await context.ask(target, "MX")
        if len(exchanges) > MAX_NAMES_PER_TERM:
            raise SpfPermError(f"more than {MAX_NAMES_PER_TERM} MX names at {target}")
        for exchange in exchanges:
            if exchange in ("", "."):
                continue
            if any(_in_network(context, a, v4, v6) for a in await context.ask(exchange, rdtype)):
                return True
        return False
    if mechanism == "ptr":
        context.limits.count_term()
        target = _expand(context, argument, domain) if argument else domain
        return any(name == target or name.endswith("." + target) for name in await _validated_names(context))
    raise SpfPermError(f"unknown mechanism {mechanism}")


async def _validated_names(context: _Context) -> list[str]:
    """The client's reverse names that resolve back to it (5.5), at most 10 asked."""
    names = await context.lookup(context.ip.reverse_pointer, "PTR")
    rdtype = "A" if context.ip.version == 4 else "AAAA"
    validated = []
    for name in names[:MAX_NAMES_PER_TERM]:
        name = name.rstrip(".").lower()
        try:
            addresses = await context.lookup(name, rdtype)
        except SpfTempError:
            continue  # 5.5: a failed forward lookup only drops that name
        if any(_in_network(context, a, 32, 128) for a in addresses):
            validated.append(name)
    return validated


def _expand(context: _Context, spec: str, domain: str) -> str:
    """A domain-spec with its macros expanded (section 7), lower-cased, without a trailing dot."""
    if "%" not in spec:
        return spec.rstrip(".").lower()
    local, _, sender_domain = context.sender.rpartition("@")

    def replace(match: re.Match[str]) -> str:
        if match.group(5) is not None:
            escape = match.group(5)
            if escape == "%":
                return "%"
            if escape == "_":
                return " "
            if escape == "-":
                return "%20"
            raise SpfPermError(f"bad macro %{escape}")
        letter, digits, reverse, delimiters = match.groups()[:4]
        value = _macro_value(context, letter.lower(), local or "postmaster", sender_domain, domain)
        parts = re.split("[" + re.escape(delimiters or ".") + "]", value)
        if reverse:
            parts.reverse()
        if digits:
            if int(digits) == 0:
                raise SpfPermError("a macro keeps 0 labels")
            parts = parts[-int(digits) :]
        return ".".join(parts)

    expanded = _MACRO.sub(replace, spec)
    if "%" in _MACRO.sub("", spec):
        raise SpfPermError(f"bad macro in {spec!r}")
    expanded = expanded.rstrip(".").lower()
    while len(expanded) > 253 and "." in expanded:  # 7.3: drop labels from the left
        expanded = expanded.split(".", 1)[1]
    return expanded


def _macro_value(context: _Context, letter: str, local: str, sender_domain: str, domain: str) -> str:
    if letter == "s":
        return f"{local}@{sender_domain}"
    if letter == "l":
        return local
    if letter == "o":
        return sender_domain
    if letter == "d":
        return domain
    if letter == "i":
        if context.ip.version == 4:
            return str(context.ip)
        return ".".join(context.ip.exploded.replace(":", ""))
    if letter == "h":
        return context.helo
    if letter == "v":
        return "in-addr" if context.ip.version == 4 else "ip6"
    if letter == "p":
        return "unknown"
    raise SpfPermError(f"%{{{letter}}} is allowed only in exp=")
