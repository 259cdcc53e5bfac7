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
from dataclasses import dataclass
from datetime import datetime

from django.utils.translation import gettext as _

from servers import dkim_signing

from .dns_lookups import (
    Answer,
    EveryAnswer,
    Lookups,
    Query,
    canonical_name,
    fetch,
    fqdn,
    mx_hosts,
    parse_ip,
)
from .dns_spf import SPF_EVALUATED, evaluate_spf, spf_records

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


def _dns_failure(error: str) -> str:
    return _("could not ask DNS: %(error)s") % {"error": error}


# -- addresses ------------------------------------------------------------------------------------


def _is_wildcard(address: str) -> bool:
    return address in ("0.0.0.0", "::")


def listens_on(setup: DomainSetup, address: str) -> bool | None:
    """Whether the SMTP server takes connections at `address`; None when the node's addresses are unknown."""
    wanted = parse_ip(address)
    if wanted is None:
        return False
    if not _is_wildcard(setup.smtp.address):
        return wanted == parse_ip(setup.smtp.address)
    if setup.node_addresses is None:
        return None
    if setup.smtp.address == "0.0.0.0" and wanted.version != 4:
        return False
    return any(wanted == parse_ip(own) for own in setup.node_addresses)


def _public_node_addresses(setup: DomainSetup) -> list[str]:
    """The node's addresses the server listens on, loopback and link-local left out (unless that is all)."""
    own = [ip for a in setup.node_addresses or () if (ip := parse_ip(a)) is not None]
    if setup.smtp.address == "0.0.0.0":
        own = [ip for ip in own if ip.version == 4]
    public = [ip for ip in own if not (ip.is_loopback or ip.is_link_local)]
    return [str(ip) for ip in public or own]


def listening_addresses(setup: DomainSetup, lookups: Lookups) -> list[str]:
    """The address(es) mail comes in at and goes out from: the server's own; with "all addresses",
    those of the node that the MX hosts name, else the node's (public) ones, else the MX hosts'."""
    if not _is_wildcard(setup.smtp.address):
        return [setup.smtp.address]
    hosts, _error = mx_hosts(lookups, setup.domain)
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


@dataclass(frozen=True)
class _Row:
    """Makes the Check of one row: `row(status, explanation, publish, found)`."""

    key: str
    label: str

    def __call__(
        self, status: str, explanation: str, publish: Iterable[ZoneRecord] = (), found: Iterable[str] = ()
    ) -> Check:
        return Check(self.key, self.label, status, explanation, tuple(publish), tuple(found))

    def unknown(self, error: str) -> Check:
        return self(UNKNOWN, _dns_failure(error))


def _record(name: str, rdtype: str, value: str) -> ZoneRecord:
    return ZoneRecord(fqdn(name), TTL_S, rdtype, value)


def _address_record(name: str, address: str) -> ZoneRecord:
    return _record(name, "AAAA" if ":" in address else "A", address)


def check_mx(setup: DomainSetup, lookups: Lookups) -> Check:
    row = _Row("mx", "MX")
    hosts, error = mx_hosts(lookups, setup.domain)
    publish = [_record(setup.domain, "MX", f"10 {fqdn(setup.hostname)}")]
    if error:
        return row.unknown(error)
    found = [f"{preference} {host or '.'}" for preference, host in hosts]
    if not hosts:
        return row(MISSING, _("No MX record: other hosts deliver to the domain's own address, if it has one."), publish)
    if all(not host for _preference, host in hosts):
        return row(WRONG, _('A "null MX" (".") says this domain takes no mail at all.'), publish, found)
    resolved: list[str] = []
    failures: list[str] = []
    matched: list[str] = []
    unknown_node = False
    for host in (host for _preference, host in hosts if host):
        addresses, host_error = lookups.addresses(host)
        if host_error and not addresses:
            failures.append(f"{host}: {host_error}")
        for address in addresses:
            resolved.append(f"{host} → {address}")
            listening = listens_on(setup, address)
            matched += [f"{host} ({address})"] if listening else []
            unknown_node = unknown_node or listening is None
    if matched and setup.smtp.port != 25:
        explanation = _(
            "The MX leads to this node (%(hosts)s), but the server listens on port %(port)s: other hosts deliver "
            "to port 25."
        )
        return row(WRONG, explanation % {"hosts": ", ".join(matched), "port": setup.smtp.port}, (), found)
    if matched:
        return row(OK, _("The MX leads to this server: %(hosts)s.") % {"hosts": ", ".join(matched)}, (), found)
    if unknown_node:
        explanation = _(
            "The MX hosts resolve to %(addresses)s. The server listens on every address of node %(node)s, "
            "which this console does not run on: it cannot tell whether those are the node's."
        )
        return row(OK, explanation % {"addresses": ", ".join(resolved), "node": setup.node}, (), found)
    if failures and not resolved:
        return row(UNKNOWN, _dns_failure("; ".join(failures)), (), found)
    where = f"{setup.smtp.address}:{setup.smtp.port}"
    if _is_wildcard(setup.smtp.address):
        own = ", ".join(_public_node_addresses(setup)) or "-"
        where = _("port %(port)s of %(addresses)s") % {"port": setup.smtp.port, "addresses": own}
    explanation = _("The MX hosts resolve to %(resolved)s, but this server listens on %(where)s.") % {
        "resolved": ", ".join(resolved) or _("no address"),
        "where": where,
    }
    publish += [_address_record(setup.hostname, a) for a in listening_addresses(setup, lookups)[:1]]
    return row(WRONG, explanation, publish, found)


def _reverse_name(address: str) -> str:
    return ipaddress.ip_address(address).reverse_pointer


RANK = {OK: 0, UNKNOWN: 1, PENDING: 2, MISSING: 2, WRONG: 3}


def _ptr_of(setup: DomainSetup, lookups: Lookups, address: str) -> tuple[str, str, list[ZoneRecord], list[str]]:
    """(status, note, records to publish, found) of one listening address's reverse name."""
    hostname = canonical_name(setup.hostname)
    reverse = _reverse_name(address)
    answer = lookups.ask(reverse, "PTR")
    found = [f"{address} → {name}" for name in answer.records]
    record = _record(reverse, "PTR", fqdn(hostname))
    if answer.error:
        return UNKNOWN, f"{_dns_failure(answer.error)} ({address})", [], found
    if not answer.records:
        return MISSING, _("%(address)s has no PTR record.") % {"address": address}, [record], found
    names = {"address": address, "hostname": hostname, "names": ", ".join(answer.records)}
    if hostname not in [canonical_name(name) for name in answer.records]:
        return (
            WRONG,
            _("%(address)s is named %(names)s, but the server greets as %(hostname)s.") % names,
            [record],
            found,
        )
    forward, error = lookups.addresses(hostname)
    if any(parse_ip(a) == parse_ip(address) for a in forward):
        return OK, _("%(address)s is named %(hostname)s, and that name resolves back.") % names, [], found
    if error and not forward:
        return UNKNOWN, f"{_dns_failure(error)} ({hostname})", [], found
    note = _("%(address)s is named %(hostname)s, but %(hostname)s does not resolve to it.") % names
    return WRONG, note, [_address_record(hostname, address)], found


def check_ptr(setup: DomainSetup, lookups: Lookups) -> Check:
    row = _Row("ptr", _("PTR (reverse DNS)"))
    addresses = listening_addresses(setup, lookups)
    if not addresses:
        return row(
            UNKNOWN,
            _("No address to look up: the server listens on every address of another node and has no MX here."),
        )
    status, notes, publish, found = OK, [], [], []
    for address in addresses:
        outcome, note, records, answered = _ptr_of(setup, lookups, address)
        notes.append(note)
        publish += records
        found += answered
        status = outcome if RANK[outcome] > RANK[status] else status
    if status in (MISSING, WRONG):
        notes.append(
            _(
                "The PTR record is set by whoever owns the address (the hosting provider), or set "
                "MAILCONSOLE_HOSTNAME to the address's name."
            )
        )
    return row(status, " ".join(notes), publish, found)


def _suggested_spf(addresses: list[str], existing: str | None) -> str:
    """A record that authorises `addresses`: `existing` with them in front, or a new one."""
    mechanisms = [f"ip6:{a}" if ":" in a else f"ip4:{a}" for a in addresses]
    if existing is None:
        return " ".join(["v=spf1", "mx", *mechanisms, "~all"])
    kept = [term for term in existing.split()[1:] if term not in mechanisms]
    return " ".join(["v=spf1", *mechanisms, *kept])


def check_spf(setup: DomainSetup, lookups: Lookups) -> Check:
    row = _Row("spf", "SPF")
    answer = lookups.ask(setup.domain, "TXT")
    if answer.error:
        return row.unknown(answer.error)
    records = spf_records(answer.records)
    addresses = listening_addresses(setup, lookups)
    if not records:
        explanation = _("No v=spf1 record: receivers cannot tell which hosts may send this domain's mail.")
        return row(MISSING, explanation, [_record(setup.domain, "TXT", _suggested_spf(addresses, None))])
    fix = [_record(setup.domain, "TXT", _suggested_spf(addresses, records[0]))]
    if len(records) > 1:
        explanation = _("%(count)s v=spf1 records: receivers treat that as a permanent error. Keep exactly one.")
        return row(WRONG, explanation % {"count": len(records)}, fix, records)
    if not addresses:
        explanation = _("One v=spf1 record, but no listening address is known to check it against.")
        return row(UNKNOWN, explanation, (), records)
    failing: list[str] = []
    passing: list[str] = []
    errors: list[str] = []
    unevaluated: list[str] = []
    for address in addresses:
        outcome = evaluate_spf(lookups, setup.domain, records[0], address)
        unevaluated += [term for term in outcome.unevaluated if term not in unevaluated]
        if outcome.result == "pass":
            passing.append(f"{address} ({outcome.mechanism})")
        elif outcome.error and not outcome.result:
            errors.append(outcome.error)
        else:
            verdict = outcome.result or _("nothing matched: neutral")
            failing.append(f"{address}: {verdict}" + (f" ({outcome.mechanism})" if outcome.mechanism else ""))
    if failing:
        evaluated = _("(evaluated: %(mechanisms)s, and redirect= at one level)") % {
            "mechanisms": ", ".join(SPF_EVALUATED)
        }
        explanation = _("The record does not authorise %(failing)s %(evaluated)s.") % {
            "failing": "; ".join(failing),
            "evaluated": evaluated,
        }
        if unevaluated:
            explanation += " " + _("Not evaluated here: %(terms)s.") % {"terms": ", ".join(unevaluated)}
        return row(WRONG, explanation, fix, records)
    if errors:
        return row(UNKNOWN, _dns_failure("; ".join(errors)), (), records)
    return row(OK, _("One v=spf1 record; it authorises %(passing)s.") % {"passing": ", ".join(passing)}, (), records)


# -- DKIM -----------------------------------------------------------------------------------------


def _tags(record: str) -> dict[str, str]:
    """`k=v; k=v` tags, keys lowercase, whitespace taken out of the values (a key split over strings)."""
    tags = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = "".join(value.split())
    return tags


def _dkim_state(lookups: Lookups, domain: str, key: DkimSelector) -> tuple[str, str, tuple[str, ...]]:
    """(status, note, found) of one selector's TXT against its stored public key."""
    answer = lookups.ask(dkim_signing.txt_name(key.selector, domain), "TXT")
    if answer.error:
        return UNKNOWN, _dns_failure(answer.error), ()
    records = tuple(r for r in answer.records if "p=" in r.replace(" ", ""))
    if not records:
        return MISSING, "", answer.records
    key_type = "ed25519" if key.algorithm == dkim_signing.ED25519 else "rsa"
    for tags in map(_tags, records):
        if tags.get("p") == key.public_key and tags.get("k", "rsa").lower() == key_type:
            return OK, "", records
    if any(_tags(r).get("p") == "" for r in records):
        return WRONG, _("The published record has an empty p=: the key is revoked."), records
    return WRONG, _("The published p= is not this key (an older key, or a typo)."), records


def check_dkim(setup: DomainSetup, lookups: Lookups) -> list[Check]:
    row = _Row("dkim", "DKIM")
    key = setup.dkim_active
    if key is None:
        explanation = _("No DKIM key: mail goes out unsigned. Generate one in the DKIM section of the domain page.")
        return [row(MISSING, explanation)]
    name = dkim_signing.txt_name(key.selector, setup.domain)
    publish = [_record(name, "TXT", dkim_signing.txt_value(key.algorithm, key.public_key))]
    status, note, found = _dkim_state(lookups, setup.domain, key)
    selector = {"selector": key.selector}
    if status == OK:
        checks = [row(OK, _("Selector %(selector)s is published.") % selector, (), found)]
    elif status == MISSING and setup.dkim_rotated:
        explanation = _(
            "Pending — publish this record: selector %(selector)s signs since the last rotation, "
            "but receivers cannot find its key yet."
        )
        checks = [row(PENDING, explanation % selector, publish, found)]
    elif status == MISSING:
        explanation = _("Selector %(selector)s signs, but its record is not published.")
        checks = [row(MISSING, explanation % selector, publish, found)]
    elif status == WRONG:
        checks = [row(WRONG, f"{key.selector}: {note}", publish, found)]
    else:
        checks = [row(UNKNOWN, note)]
    for retired in setup.dkim_retired:
        retired_row = _Row(
            f"dkim-retired-{retired.selector}", _("DKIM %(selector)s (retired)") % {"selector": retired.selector}
        )
        state, note, found = _dkim_state(lookups, setup.domain, retired)
        if state == UNKNOWN:
            checks.append(retired_row(UNKNOWN, note))
            continue
        if state == MISSING:
            explanation = _(
                "Retired selector %(selector)s is no longer published; remove the key "
                "(`smtpsvc dkim %(domain)s remove-retired`)."
            )
        else:
            explanation = _(
                "Retired selector %(selector)s is still published, so mail signed before the rotation verifies; "
                "take it down after a few days, then remove the key (`smtpsvc dkim %(domain)s remove-retired`)."
            )
        checks.append(retired_row(OK, explanation % {"selector": retired.selector, "domain": setup.domain}, (), found))
    return checks


# -- policy records -------------------------------------------------------------------------------


def _tagged_records(records: Iterable[str], version: str) -> list[dict[str, str]]:
    """The tags of the records that start with `v=<version>`."""
    found = []
    for record in records:
        tags = _tags(record)
        if tags.get("v", "").lower() == version.lower() and record.strip().lower().startswith("v="):
            found.append(tags)
    return found


def check_dmarc(setup: DomainSetup, lookups: Lookups) -> Check:
    row = _Row("dmarc", "DMARC")
    name = f"_dmarc.{setup.domain}"
    answer = lookups.ask(name, "TXT")
    if answer.error:
        return row.unknown(answer.error)
    publish = [_record(name, "TXT", f"v=DMARC1; p=none; rua=mailto:postmaster@{setup.domain}")]
    records = _tagged_records(answer.records, "DMARC1")
    if not records:
        explanation = _(
            "No v=DMARC1 record at %(name)s: large receivers want one. Start with p=none and tighten to "
            "quarantine or reject once the reports show only your own mail."
        )
        return row(MISSING, explanation % {"name": name}, publish, answer.records)
    if len(records) > 1:
        return row(WRONG, _("More than one v=DMARC1 record: receivers ignore them all."), publish, answer.records)
    policy = records[0].get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return row(WRONG, _("The record has no valid p= (none, quarantine or reject)."), publish, answer.records)
    return row(OK, _("Policy p=%(policy)s.") % {"policy": policy}, (), answer.records)


def check_mta_sts(setup: DomainSetup, lookups: Lookups) -> Check:
    row = _Row("mta-sts", "MTA-STS")
    name = f"_mta-sts.{setup.domain}"
    answer = lookups.ask(name, "TXT")
    if answer.error:
        return row.unknown(answer.error)
    policy_id = f"{setup.checked_at or datetime(2026, 1, 1):%Y%m%d%H%M%S}"
    publish = [_record(name, "TXT", f"v=STSv1; id={policy_id}")]
    served = _(
        "The policy itself is served at https://mta-sts.%(domain)s/.well-known/mta-sts.txt (not by MailConsole)."
    )
    served %= {"domain": setup.domain}
    records = _tagged_records(answer.records, "STSv1")
    if not records:
        explanation = _("No v=STSv1 record at %(name)s: senders may deliver without TLS.") % {"name": name}
        return row(MISSING, f"{explanation} {served}", publish, answer.records)
    found_id = records[0].get("id", "")
    if len(records) > 1 or not (found_id.isalnum() and len(found_id) <= 32):
        explanation = _("Exactly one v=STSv1 record with an id= of 1 to 32 letters and digits is needed.")
        return row(WRONG, f"{explanation} {served}", publish, answer.records)
    return row(OK, _("Policy id %(id)s.") % {"id": found_id} + " " + served, (), answer.records)


def check_tls_rpt(setup: DomainSetup, lookups: Lookups) -> Check:
    row = _Row("tls-rpt", "TLS-RPT")
    name = f"_smtp._tls.{setup.domain}"
    answer = lookups.ask(name, "TXT")
    if answer.error:
        return row.unknown(answer.error)
    publish = [_record(name, "TXT", f"v=TLSRPTv1; rua=mailto:postmaster@{setup.domain}")]
    records = _tagged_records(answer.records, "TLSRPTv1")
    if not records:
        explanation = _("No v=TLSRPTv1 record at %(name)s: nobody reports failed TLS deliveries to you.")
        return row(MISSING, explanation % {"name": name}, publish, answer.records)
    rua = records[0].get("rua", "")
    uris = [uri for uri in rua.split(",") if uri]
    if len(records) > 1 or not uris or not all(uri.lower().startswith(("mailto:", "https:")) for uri in uris):
        explanation = _("Exactly one v=TLSRPTv1 record with rua=mailto:… or rua=https:… is needed.")
        return row(WRONG, explanation, publish, answer.records)
    return row(OK, _("Reports go to %(rua)s.") % {"rua": rua}, (), answer.records)


def check_client_name(setup: DomainSetup, lookups: Lookups, prefix: str) -> Check:
    """autoconfig.DOMAIN (Thunderbird) or autodiscover.DOMAIN (Outlook): an A/AAAA or CNAME."""
    name = f"{prefix}.{setup.domain}"
    row = _Row(prefix, name)
    answers = [lookups.ask(name, rdtype) for rdtype in ("CNAME", "A", "AAAA")]
    found = [record for answer in answers for record in answer.records]
    if found:
        return row(OK, _("%(name)s resolves (%(found)s).") % {"name": name, "found": ", ".join(found)})
    errors = [answer.error for answer in answers if answer.error]
    if errors:
        return row.unknown(errors[0])
    explanation = _("%(name)s does not resolve: mail clients cannot find their settings by it.") % {"name": name}
    return row(MISSING, explanation, [_record(name, "CNAME", fqdn(setup.hostname))])


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


def _check_one_srv(setup: DomainSetup, lookups: Lookups, prefix: str, what: str, port: int | None) -> Check:
    name = f"{prefix}.{setup.domain}"
    row = _Row(f"srv-{prefix.split('.', 1)[0].lstrip('_')}", f"SRV {prefix}")
    answer = lookups.ask(name, "SRV")
    if answer.error:
        return row.unknown(answer.error)
    targets = []
    for record in answer.records:
        parts = record.split()
        if len(parts) == 4 and parts[2].isdigit():
            targets.append((int(parts[2]), canonical_name(parts[3])))
    offered = [(p, t) for p, t in targets if t and p]
    names = {"what": what, "port": port}
    if port is None and offered:
        names["targets"] = ", ".join(f"{t}:{p}" for p, t in offered)
        explanation = _("It names %(targets)s, but this node offers no %(what)s.") % names
        return row(WRONG, explanation, [_record(name, "SRV", "0 0 0 .")], answer.records)
    if port is None:
        return row(OK, _("This node offers no %(what)s; nothing to publish.") % names, (), answer.records)
    publish = [_record(name, "SRV", f"0 1 {port} {fqdn(setup.hostname)}")]
    if not targets:
        return row(
            MISSING, _("No SRV record: mail clients cannot find %(what)s on port %(port)s by it.") % names, publish
        )
    target = next((t for p, t in offered if p == port), None)
    if target is not None:
        return row(OK, _("%(what)s at %(target)s, port %(port)s.") % {**names, "target": target}, (), answer.records)
    names["found"] = ", ".join(f"{t or '.'}:{p}" for p, t in targets)
    return row(WRONG, _("It names %(found)s, but %(what)s listens on port %(port)s.") % names, publish, answer.records)


def check_srv(setup: DomainSetup, lookups: Lookups) -> list[Check]:
    """RFC 6186 (and RFC 8314's _submissions) SRV records pointing at this node's services."""
    return [_check_one_srv(setup, lookups, prefix, what, port) for prefix, what, port in _srv_services(setup)]


def evaluate(setup: DomainSetup, answers: Mapping[Query, Answer]) -> Evaluation:
    """Every check of the domain from the answers so far; what is not among them reads as a timeout."""
    lookups = Lookups(answers)
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
        checks = evaluate(setup, EveryAnswer(Answer(error=str(error) or type(error).__name__))).checks
    else:
        checks = asyncio.run(run_checks(setup, resolver, timeout_s=timeout_s))
    return Report(
        domain=domain.name,
        resolver=dns_server or _("the system's resolver"),
        checks=checks,
        elapsed_s=round(time.monotonic() - started, 3),
    )
