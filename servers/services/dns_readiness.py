"""DNS readiness of a local domain: are the records that make its mail accepted, and its clients configured, published?

Two halves. `evaluate(setup, answers)` is pure: from what this node is (`DomainSetup`: the domain,
the SMTP greeting name, the listening addresses and ports, the DKIM keys) and the DNS answers
fetched so far, it says for each record whether it is ok, missing or wrong, why, and the exact
zone-file line to publish; the answers it still lacks are named in `Evaluation.wanted`.
`check_domain(domain)` is the I/O: it builds the setup from the database and asks DNS (dnspython,
over the server's resolver: the Delivery tab's DNS server, else MAILCONSOLE_DNS_SERVER, else the
system's) in rounds, each round's lookups concurrently, until nothing more is wanted or the time box
(`CHECK_TIMEOUT_S` in all) is spent. What was not answered in time reads "could not ask DNS: timeout".

SPF is evaluated simply, for the listening address(es): one `v=spf1` record, its `ip4`, `ip6`,
`a`, `mx`, `include` (the included record's `ip4`, `ip6`, `a` and `mx`, not its own includes) and
`all` mechanisms in order, and a `redirect=` like an include when nothing matched. `exists`, `ptr`,
macros and deeper includes are not evaluated (the explanation says so when it matters).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from django.utils.translation import gettext as _

from servers import dkim_signing

# All the lookups of one check together take at most this long.
CHECK_TIMEOUT_S = 3.0
# Rounds of lookups that depend on earlier answers (MX → its hosts' addresses → their PTR → …).
MAX_ROUNDS = 6
TTL_S = 3600

OK = "ok"
MISSING = "missing"
WRONG = "wrong"
# The active DKIM key of a rotation whose record is not published yet.
PENDING = "pending"
# DNS did not answer (timeout, SERVFAIL): nothing can be said about the record.
UNKNOWN = "unknown"
STATUSES = (OK, MISSING, WRONG, PENDING, UNKNOWN)

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


@dataclass(frozen=True)
class Listener:
    """Where a service listens: `address` "0.0.0.0" or "::" means every address of the node."""

    address: str
    port: int | None
    tls_port: int | None = None


@dataclass(frozen=True)
class DkimSelector:
    selector: str
    algorithm: str
    public_key: str


@dataclass(frozen=True)
class DomainSetup:
    """What the records should say, read from the database (plain values, no model)."""

    domain: str
    hostname: str
    node: str
    smtp: Listener
    # The node's own addresses when this process runs on it; None when it runs elsewhere (unknown).
    node_addresses: tuple[str, ...] | None
    imap: Listener | None = None
    pop3: Listener | None = None
    dkim_active: DkimSelector | None = None
    dkim_rotated: bool = False
    dkim_retired: tuple[DkimSelector, ...] = ()
    checked_at: datetime | None = None


@dataclass(frozen=True)
class ZoneRecord:
    """One record to publish; `value` is the record's data as a DNS provider's form takes it."""

    name: str
    ttl: int
    type: str
    value: str

    @property
    def zone_value(self) -> str:
        if self.type == "TXT":
            return " ".join(f'"{part}"' for part in dkim_signing.txt_strings(self.value))
        return self.value

    @property
    def zone_line(self) -> str:
        return f"{self.name} {self.ttl} IN {self.type} {self.zone_value}"


@dataclass(frozen=True)
class Check:
    key: str
    label: str
    status: str
    explanation: str
    publish: tuple[ZoneRecord, ...] = ()
    found: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(frozen=True)
class Evaluation:
    checks: tuple[Check, ...]
    # Lookups the checks needed but had no answer for (read as timeouts in `checks`).
    wanted: frozenset[Query]


@dataclass(frozen=True)
class Report:
    domain: str
    resolver: str
    checks: tuple[Check, ...]
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def problems(self) -> int:
        return sum(1 for check in self.checks if not check.ok)


def _name(name: str) -> str:
    return name.lower().rstrip(".")


def _fqdn(name: str) -> str:
    return _name(name) + "."


class _Lookups:
    """The answers so far; asking for one that is not there notes it as wanted and reads as a timeout."""

    def __init__(self, answers: Mapping[Query, Answer]) -> None:
        self.answers = answers
        self.wanted: set[Query] = set()

    def ask(self, name: str, rdtype: str) -> Answer:
        query = (_name(name), rdtype)
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


def _dns_failure(error: str) -> str:
    return _("could not ask DNS: %(error)s") % {"error": error}


def _unknown(key: str, label: str, error: str) -> Check:
    return Check(key, label, UNKNOWN, _dns_failure(error))


# -- addresses ------------------------------------------------------------------------------------


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def _is_wildcard(address: str) -> bool:
    return address in ("0.0.0.0", "::")


def listens_on(setup: DomainSetup, address: str) -> bool | None:
    """Whether the SMTP server takes connections at `address`; None when the node's addresses are unknown."""
    wanted = _ip(address)
    if wanted is None:
        return False
    if not _is_wildcard(setup.smtp.address):
        return wanted == _ip(setup.smtp.address)
    if setup.node_addresses is None:
        return None
    if setup.smtp.address == "0.0.0.0" and wanted.version != 4:
        return False
    return any(wanted == _ip(own) for own in setup.node_addresses)


def _public_node_addresses(setup: DomainSetup) -> list[str]:
    """The node's addresses the server listens on, loopback and link-local left out (unless that is all)."""
    own = [ip for a in setup.node_addresses or () if (ip := _ip(a)) is not None]
    if setup.smtp.address == "0.0.0.0":
        own = [ip for ip in own if ip.version == 4]
    public = [ip for ip in own if not (ip.is_loopback or ip.is_link_local)]
    return [str(ip) for ip in public or own]


def _mx_hosts(lookups: _Lookups, domain: str) -> tuple[list[tuple[int, str]], str]:
    answer = lookups.ask(domain, "MX")
    hosts = []
    for record in answer.records:
        preference, _sep, host = record.partition(" ")
        hosts.append((int(preference) if preference.isdigit() else 0, _name(host)))
    return sorted(hosts), answer.error


def listening_addresses(setup: DomainSetup, lookups: _Lookups) -> list[str]:
    """The address(es) mail comes in at and goes out from: the server's own; with "all addresses",
    those of the node that the MX hosts name, else the node's (public) ones, else the MX hosts'."""
    if not _is_wildcard(setup.smtp.address):
        return [setup.smtp.address]
    hosts, _error = _mx_hosts(lookups, setup.domain)
    mx_addresses: list[str] = []
    for _preference, host in hosts:
        if host:
            found, _error = lookups.addresses(host)
            mx_addresses += [a for a in found if a not in mx_addresses]
    if setup.node_addresses is None:
        return mx_addresses
    matched = [a for a in mx_addresses if listens_on(setup, a)]
    return matched or _public_node_addresses(setup)


# -- the checks -----------------------------------------------------------------------------------


def check_mx(setup: DomainSetup, lookups: _Lookups) -> Check:
    label = "MX"
    hosts, error = _mx_hosts(lookups, setup.domain)
    publish = (ZoneRecord(_fqdn(setup.domain), TTL_S, "MX", f"10 {_fqdn(setup.hostname)}"),)
    if error:
        return _unknown("mx", label, error)
    found = tuple(f"{preference} {host or '.'}" for preference, host in hosts)
    if not hosts:
        return Check(
            "mx",
            label,
            MISSING,
            _("No MX record: other hosts deliver to the domain's own address, if it has one."),
            publish,
        )
    if all(not host for _preference, host in hosts):
        return Check("mx", label, WRONG, _('A "null MX" (".") says this domain takes no mail at all.'), publish, found)
    resolved: list[str] = []
    failures: list[str] = []
    matched: list[str] = []
    unknown_node = False
    for _preference, host in hosts:
        if not host:
            continue
        addresses, host_error = lookups.addresses(host)
        if host_error and not addresses:
            failures.append(f"{host}: {host_error}")
        for address in addresses:
            resolved.append(f"{host} → {address}")
            listening = listens_on(setup, address)
            if listening:
                matched.append(f"{host} ({address})")
            elif listening is None:
                unknown_node = True
    if matched:
        if setup.smtp.port != 25:
            return Check(
                "mx",
                label,
                WRONG,
                _("%(hosts)s reach this node, but the server listens on port %(port)s: other hosts deliver to port 25.")
                % {"hosts": ", ".join(matched), "port": setup.smtp.port},
                (),
                found,
            )
        return Check("mx", label, OK, _("%(hosts)s reach this server.") % {"hosts": ", ".join(matched)}, (), found)
    if unknown_node:
        return Check(
            "mx",
            label,
            OK,
            _(
                "The MX hosts resolve to %(addresses)s. The server listens on every address of node %(node)s, "
                "which this console does not run on: it cannot tell whether those are the node's."
            )
            % {"addresses": ", ".join(resolved), "node": setup.node},
            (),
            found,
        )
    if failures and not resolved:
        return Check("mx", label, UNKNOWN, _dns_failure("; ".join(failures)), (), found)
    where = f"{setup.smtp.address}:{setup.smtp.port}"
    if _is_wildcard(setup.smtp.address):
        where = _("port %(port)s of %(addresses)s") % {
            "port": setup.smtp.port,
            "addresses": ", ".join(_public_node_addresses(setup)) or "-",
        }
    explanation = _("The MX hosts resolve to %(resolved)s, but this server listens on %(where)s.") % {
        "resolved": ", ".join(resolved) or _("no address"),
        "where": where,
    }
    addresses = listening_addresses(setup, lookups)
    records = list(publish)
    for address in addresses[:1]:
        rdtype = "AAAA" if ":" in address else "A"
        records.append(ZoneRecord(_fqdn(setup.hostname), TTL_S, rdtype, address))
    return Check("mx", label, WRONG, explanation, tuple(records), found)


def _reverse_name(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return ip.reverse_pointer


def check_ptr(setup: DomainSetup, lookups: _Lookups) -> Check:
    label = _("PTR (reverse DNS)")
    hostname = _name(setup.hostname)
    addresses = listening_addresses(setup, lookups)
    if not addresses:
        return Check(
            "ptr",
            label,
            UNKNOWN,
            _("No address to look up: the server listens on every address of another node and has no MX here."),
        )
    status = OK
    notes: list[str] = []
    publish: list[ZoneRecord] = []
    found: list[str] = []
    rank = {OK: 0, UNKNOWN: 1, MISSING: 2, WRONG: 3}
    for address in addresses:
        reverse = _reverse_name(address)
        answer = lookups.ask(reverse, "PTR")
        found += [f"{address} → {name}" for name in answer.records]
        record = ZoneRecord(_fqdn(reverse), TTL_S, "PTR", _fqdn(hostname))
        if answer.error:
            outcome, note = UNKNOWN, f"{_dns_failure(answer.error)} ({address})"
        elif not answer.records:
            outcome, note = MISSING, _("%(address)s has no PTR record.") % {"address": address}
            publish.append(record)
        elif hostname not in [_name(name) for name in answer.records]:
            outcome = WRONG
            note = _("%(address)s is named %(names)s, but the server greets as %(hostname)s.") % {
                "address": address,
                "names": ", ".join(answer.records),
                "hostname": hostname,
            }
            publish.append(record)
        else:
            forward, error = lookups.addresses(hostname)
            if address in forward or any(_ip(a) == _ip(address) for a in forward):
                outcome, note = (
                    OK,
                    _("%(address)s is named %(hostname)s, and that name resolves back.")
                    % {
                        "address": address,
                        "hostname": hostname,
                    },
                )
            elif error and not forward:
                outcome, note = UNKNOWN, f"{_dns_failure(error)} ({hostname})"
            else:
                outcome = WRONG
                note = _("%(address)s is named %(hostname)s, but %(hostname)s does not resolve to it.") % {
                    "address": address,
                    "hostname": hostname,
                }
                publish.append(ZoneRecord(_fqdn(hostname), TTL_S, "AAAA" if ":" in address else "A", address))
        notes.append(note)
        if rank[outcome] > rank[status]:
            status = outcome
    explanation = " ".join(notes)
    if status in (MISSING, WRONG):
        explanation += " " + _(
            "The PTR record is set by whoever owns the address (the hosting provider), or set MAILCONSOLE_HOSTNAME "
            "to the address's name."
        )
    return Check("ptr", label, status, explanation, tuple(publish), tuple(found))


# -- SPF ------------------------------------------------------------------------------------------

SPF_EVALUATED = ("ip4", "ip6", "a", "mx", "include", "all")


def _spf_records(records: Iterable[str]) -> list[str]:
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
class _SpfOutcome:
    result: str = ""  # "pass", "fail", "softfail", "neutral" or "" (nothing matched)
    mechanism: str = ""
    error: str = ""
    unevaluated: list[str] = field(default_factory=list)


QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}


def _host_matches(lookups: _Lookups, host: str, ip, v4: str | None, v6: str | None) -> tuple[bool, str]:
    addresses, error = lookups.addresses(host)
    for address in addresses:
        candidate = _ip(address)
        if candidate is None or candidate.version != ip.version:
            continue
        network = _network(address, v4 if ip.version == 4 else v6)
        if network is not None and ip in network:
            return True, ""
    return False, error


def _spf_mechanism_matches(
    lookups: _Lookups, domain: str, name: str, value: str, ip, outcome: _SpfOutcome, depth: int
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
        hosts, error = _mx_hosts(lookups, target)
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
        inner = _spf_evaluate_domain(lookups, value, ip, depth + 1, outcome)
        return inner == "pass"
    outcome.unevaluated.append(f"{name}:{value}" if value else name)
    return False


def _spf_evaluate_domain(lookups: _Lookups, domain: str, ip, depth: int, outcome: _SpfOutcome) -> str:
    """The included domain's record at one level: "pass" if it authorises `ip`, else ""."""
    answer = lookups.ask(domain, "TXT")
    if answer.error:
        outcome.error = outcome.error or f"{domain} TXT: {answer.error}"
        return ""
    records = _spf_records(answer.records)
    if len(records) != 1:
        return ""
    inner = _SpfOutcome()
    _spf_evaluate_record(lookups, domain, records[0], ip, depth, inner)
    outcome.error = outcome.error or inner.error
    outcome.unevaluated += inner.unevaluated
    return inner.result


def _spf_evaluate_record(lookups: _Lookups, domain: str, record: str, ip, depth: int, outcome: _SpfOutcome) -> None:
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
        if _spf_mechanism_matches(lookups, domain, name, value, ip, outcome, depth):
            outcome.result = QUALIFIERS[qualifier]
            outcome.mechanism = term
            return
    if redirect:
        if depth == 0:
            inner = _spf_evaluate_domain(lookups, redirect, ip, depth + 1, outcome)
            if inner:
                outcome.result, outcome.mechanism = inner, f"redirect={redirect}"
        else:
            outcome.unevaluated.append(f"redirect={redirect}")


def _suggested_spf(setup: DomainSetup, addresses: list[str], existing: str | None) -> str:
    mechanisms = [f"ip6:{a}" if ":" in a else f"ip4:{a}" for a in addresses]
    if existing is None:
        return " ".join(["v=spf1", "mx", *mechanisms, "~all"])
    terms = existing.split()
    kept = [t for t in terms[1:] if t not in mechanisms]
    return " ".join(["v=spf1", *mechanisms, *kept])


def check_spf(setup: DomainSetup, lookups: _Lookups) -> Check:
    label = "SPF"
    answer = lookups.ask(setup.domain, "TXT")
    if answer.error:
        return _unknown("spf", label, answer.error)
    records = _spf_records(answer.records)
    addresses = listening_addresses(setup, lookups)
    name = _fqdn(setup.domain)
    if not records:
        return Check(
            "spf",
            label,
            MISSING,
            _("No v=spf1 record: receivers cannot tell which hosts may send this domain's mail."),
            (ZoneRecord(name, TTL_S, "TXT", _suggested_spf(setup, addresses, None)),),
        )
    if len(records) > 1:
        return Check(
            "spf",
            label,
            WRONG,
            _("%(count)s v=spf1 records: receivers treat that as a permanent error. Keep exactly one.")
            % {"count": len(records)},
            (ZoneRecord(name, TTL_S, "TXT", _suggested_spf(setup, addresses, records[0])),),
            tuple(records),
        )
    record = records[0]
    evaluated = _("(evaluated: %(mechanisms)s, and redirect= at one level)") % {"mechanisms": ", ".join(SPF_EVALUATED)}
    if not addresses:
        return Check(
            "spf",
            label,
            UNKNOWN,
            _("One v=spf1 record, but no listening address is known to check it against."),
            (),
            (record,),
        )
    failing: list[str] = []
    passing: list[str] = []
    errors: list[str] = []
    unevaluated: list[str] = []
    for address in addresses:
        ip = _ip(address)
        outcome = _SpfOutcome()
        _spf_evaluate_record(lookups, setup.domain, record, ip, 0, outcome)
        unevaluated += [term for term in outcome.unevaluated if term not in unevaluated]
        if outcome.result == "pass":
            passing.append(f"{address} ({outcome.mechanism})")
        elif outcome.error and not outcome.result:
            errors.append(outcome.error)
        else:
            verdict = outcome.result or _("nothing matched: neutral")
            failing.append(f"{address}: {verdict}" + (f" ({outcome.mechanism})" if outcome.mechanism else ""))
    if failing:
        explanation = _("The record does not authorise %(failing)s %(evaluated)s.") % {
            "failing": "; ".join(failing),
            "evaluated": evaluated,
        }
        if unevaluated:
            explanation += " " + _("Not evaluated here: %(terms)s.") % {"terms": ", ".join(unevaluated)}
        return Check(
            "spf",
            label,
            WRONG,
            explanation,
            (ZoneRecord(name, TTL_S, "TXT", _suggested_spf(setup, addresses, record)),),
            (record,),
        )
    if errors:
        return Check("spf", label, UNKNOWN, _dns_failure("; ".join(errors)), (), (record,))
    return Check(
        "spf",
        label,
        OK,
        _("One v=spf1 record; it authorises %(passing)s.") % {"passing": ", ".join(passing)},
        (),
        (record,),
    )


# -- DKIM -----------------------------------------------------------------------------------------


def _tags(record: str) -> dict[str, str]:
    tags = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = "".join(value.split())
    return tags


def _dkim_state(lookups: _Lookups, domain: str, key: DkimSelector) -> tuple[str, str, tuple[str, ...]]:
    """(status, note, found) of one selector's TXT against its stored public key."""
    answer = lookups.ask(dkim_signing.txt_name(key.selector, domain), "TXT")
    if answer.error:
        return UNKNOWN, _dns_failure(answer.error), ()
    records = [r for r in answer.records if "p=" in r.replace(" ", "")]
    if not records:
        return MISSING, "", tuple(answer.records)
    key_type = "ed25519" if key.algorithm == dkim_signing.ED25519 else "rsa"
    for record in records:
        tags = _tags(record)
        if tags.get("p") == key.public_key and tags.get("k", "rsa").lower() == key_type:
            return OK, "", tuple(records)
    if any(_tags(r).get("p") == "" for r in records):
        return WRONG, _("The published record has an empty p=: the key is revoked."), tuple(records)
    return WRONG, _("The published p= is not this key (an older key, or a typo)."), tuple(records)


def check_dkim(setup: DomainSetup, lookups: _Lookups) -> list[Check]:
    label = "DKIM"
    key = setup.dkim_active
    if key is None:
        return [
            Check(
                "dkim",
                label,
                MISSING,
                _("No DKIM key: mail goes out unsigned. Generate one in the DKIM section of the domain page."),
            )
        ]
    name = dkim_signing.txt_name(key.selector, setup.domain)
    record = ZoneRecord(_fqdn(name), TTL_S, "TXT", dkim_signing.txt_value(key.algorithm, key.public_key))
    status, note, found = _dkim_state(lookups, setup.domain, key)
    if status == OK:
        check = Check(
            "dkim", label, OK, _("Selector %(selector)s is published.") % {"selector": key.selector}, (), found
        )
    elif status == MISSING and setup.dkim_rotated:
        check = Check(
            "dkim",
            label,
            PENDING,
            _(
                "Pending — publish this record: selector %(selector)s signs since the last rotation, "
                "but receivers cannot find its key yet."
            )
            % {"selector": key.selector},
            (record,),
            found,
        )
    elif status == MISSING:
        check = Check(
            "dkim",
            label,
            MISSING,
            _("Selector %(selector)s signs, but its record is not published.") % {"selector": key.selector},
            (record,),
            found,
        )
    elif status == WRONG:
        check = Check("dkim", label, WRONG, f"{key.selector}: {note}", (record,), found)
    else:
        check = Check("dkim", label, UNKNOWN, note)
    checks = [check]
    for retired in setup.dkim_retired:
        state, _note, found = _dkim_state(lookups, setup.domain, retired)
        if state == UNKNOWN:
            checks.append(_unknown(f"dkim-retired-{retired.selector}", _("DKIM (retired)"), _note))
            continue
        explanation = (
            _(
                "Retired selector %(selector)s is still published, so mail signed before the rotation verifies; "
                "take it down after a few days, then remove the key (`smtpsvc dkim %(domain)s remove-retired`)."
            )
            if state != MISSING
            else _(
                "Retired selector %(selector)s is no longer published; remove the key "
                "(`smtpsvc dkim %(domain)s remove-retired`)."
            )
        ) % {"selector": retired.selector, "domain": setup.domain}
        checks.append(Check(f"dkim-retired-{retired.selector}", _("DKIM (retired)"), OK, explanation, (), found))
    return checks


# -- policy records -------------------------------------------------------------------------------


def _tagged_records(records: Iterable[str], version: str) -> list[dict[str, str]]:
    found = []
    for record in records:
        tags = _tags(record)
        if tags.get("v", "").lower() == version.lower() and record.strip().lower().startswith("v="):
            found.append(tags)
    return found


def check_dmarc(setup: DomainSetup, lookups: _Lookups) -> Check:
    label = "DMARC"
    name = f"_dmarc.{setup.domain}"
    answer = lookups.ask(name, "TXT")
    if answer.error:
        return _unknown("dmarc", label, answer.error)
    publish = (ZoneRecord(_fqdn(name), TTL_S, "TXT", f"v=DMARC1; p=none; rua=mailto:postmaster@{setup.domain}"),)
    records = _tagged_records(answer.records, "DMARC1")
    if not records:
        return Check(
            "dmarc",
            label,
            MISSING,
            _(
                "No v=DMARC1 record at %(name)s: large receivers want one. Start with p=none and tighten to "
                "quarantine or reject once the reports show only your own mail."
            )
            % {"name": name},
            publish,
            answer.records,
        )
    if len(records) > 1:
        return Check(
            "dmarc",
            label,
            WRONG,
            _("More than one v=DMARC1 record: receivers ignore them all."),
            publish,
            answer.records,
        )
    policy = records[0].get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return Check(
            "dmarc",
            label,
            WRONG,
            _("The record has no valid p= (none, quarantine or reject)."),
            publish,
            answer.records,
        )
    return Check("dmarc", label, OK, _("Policy p=%(policy)s.") % {"policy": policy}, (), answer.records)


def check_mta_sts(setup: DomainSetup, lookups: _Lookups) -> Check:
    label = "MTA-STS"
    name = f"_mta-sts.{setup.domain}"
    answer = lookups.ask(name, "TXT")
    if answer.error:
        return _unknown("mta-sts", label, answer.error)
    policy_id = f"{setup.checked_at or datetime(2026, 1, 1):%Y%m%d%H%M%S}"
    publish = (ZoneRecord(_fqdn(name), TTL_S, "TXT", f"v=STSv1; id={policy_id}"),)
    served = _(
        "The policy itself is served at https://mta-sts.%(domain)s/.well-known/mta-sts.txt (not by MailConsole)."
    )
    served %= {"domain": setup.domain}
    records = _tagged_records(answer.records, "STSv1")
    if not records:
        return Check(
            "mta-sts",
            label,
            MISSING,
            _("No v=STSv1 record at %(name)s: senders may deliver without TLS.") % {"name": name} + " " + served,
            publish,
            answer.records,
        )
    policy_id_found = records[0].get("id", "")
    if len(records) > 1 or not (policy_id_found.isalnum() and len(policy_id_found) <= 32):
        return Check(
            "mta-sts",
            label,
            WRONG,
            _("Exactly one v=STSv1 record with an id= of 1 to 32 letters and digits is needed.") + " " + served,
            publish,
            answer.records,
        )
    return Check(
        "mta-sts", label, OK, _("Policy id %(id)s.") % {"id": policy_id_found} + " " + served, (), answer.records
    )


def check_tls_rpt(setup: DomainSetup, lookups: _Lookups) -> Check:
    label = "TLS-RPT"
    name = f"_smtp._tls.{setup.domain}"
    answer = lookups.ask(name, "TXT")
    if answer.error:
        return _unknown("tls-rpt", label, answer.error)
    publish = (ZoneRecord(_fqdn(name), TTL_S, "TXT", f"v=TLSRPTv1; rua=mailto:postmaster@{setup.domain}"),)
    records = _tagged_records(answer.records, "TLSRPTv1")
    if not records:
        return Check(
            "tls-rpt",
            label,
            MISSING,
            _("No v=TLSRPTv1 record at %(name)s: nobody reports failed TLS deliveries to you.") % {"name": name},
            publish,
            answer.records,
        )
    rua = records[0].get("rua", "")
    if len(records) > 1 or not all(uri.lower().startswith(("mailto:", "https:")) for uri in rua.split(",") if uri):
        return Check(
            "tls-rpt",
            label,
            WRONG,
            _("Exactly one v=TLSRPTv1 record with rua=mailto:… or rua=https:… is needed."),
            publish,
            answer.records,
        )
    if not rua:
        return Check("tls-rpt", label, WRONG, _("The record has no rua=."), publish, answer.records)
    return Check("tls-rpt", label, OK, _("Reports go to %(rua)s.") % {"rua": rua}, (), answer.records)


def check_client_name(setup: DomainSetup, lookups: _Lookups, prefix: str) -> Check:
    """autoconfig.DOMAIN (Thunderbird) or autodiscover.DOMAIN (Outlook): an A/AAAA or CNAME."""
    key = prefix
    label = f"{prefix}.{setup.domain}"
    name = f"{prefix}.{setup.domain}"
    answers = [lookups.ask(name, rdtype) for rdtype in ("CNAME", "A", "AAAA")]
    found = tuple(record for answer in answers for record in answer.records)
    if found:
        return Check(key, label, OK, _("%(name)s resolves (%(found)s).") % {"name": name, "found": ", ".join(found)})
    errors = [answer.error for answer in answers if answer.error]
    if errors:
        return _unknown(key, label, errors[0])
    return Check(
        key,
        label,
        MISSING,
        _("%(name)s does not resolve: mail clients cannot find their settings by it.") % {"name": name},
        (ZoneRecord(_fqdn(name), TTL_S, "CNAME", _fqdn(setup.hostname)),),
    )


def _srv_services(setup: DomainSetup) -> list[tuple[str, str, int | None]]:
    """(SRV owner prefix, what it is, the port it should name; None: not offered)."""
    imap, pop3 = setup.imap, setup.pop3
    return [
        ("_submission._tcp", _("mail submission (SMTP, STARTTLS)"), setup.smtp.port),
        ("_submissions._tcp", _("mail submission over TLS"), setup.smtp.tls_port),
        ("_imap._tcp", "IMAP", imap.port if imap else None),
        ("_imaps._tcp", "IMAPS", imap.tls_port if imap else None),
        ("_pop3._tcp", "POP3", pop3.port if pop3 else None),
        ("_pop3s._tcp", "POP3S", pop3.tls_port if pop3 else None),
    ]


def check_srv(setup: DomainSetup, lookups: _Lookups) -> list[Check]:
    """RFC 6186 (and RFC 8314's _submissions) SRV records pointing at this node's services."""
    checks = []
    for prefix, what, port in _srv_services(setup):
        name = f"{prefix}.{setup.domain}"
        key = prefix.split(".", 1)[0].lstrip("_")
        label = f"SRV {prefix}"
        answer = lookups.ask(name, "SRV")
        if answer.error:
            checks.append(_unknown(f"srv-{key}", label, answer.error))
            continue
        targets = []
        for record in answer.records:
            parts = record.split()
            if len(parts) == 4 and parts[2].isdigit():
                targets.append((int(parts[2]), _name(parts[3])))
        offered = [(p, t) for p, t in targets if t and p]
        if port is None:
            publish = (ZoneRecord(_fqdn(name), TTL_S, "SRV", "0 0 0 ."),)
            if offered:
                checks.append(
                    Check(
                        f"srv-{key}",
                        label,
                        WRONG,
                        _("It names %(targets)s, but this node offers no %(what)s.")
                        % {"targets": ", ".join(f"{t}:{p}" for p, t in offered), "what": what},
                        publish,
                        answer.records,
                    )
                )
            else:
                checks.append(
                    Check(
                        f"srv-{key}",
                        label,
                        OK,
                        _("This node offers no %(what)s; nothing to publish.") % {"what": what},
                        (),
                        answer.records,
                    )
                )
            continue
        publish = (ZoneRecord(_fqdn(name), TTL_S, "SRV", f"0 1 {port} {_fqdn(setup.hostname)}"),)
        if not targets:
            checks.append(
                Check(
                    f"srv-{key}",
                    label,
                    MISSING,
                    _("No SRV record: mail clients cannot find %(what)s on port %(port)s by it.")
                    % {"what": what, "port": port},
                    publish,
                )
            )
        elif any(p == port for p, _target in offered):
            target = next(t for p, t in offered if p == port)
            checks.append(
                Check(
                    f"srv-{key}",
                    label,
                    OK,
                    _("%(what)s at %(target)s, port %(port)s.") % {"what": what, "target": target, "port": port},
                    (),
                    answer.records,
                )
            )
        else:
            checks.append(
                Check(
                    f"srv-{key}",
                    label,
                    WRONG,
                    _("It names %(found)s, but %(what)s listens on port %(port)s.")
                    % {
                        "found": ", ".join(f"{t or '.'}:{p}" for p, t in targets),
                        "what": what,
                        "port": port,
                    },
                    publish,
                    answer.records,
                )
            )
    return checks


def evaluate(setup: DomainSetup, answers: Mapping[Query, Answer]) -> Evaluation:
    """Every check of the domain from the answers so far; what is not among them reads as a timeout."""
    lookups = _Lookups(answers)
    checks = [
        check_mx(setup, lookups),
        check_ptr(setup, lookups),
        check_spf(setup, lookups),
        *check_dkim(setup, lookups),
        check_dmarc(setup, lookups),
        check_mta_sts(setup, lookups),
        check_tls_rpt(setup, lookups),
        check_client_name(setup, lookups, "autoconfig"),
        check_client_name(setup, lookups, "autodiscover"),
        *check_srv(setup, lookups),
    ]
    return Evaluation(tuple(checks), frozenset(lookups.wanted))


# -- I/O ------------------------------------------------------------------------------------------


def _record_text(rdtype: str, rdata) -> str:
    if rdtype == "TXT":
        return b"".join(rdata.strings).decode("utf-8", "replace")
    if rdtype == "MX":
        return f"{rdata.preference} {_name(rdata.exchange.to_text()) or '.'}"
    if rdtype == "SRV":
        return f"{rdata.priority} {rdata.weight} {rdata.port} {_name(rdata.target.to_text()) or '.'}"
    if rdtype in ("PTR", "CNAME"):
        return _name(rdata.target.to_text())
    return rdata.to_text()


async def fetch(resolver, queries: Iterable[Query], deadline: float) -> dict[Query, Answer]:
    """Ask `resolver` (a dns.asyncresolver.Resolver) every query at once; by `deadline` (loop time) at the latest."""
    import dns.exception
    import dns.resolver

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


async def run_checks(setup: DomainSetup, resolver, *, timeout_s: float = CHECK_TIMEOUT_S) -> tuple[Check, ...]:
    """Evaluate, fetch what is wanted, again, until nothing is wanted or time is up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    answers: dict[Query, Answer] = {}
    evaluation = evaluate(setup, answers)
    for _round in range(MAX_ROUNDS):
        wanted = evaluation.wanted - answers.keys()
        if not wanted or loop.time() >= deadline:
            break
        answers.update(await fetch(resolver, wanted, deadline))
        evaluation = evaluate(setup, answers)
    return evaluation.checks


# -- from the database ----------------------------------------------------------------------------


def node_addresses() -> tuple[str, ...]:
    """Every address of this machine's interfaces."""
    import socket

    import psutil

    addresses = []
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                addresses.append(entry.address.split("%", 1)[0])
    return tuple(addresses)


def domain_setup(domain) -> DomainSetup:
    """What `domain` (a local Domain) should have published, read from the database."""
    from django.conf import settings
    from django.utils import timezone

    from servers.models import DkimKeyState, ImapService, Pop3Service

    server = domain.server
    node = server.node

    def listener(service_model) -> Listener | None:
        # A stopped service still counts: its records describe the configuration, and a stop may be maintenance.
        service = service_model.objects.filter(node=node).first()
        return Listener(service.ip_address, service.port, service.tls_port) if service else None

    keys = list(domain.dkim_keys.order_by("-created_at", "-id"))
    active = next((key for key in keys if key.state == DkimKeyState.ACTIVE), None)
    retired = [key for key in keys if key.state == DkimKeyState.RETIRED]
    return DomainSetup(
        domain=domain.name,
        hostname=settings.MAIL_HOSTNAME,
        node=node.name,
        smtp=Listener(server.ip_address, server.port, server.tls_port),
        node_addresses=node_addresses() if node.name == settings.NODE_NAME else None,
        imap=listener(ImapService),
        pop3=listener(Pop3Service),
        dkim_active=DkimSelector(active.selector, active.algorithm, active.public_key) if active else None,
        dkim_rotated=bool(active and retired),
        dkim_retired=tuple(DkimSelector(k.selector, k.algorithm, k.public_key) for k in retired),
        checked_at=timezone.now(),
    )


def resolver_setting(server) -> str:
    """The DNS server the checks ask: the Delivery tab's, else MAILCONSOLE_DNS_SERVER; "" is the system's."""
    from django.conf import settings

    from servers.delivery.models import DeliverySettings

    own = DeliverySettings.objects.filter(server=server).values_list("dns_server", flat=True).first()
    return own or settings.DELIVERY_DNS_SERVER or ""


def check_domain(domain, *, timeout_s: float = CHECK_TIMEOUT_S) -> Report:
    """The DNS readiness of a local domain, asked of its server's resolver within `timeout_s` in all."""
    import dns.exception

    from servers.inbound_checks import make_resolver
    from servers.models import DomainType

    from .errors import RefusedError

    if domain.type != DomainType.LOCAL:
        raise RefusedError(_("Only a local domain has DNS records to check."), field="domain")
    setup = domain_setup(domain)
    dns_server = resolver_setting(domain.server)
    started = time.monotonic()
    try:
        resolver = make_resolver(dns_server, timeout_s=timeout_s)
    except (dns.exception.DNSException, ValueError) as error:  # no /etc/resolv.conf, a bad setting
        checks = evaluate(setup, _EveryAnswer(Answer(error=str(error) or type(error).__name__))).checks
    else:
        checks = asyncio.run(run_checks(setup, resolver, timeout_s=timeout_s))
    return Report(
        domain=domain.name,
        resolver=dns_server or _("the system's resolver"),
        checks=checks,
        elapsed_s=round(time.monotonic() - started, 3),
    )


class _EveryAnswer(dict):
    """The same answer to every query (when no resolver could be made)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__()
        self.answer = answer

    def get(self, key, default=None):
        return self.answer
