"""SPF evaluated simply, for DNS readiness: does a domain's record authorise an address?

Not a full RFC 7208 check: the `ip4`, `ip6`, `a`, `mx`, `include` (the included record's own
`ip4`, `ip6`, `a` and `mx`, not its includes) and `all` mechanisms in order, with their qualifiers,
and `redirect=` like an include when nothing matched. `exists`, `ptr`, macros and deeper includes
are listed in `SpfOutcome.unevaluated` instead.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from .dns_lookups import Lookups, mx_hosts, parse_ip

SPF_EVALUATED = ("ip4", "ip6", "a", "mx", "include", "all")


def spf_records(records: Iterable[str]) -> list[str]:
    return [r for r in records if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]


def _network(address: str, prefix: str | None):
    try:
        if prefix is None:
            return ipaddress.ip_network(address, strict=False)
        return ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    except ValueError:
        return None


def _split_cidr(value: str) -> tuple[str, str | None, str | None]:
    """ "example.org/24//64" → ("example.org", "24", "64")."""
    value, _sep, v6 = value.partition("//")
    value, _sep, v4 = value.partition("/")
    return value, v4 or None, v6 or None


@dataclass
class SpfOutcome:
    result: str = ""  # "pass", "fail", "softfail", "neutral" or "" (nothing matched)
    mechanism: str = ""
    error: str = ""
    unevaluated: list[str] = field(default_factory=list)


QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}


def _host_matches(lookups: Lookups, host: str, ip, v4: str | None, v6: str | None) -> tuple[bool, str]:
    addresses, error = lookups.addresses(host)
    for address in addresses:
        candidate = parse_ip(address)
        if candidate is None or candidate.version != ip.version:
            continue
        network = _network(address, v4 if ip.version == 4 else v6)
        if network is not None and ip in network:
            return True, ""
    return False, error


def _mechanism_matches(
    lookups: Lookups, domain: str, name: str, value: str, ip, outcome: SpfOutcome, depth: int
) -> bool:
    if name == "all":
        return True
    if name in ("ip4", "ip6"):
        network = _network(value, None)
        return network is not None and network.version == ip.version and ip in network
    if name in ("a", "mx"):
        target, v4, v6 = _split_cidr(value)
        target = target or domain
        if name == "a":
            matched, error = _host_matches(lookups, target, ip, v4, v6)
            if error and not matched:
                outcome.error = outcome.error or f"{target}: {error}"
            return matched
        hosts, error = mx_hosts(lookups, target)
        if error:
            outcome.error = outcome.error or f"{target} MX: {error}"
        for _preference, host in hosts:
            if host:
                matched, error = _host_matches(lookups, host, ip, v4, v6)
                if matched:
                    return True
                if error:
                    outcome.error = outcome.error or f"{host}: {error}"
        return False
    if name == "include" and depth == 0:
        inner = _evaluate_domain(lookups, value, ip, depth + 1, outcome)
        return inner == "pass"
    outcome.unevaluated.append(f"{name}:{value}" if value else name)
    return False


def _evaluate_domain(lookups: Lookups, domain: str, ip, depth: int, outcome: SpfOutcome) -> str:
    """The included domain's record at one level: "pass" if it authorises `ip`, else ""."""
    answer = lookups.ask(domain, "TXT")
    if answer.error:
        outcome.error = outcome.error or f"{domain} TXT: {answer.error}"
        return ""
    records = spf_records(answer.records)
    if len(records) != 1:
        return ""
    inner = SpfOutcome()
    _evaluate_record(lookups, domain, records[0], ip, depth, inner)
    outcome.error = outcome.error or inner.error
    outcome.unevaluated += inner.unevaluated
    return inner.result


def _evaluate_record(lookups: Lookups, domain: str, record: str, ip, depth: int, outcome: SpfOutcome) -> None:
    redirect = ""
    for term in record.split()[1:]:
        if "%{" in term:
            outcome.unevaluated.append(term)
            continue
        if "=" in term and ":" not in term.split("=", 1)[0]:
            modifier, _sep, value = term.partition("=")
            if modifier.lower() == "redirect":
                redirect = value
            continue
        qualifier = term[0] if term[0] in QUALIFIERS else "+"
        body = term[1:] if term[0] in QUALIFIERS else term
        name, _sep, value = body.partition(":")
        if "/" in name:  # "a/24", "mx//64": the prefix lengths follow the name
            name, _sep, cidr = name.partition("/")
            value = f"{value}/{cidr}"
        name = name.lower()
        if _mechanism_matches(lookups, domain, name, value, ip, outcome, depth):
            outcome.result = QUALIFIERS[qualifier]
            outcome.mechanism = term
            return
    if redirect:
        if depth == 0:
            inner = _evaluate_domain(lookups, redirect, ip, depth + 1, outcome)
            if inner:
                outcome.result, outcome.mechanism = inner, f"redirect={redirect}"
        else:
            outcome.unevaluated.append(f"redirect={redirect}")


def evaluate_spf(lookups: Lookups, domain: str, record: str, address: str) -> SpfOutcome:
    """What `record` (the domain's one v=spf1 record) says about mail from `address`."""
    outcome = SpfOutcome()
    ip = parse_ip(address)
    if ip is not None:
        _evaluate_record(lookups, domain, record, ip, 0, outcome)
    return outcome
