"""SMTP policy as pure decisions: every rule a session or the worker's sweep applies, without I/O.

The adapter (`servers.smtp`, aiosmtpd underneath) owns sockets, the event loop, the clock and the
disk; at each step it calls one function here with plain values -- the client's address, the
worker's `ServerSnapshot`, the session's counters, the envelope's addresses as strings -- and gets
back a reply constant from `servers.replies` (or None: go on) or where a recipient's mail goes.
A reply that starts with 421 also ends the session (`closes_connection`). Nothing here touches
asyncio, aiosmtpd, sockets, Redis or the ORM, so every rule is tested in microseconds
(tests/test_smtp_policy.py).

The path of one session, and the function that decides each step:

    connect    connect_refusal, needs_client_name, client_refusal   (and the dispatcher: server_full_refusal)
    EHLO       ehlo_lines
    AUTH       auth_requires_tls, auth_failure_reply   (the password and the guesses: services.signin_guard)
    MAIL       mail_refusal (may_send_as), dnsbl_query_name, dnsbl_answer_lists, dnsbl_refusal, dnsbl_header,
               sender_deny_refusal, sender_allowed, sender_domain_refusal, ptr_sender_refusal,
               any_domain_allows_sender, sending_blocked_refusal
    RCPT       route_recipient (split_recipient, is_relay_trick), relay_permitted, harvest_penalty,
               greylist_triplet, greylist_decision, domain_sender_refusal, domain_allows_sender
               spf_applies, spf_refusal   (the SPF evaluation itself: servers.spf)
    DATA       message_rate_keys, data_refusal (message_format.hop_count),
               dmarc_refusal, dmarc_quarantines   (DMARC and the header: servers.message_auth)
    end of DATA  (the Filters tab) attachment_verdict (message_filters), virus_reply, spam_verdict, spam_headers
               effective_outbound_limits, outbound_limit_exceeded
    any line   command_refusal, is_command_error, MAX_COMMAND_ERRORS
    sweep      sweep_reply
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import idna

from servers import message_filters, replies
from servers.message_filters import Finding, MimePart, forbidden_parts
from servers.message_format import hop_count
from servers.models import AccessRuleKind

if TYPE_CHECKING:  # servers.snapshot imports ClientList from here
    from servers.snapshot import Destination, ServerSnapshot, SmtpPolicy

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RuleError(ValueError):
    """A rule value that does not fit its kind; the message is fit for a user."""


def normalize_rule(kind: str, value: str) -> str:
    """Check one access/relay rule and return its canonical text."""
    value = (value or "").strip()
    try:
        if kind == AccessRuleKind.ADDRESS:
            return str(ipaddress.ip_address(value))
        if kind == AccessRuleKind.NETWORK:
            return str(ipaddress.ip_network(value, strict=False))
        if kind == AccessRuleKind.RANGE:
            start, _, end = value.partition("-")
            first, last = ipaddress.ip_address(start.strip()), ipaddress.ip_address(end.strip())
            if first.version != last.version or int(first) > int(last):
                raise RuleError(f"{value!r}: the range must go from a lower to a higher address of one family.")
            return f"{first}-{last}"
        if kind == AccessRuleKind.DOMAIN:
            name = value.lower().rstrip(".")
            if not name or " " in name:
                raise RuleError(f"{value!r} is not a domain name.")
            return name
    except ValueError as exc:
        if isinstance(exc, RuleError):
            raise
        raise RuleError(f"{value!r} is not a valid {AccessRuleKind(kind).label.lower()}.") from None
    raise RuleError(f"{kind!r} is not a kind of rule (address, network, range, domain).")


@dataclass(frozen=True)
class ClientList:
    """A list of clients by address, network, range or (reverse-DNS) domain name."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    ranges: tuple[tuple[IPAddress, IPAddress], ...] = ()
    domains: tuple[str, ...] = ()

    @classmethod
    def from_rules(cls, rules: Iterable[tuple[str, str]]) -> ClientList:
        networks, ranges, domains = [], [], []
        for kind, value in rules:
            if kind in (AccessRuleKind.ADDRESS, AccessRuleKind.NETWORK):
                networks.append(ipaddress.ip_network(value, strict=False))
            elif kind == AccessRuleKind.RANGE:
                start, _, end = value.partition("-")
                ranges.append((ipaddress.ip_address(start), ipaddress.ip_address(end)))
            elif kind == AccessRuleKind.DOMAIN:
                domains.append(value)
        return cls(tuple(networks), tuple(ranges), tuple(domains))

    @property
    def needs_reverse_dns(self) -> bool:
        return bool(self.domains)

    def __bool__(self) -> bool:
        return bool(self.networks or self.ranges or self.domains)

    def matches(self, client_ip: str, confirmed_name: str | None = None) -> bool:
        """Whether the client is on the list; `confirmed_name` is its forward-confirmed PTR name."""
        if not self:
            return False  # most lists are empty: no address to parse (asked at every check of a message)
        try:
            address = ipaddress.ip_address(client_ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if any(address in network for network in self.networks if network.version == address.version):
            return True
        if any(
            first.version == address.version and int(first) <= int(address) <= int(last) for first, last in self.ranges
        ):
            return True
        if confirmed_name:
            name = confirmed_name.lower().rstrip(".")
            return any(name == domain or name.endswith("." + domain) for domain in self.domains)
        return False


def connection_allowed(policy: str, access_list: ClientList, client_ip: str, confirmed_name: str | None) -> bool:
    """The Access tab's connection control: "only the list below" or "all except the list below"."""
    listed = access_list.matches(client_ip, confirmed_name)
    return listed if policy == "only_listed" else not listed


def is_relay_trick(address: str) -> bool:
    """Addresses that try to route through us to somewhere else (RFC 5321 3.6.1, 4.1.3).

    `user%other@ours` (percent hack), `other!user@ours` (UUCP bang path), `"user@other"@ours`
    (quoted at-sign), `@ours:user@other` (source route), `user@[192.0.2.1]` (address literal).
    """
    if address.startswith("@"):
        return True
    local_part, at, domain = address.rpartition("@")
    if not at:
        return "%" in address or "!" in address or '"' in address
    if domain.startswith("["):
        return True
    return any(char in local_part for char in '%!@":')


# Postfix's smtpd_hard_error_limit: after this many bad commands in one session we say 421 and hang up.
MAX_COMMAND_ERRORS = 20
# C0 controls and DEL, except HTAB: never part of an SMTP command (RFC 5321 4.1.2 allows none of them).
_CONTROL_CHARACTERS = bytes(range(0x20)).replace(b"\t", b"") + b"\x7f"


def command_refusal(line: bytes, *, smtputf8_transaction: bool) -> str | None:
    """The reply that refuses a command line (without its CRLF) before it is parsed, or None.

    Commands are ASCII without control characters (RFC 5321 2.4, 4.1.2): a NUL in EHLO would end
    up in the Received: header. 8-bit text is UTF-8 in an address, and only where RFC 6531 allows
    it: MAIL with the SMTPUTF8 parameter, and RCPT in a transaction that MAIL opened with it.
    """
    if len(line.translate(None, _CONTROL_CHARACTERS)) != len(line):
        return replies.CONTROL_CHARACTER_IN_COMMAND
    if line.isascii():
        return None
    verb, _, argument = line.partition(b" ")
    verb = verb.upper()
    if verb == b"MAIL":
        address_allowed = any(word.upper() == b"SMTPUTF8" for word in argument.split()[1:])
    elif verb == b"RCPT":
        address_allowed = smtputf8_transaction
    else:
        return replies.EIGHT_BIT_IN_COMMAND
    if not address_allowed:
        return replies.NON_ASCII_ADDRESS_WITHOUT_SMTPUTF8
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return replies.INVALID_UTF8_IN_COMMAND
    return None


def is_command_error(reply: str) -> bool:
    """Whether a reply tells the client its command was wrong (syntax, unknown, out of order).

    These count toward MAX_COMMAND_ERRORS; refusals by policy (relay, unknown user, AUTH failures)
    have their own limits.
    """
    return reply[:3] in ("500", "501", "502", "503", "504", "555") or reply[:9] in ("553 5.1.3", "553 5.6.7")


def closes_connection(reply: str) -> bool:
    """Whether a policy reply also ends the session (RFC 5321 3.8: 421 closes the channel)."""
    return reply.startswith("421")


# -- connect ----------------------------------------------------------------------------------------


def server_full_refusal(policy: SmtpPolicy, open_sessions: int) -> str | None:
    """TOO_MANY_CONNECTIONS when `open_sessions` (not counting the new one) already fill the server."""
    if policy.max_connections is not None and open_sessions >= policy.max_connections:
        return replies.TOO_MANY_CONNECTIONS
    return None


def connect_refusal(
    policy: SmtpPolicy, *, paused: bool, stopping: bool, open_sessions: int, from_client: int
) -> str | None:
    """The reply that turns a new client away before the greeting, or None.

    `open_sessions` and `from_client` count the server's and this address's other sessions. A paused
    server still listens, but answers new clients 421 and hangs up (IIS "paused").
    """
    if stopping:
        return replies.SHUTTING_DOWN
    if paused:
        return replies.SERVICE_NOT_AVAILABLE
    refusal = server_full_refusal(policy, open_sessions)
    if refusal is not None:
        return refusal
    if policy.max_connections_per_client is not None and from_client >= policy.max_connections_per_client:
        return replies.TOO_MANY_FROM_CLIENT
    return None


def needs_client_name(policy: SmtpPolicy) -> bool:
    """Whether the connect rules need the client's forward-confirmed reverse DNS name."""
    return policy.access_list.needs_reverse_dns or policy.require_client_ptr


def client_refusal(policy: SmtpPolicy, client_ip: str, confirmed_name: str | None) -> str | None:
    """The Access tab's refusal of this client (reverse DNS, connection control), or None."""
    if policy.require_client_ptr and not confirmed_name:
        return replies.NO_REVERSE_DNS
    if policy.access_list and not connection_allowed(
        policy.connection_policy, policy.access_list, client_ip, confirmed_name
    ):
        return replies.CONNECTION_REFUSED
    return None


# -- EHLO and AUTH ----------------------------------------------------------------------------------


def ehlo_lines(policy: SmtpPolicy, lines: list[str]) -> list[str]:
    """aiosmtpd's EHLO reply with our extensions, and without AUTH when basic sign-in is off.

    RFC 2920 and RFC 2034: the session reads pipelined commands in order, and every reply carries
    an enhanced status code.
    """
    if not policy.allow_basic_auth:
        lines = [line for line in lines if not line[4:].startswith("AUTH")]
    return [*lines[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", lines[-1]]


def auth_requires_tls(policy: SmtpPolicy, *, implicit_tls: bool) -> bool:
    """No password in plaintext: AUTH is neither offered nor taken before STARTTLS (538 5.7.11)."""
    return not implicit_tls and (policy.require_tls or policy.auth_requires_tls)


def auth_failure_reply(policy: SmtpPolicy, *, failures: int, reason: str) -> str:
    """The reply to a refused sign-in; `failures` counts this connection's, this one included."""
    if failures >= policy.max_auth_failures_per_connection:
        return replies.TOO_MANY_AUTH_FAILURES
    return replies.AUTH_LOCKED if reason == "locked" else replies.AUTH_FAILED


# -- MAIL -------------------------------------------------------------------------------------------


def may_send_as(snapshot: ServerSnapshot, mailbox_address: str, sender: str) -> bool:
    """Whether a user signed in as `mailbox_address` may use `sender` in MAIL FROM."""
    local_part, _, domain = sender.lower().rpartition("@")
    return f"{local_part}@{snapshot.alias_targets.get(domain, domain)}" == mailbox_address.lower()


def mail_refusal(
    snapshot: ServerSnapshot,
    sender: str,
    *,
    tls_active: bool,
    messages_accepted: int,
    bytes_accepted: int,
    signed_in_as: str | None,
) -> str | None:
    """The reply that refuses MAIL FROM:<sender>, or None; the counters are the session's so far."""
    policy = snapshot.policy
    if policy.require_tls and not tls_active:
        return replies.TLS_REQUIRED
    if messages_accepted >= policy.max_messages_per_connection:
        return replies.TOO_MANY_MESSAGES
    if bytes_accepted >= policy.max_session_size_bytes:
        return replies.SESSION_TOO_BIG
    if signed_in_as:
        if sender and not may_send_as(snapshot, signed_in_as, sender):
            return replies.SENDER_NOT_OWNED.format(address=sender, user=signed_in_as)
    elif policy.require_auth_for_local_senders and snapshot.accepts_domain(sender.rpartition("@")[2].lower()):
        return replies.LOCAL_SENDER_MUST_AUTHENTICATE.format(address=sender)
    return None


# -- the Anti-spam tab (MAIL and RCPT) -----------------------------------------------------------------


def antispam_exempt(policy: SmtpPolicy, *, signed_in_as: str | None, client_ip: str) -> bool:
    """Signed-in users and relay-list clients (our own users, the trusted LAN) skip DNSBL and greylisting."""
    return bool(signed_in_as) or policy.relay_list.matches(client_ip)


def split_zone_list(text: str) -> list[str]:
    """The zone names of a DNSBL setting: one a line, or separated by commas or spaces."""
    return [word for word in re.split(r"[\s,]+", text or "") if word]


def dnsbl_query_name(client_ip: str, zone: str) -> str | None:
    """The name to look up in `zone` for this client (RFC 5782 2.1 for IPv4, 2.4 for IPv6), or None.

    IPv4 is its octets reversed (192.0.2.1 -> 1.2.0.192.zone); IPv6 its 32 nibbles reversed; an
    IPv4-mapped IPv6 address is asked as the IPv4 address it is.
    """
    try:
        address = ipaddress.ip_address(client_ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        reversed_part = ".".join(reversed(str(address).split(".")))
    else:
        reversed_part = ".".join(reversed(address.exploded.replace(":", "")))
    return f"{reversed_part}.{zone}"


# RFC 5782 2.3: a listing is an A record in 127.0.0.0/8; 127.0.0.1 and 127.255.255.0/24 are the
# lists' error codes (Spamhaus: "you asked through a public resolver", "over quota"), not listings.
_DNSBL_ERROR_CODES = ipaddress.ip_network("127.255.255.0/24")
_LOOPBACK_NET = ipaddress.ip_network("127.0.0.0/8")


def dnsbl_answer_lists(addresses: Iterable[str]) -> bool:
    """Whether a zone's A records for a client say it is listed."""
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if (
            isinstance(address, ipaddress.IPv4Address)
            and address in _LOOPBACK_NET
            and address not in _DNSBL_ERROR_CODES
            and str(address) != "127.0.0.1"
        ):
            return True
    return False


def dnsbl_refusal(policy: SmtpPolicy, client_ip: str, listed_zones: Sequence[str]) -> str | None:
    """DNSBL_LISTED naming the first zone that lists the client, when the action is reject.

    Asked at MAIL, not at connect: AUTH comes after the greeting, and signed-in users are exempt
    (`antispam_exempt`); a refusal before the greeting would also reach clients that never get
    to say who they are. A lookup that failed is not a listing (fail open).
    """
    if policy.dnsbl_action != "reject" or not listed_zones:
        return None
    return replies.DNSBL_LISTED.format(address=client_ip, zone=listed_zones[0])


def dnsbl_header(policy: SmtpPolicy, client_ip: str, listed_zones: Sequence[str]) -> bytes:
    """The X-DNSBL header lines the tag action adds to an accepted message (empty when not listed)."""
    if policy.dnsbl_action != "tag":
        return b""
    return b"".join(f"X-DNSBL: {zone} listed {client_ip}\r\n".encode("ascii") for zone in listed_zones)


# Greylisting (Harris, "The next step in the spam control war", 2003, as postgrey does it).
GREYLIST_RETRY_WINDOW_S = 24 * 3600  # a retry must come within this long of the first attempt
GREYLIST_PASS_S = 36 * 24 * 3600  # a triplet that passed is let through this long


def greylist_triplet(client_ip: str, sender: str, recipient: str) -> str:
    """The (client network, sender, recipient) key: IPv4 by its /24, IPv6 by its /64, addresses lower-cased.

    Big senders retry from another address of the same pool; a network, not an address, is what
    stays the same between attempts.
    """
    try:
        address = ipaddress.ip_address(client_ip.split("%", 1)[0])
    except ValueError:
        network = client_ip.strip().lower() or "unknown"
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        prefix = 24 if isinstance(address, ipaddress.IPv4Address) else 64
        network = str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
    return f"{network} {sender.lower()} {recipient.lower()}"


class GreylistDecision(NamedTuple):
    """What to answer one greylisted RCPT, and what the adapter must remember in Redis."""

    deferred: bool  # answer GREYLISTED
    record_first_seen: bool  # `now` is the first attempt (a new triplet, or one whose window ran out)
    record_pass: bool  # let the triplet through until now + GREYLIST_PASS_S


def greylist_decision(
    first_seen: float | None, passed_until: float | None, *, now: float, delay_s: int
) -> GreylistDecision:
    """Greylisting of one triplet, given when it was first seen and until when it may pass (epoch seconds)."""
    if passed_until is not None and now < passed_until:
        return GreylistDecision(False, False, True)  # known good: accepted, and its 36 days start again
    if first_seen is None or now - first_seen > GREYLIST_RETRY_WINDOW_S:
        return GreylistDecision(True, True, False)
    if now - first_seen < delay_s:
        return GreylistDecision(True, False, False)  # too early: the first attempt's time stands
    return GreylistDecision(False, False, True)


# -- SPF (MAIL) and DMARC (DATA) -------------------------------------------------------------------


def sender_auth_applies(policy: SmtpPolicy) -> bool:
    """Whether the server checks SPF, DKIM and DMARC and adds Authentication-Results at all."""
    return policy.spf_action != "none" or policy.dmarc_action != "none"


def spf_refusal(policy: SmtpPolicy, spf_result: str, *, address: str, domain: str, client_ip: str) -> str | None:
    """SPF_FAILED for an SPF fail when spf_action is reject (RFC 7208 8.4), else None.

    Asked at MAIL: SPF depends only on the client's address, its HELO name and MAIL FROM, all known
    then, and AUTH (which exempts) comes before MAIL; refusing there spares the RCPT and DATA round
    trips, and a refused MAIL leaves the session free for a next, honest transaction. softfail,
    neutral, none, and temperror (fail open) and permerror (a broken record is the sender's
    problem, not proof of forgery) are accepted; the header records them.
    """
    if policy.spf_action != "reject" or spf_result != "fail":
        return None
    return replies.SPF_FAILED.format(address=address, domain=domain, client=client_ip)


def dmarc_refusal(policy: SmtpPolicy, action: str, domain: str) -> str | None:
    """DMARC_REJECTED after DATA when the From: domain's policy (after pct=) says reject and we honour it."""
    if policy.dmarc_action != "honour" or action != "reject":
        return None
    return replies.DMARC_REJECTED.format(domain=domain)


def dmarc_quarantines(policy: SmtpPolicy, action: str) -> bool:
    """Whether the message goes to the recipients' Junk folders (p=quarantine, honoured)."""
    return policy.dmarc_action == "honour" and action == "quarantine"


# -- sender checks: the sender's domain, the client's name, the sender lists -----------------------


def normalized_domain(name: str) -> str | None:
    """A domain name compared as DNS compares it: IDNA A-label, lower case, no trailing dot (None if invalid)."""
    name = (name or "").strip()
    if name.endswith("."):
        name = name[:-1]
    if not name or name.startswith("[") or ".." in name:
        return None
    try:
        return idna.encode(name, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError):
        try:  # underscores and other names IDNA refuses but DNS carries (_dmarc, old hosts)
            ascii_name = name.encode("ascii").decode("ascii").lower()
        except UnicodeError:
            return None
        return ascii_name or None


def sender_domain(sender: str) -> str | None:
    """The normalised domain of MAIL FROM (None for <>, a bare name or an address literal)."""
    _, at, domain = (sender or "").rpartition("@")
    return normalized_domain(domain) if at else None


def in_domain(name: str, domain: str) -> bool:
    """Whether `name` is `domain` or one of its subdomains; both already normalised."""
    return name == domain or name.endswith("." + domain)


class SenderDomainLookup(NamedTuple):
    """What DNS said about a sender's domain: `failed` when it did not answer in time (or SERVFAIL)."""

    exists: bool  # the name has an MX, A or AAAA record
    failed: bool = False


def sender_domain_refusal(sender: str, lookup: SenderDomainLookup) -> str | None:
    """SENDER_DOMAIN_UNKNOWN when the sender's domain has no MX and no address (NXDOMAIN included).

    A lookup that failed (timeout, SERVFAIL) accepts: the rule is fail-open, like DNSBL, because a
    slow resolver must not turn into refused mail; the adapter logs the failure once.
    """
    domain = sender_domain(sender)
    if domain is None or lookup.failed or lookup.exists:
        return None
    return replies.SENDER_DOMAIN_UNKNOWN.format(address=sender, domain=domain)


def ptr_sender_refusal(sender: str, confirmed_names: Sequence[str], *, lookup_failed: bool = False) -> str | None:
    """PTR_NOT_IN_SENDER_DOMAIN unless a forward-confirmed PTR name of the client lies in the sender's domain.

    `confirmed_names` are the client's PTR names whose A/AAAA records include its address (FCrDNS).
    spam.com's host posing as example.com: its name mail.spam.com is not in example.com, refused.
    A failed lookup (timeout) accepts, as `sender_domain_refusal` does.
    """
    domain = sender_domain(sender)
    if domain is None or lookup_failed:
        return None
    normalised = [name for name in (normalized_domain(n) for n in confirmed_names) if name]
    if any(in_domain(name, domain) for name in normalised):
        return None
    shown = normalised[0] if normalised else "none"
    return replies.PTR_NOT_IN_SENDER_DOMAIN.format(address=sender, name=shown, domain=domain)


def canonical_sender_entry(raw: str) -> str:
    """One line of a sender list in its canonical form: "user@example.org", or "example.org" for a domain.

    "@example.org" and "example.org" are the same domain entry (it matches its subdomains too);
    domains are IDNA A-labels without a trailing dot, addresses lower-cased. Raises RuleError.
    """
    text = (raw or "").strip()
    local_part, at, domain_text = text.rpartition("@")
    if not text or any(char.isspace() for char in text) or "," in text or ";" in text:
        raise RuleError(f"{raw!r} is not an address or a domain (one a line).")
    if at and (local_part.count("@") or '"' in local_part or "<" in text or ">" in text):
        raise RuleError(f"{raw!r} is not an address or a domain (one a line).")
    domain = normalized_domain(domain_text)
    if domain is None or "." not in domain or not all(_SENDER_LABEL.match(label) for label in domain.split(".")):
        raise RuleError(f"{raw!r}: {domain_text or text!r} is not a valid domain name (like example.org).")
    return f"{local_part.lower()}@{domain}" if local_part else domain


_SENDER_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
MAX_SENDER_LIST_ENTRIES = 1000


def parse_sender_list(text: str) -> list[str]:
    """The canonical entries of a sender list (one a line; commas and spaces also separate). Raises RuleError."""
    entries: list[str] = []
    for word in re.split(r"[\s,;]+", text or ""):
        if word:
            entry = canonical_sender_entry(word)
            if entry not in entries:
                entries.append(entry)
    if len(entries) > MAX_SENDER_LIST_ENTRIES:
        raise RuleError(f"At most {MAX_SENDER_LIST_ENTRIES} entries.")
    return entries


@dataclass(frozen=True)
class SenderList:
    """Sender addresses and domains (a domain entry also matches its subdomains)."""

    addresses: frozenset[str] = frozenset()
    domains: tuple[str, ...] = ()

    @classmethod
    def from_text(cls, text: str) -> SenderList:
        """The list of a stored setting (already canonical); an entry that no longer parses is skipped."""
        addresses, domains = set(), []
        for word in re.split(r"[\s,;]+", text or ""):
            try:
                entry = canonical_sender_entry(word) if word else ""
            except RuleError:
                continue
            if "@" in entry:
                addresses.add(entry)
            elif entry:
                domains.append(entry)
        return cls(frozenset(addresses), tuple(domains))

    def __bool__(self) -> bool:
        return bool(self.addresses or self.domains)

    def matches(self, sender: str) -> bool:
        """Whether MAIL FROM is on the list; the null sender <> never is."""
        if not self or not sender:
            return False
        domain = sender_domain(sender)
        if domain is None:
            return False
        if f"{sender.rpartition('@')[0].lower()}@{domain}" in self.addresses:
            return True
        return any(in_domain(domain, entry) for entry in self.domains)


def sender_allowed(policy: SmtpPolicy, sender: str) -> bool:
    """The server's allow list: the sender skips the anti-spam checks (DNSBL, greylisting, sender checks)."""
    return policy.sender_allow.matches(sender)


def sender_deny_refusal(policy: SmtpPolicy, sender: str) -> str | None:
    """SENDER_DENIED at MAIL when the server's deny list has the sender (the allow list does not override it)."""
    if policy.sender_deny.matches(sender):
        return replies.SENDER_DENIED.format(address=sender)
    return None


def domain_sender_lists(snapshot: ServerSnapshot, recipient_domain: str) -> tuple[SenderList, SenderList]:
    """The (allow, deny) sender lists of the local domain a recipient is in (an alias domain: its target's)."""
    domain = snapshot.alias_targets.get(recipient_domain, recipient_domain)
    return snapshot.domain_sender_lists.get(domain, (SenderList(), SenderList()))


def domain_sender_refusal(snapshot: ServerSnapshot, recipient_domain: str, sender: str, recipient: str) -> str | None:
    """SENDER_DENIED_FOR_DOMAIN at RCPT when the recipient's domain denies the sender."""
    _, deny = domain_sender_lists(snapshot, recipient_domain)
    if deny.matches(sender):
        return replies.SENDER_DENIED_FOR_DOMAIN.format(address=sender, recipient=recipient)
    return None


def domain_allows_sender(snapshot: ServerSnapshot, recipient_domain: str, sender: str) -> bool:
    """Whether the recipient's domain's allow list lets this sender skip the anti-spam checks."""
    allow, _ = domain_sender_lists(snapshot, recipient_domain)
    return allow.matches(sender)


def any_domain_allows_sender(snapshot: ServerSnapshot, sender: str) -> bool:
    """Whether some local domain allows the sender: then a MAIL-stage anti-spam refusal waits for RCPT,
    where it applies only to recipients of the domains that do not allow the sender."""
    return bool(sender) and any(allow.matches(sender) for allow, _ in snapshot.domain_sender_lists.values())


# -- outbound abuse limits of a signed-in mailbox ----------------------------------------------------


class OutboundLimits(NamedTuple):
    """A mailbox's limits on what it sends (0: no limit)."""

    messages_per_hour: int = 0
    messages_per_day: int = 0
    new_recipients_per_day: int = 0

    def __bool__(self) -> bool:
        return any(self)


def effective_outbound_limits(
    policy: SmtpPolicy, overrides: tuple[int | None, int | None, int | None] = (None, None, None)
) -> OutboundLimits:
    """The server's limits, each replaced by the mailbox's own when it has one (0 there: off for it)."""
    server = (
        policy.outbound_max_messages_per_hour,
        policy.outbound_max_messages_per_day,
        policy.outbound_max_new_recipients_per_day,
    )
    return OutboundLimits(
        *(own if own is not None else default for own, default in zip(overrides, server, strict=True))
    )


def outbound_limit_exceeded(
    limits: OutboundLimits, *, messages_this_hour: int, messages_today: int, new_recipients_today: int
) -> str | None:
    """Why one more message (counted in the figures, this one included) passes a limit, or None."""
    if limits.messages_per_hour and messages_this_hour > limits.messages_per_hour:
        return f"more than {limits.messages_per_hour} messages in an hour"
    if limits.messages_per_day and messages_today > limits.messages_per_day:
        return f"more than {limits.messages_per_day} messages in a day"
    if limits.new_recipients_per_day and new_recipients_today > limits.new_recipients_per_day:
        return f"more than {limits.new_recipients_per_day} new recipients in a day"
    return None


def sending_blocked_refusal(user: str, reason: str) -> str:
    """The reply to MAIL from a signed-in mailbox that is blocked from sending."""
    return replies.SENDING_BLOCKED.format(user=user, reason=reason or "an outbound limit was passed")


# -- RCPT -------------------------------------------------------------------------------------------


def split_recipient(address: str, default_domain: str) -> tuple[str, str] | None:
    """Local part and canonical domain of a RCPT address; a bare name gets the default domain."""
    local_part, at, domain = address.rpartition("@")
    if not at:
        # RFC 5321 allows a bare "postmaster"; IIS appends the default domain to bare names.
        local_part, domain = address, default_domain
    domain = domain.strip().rstrip(".").lower()
    if not domain.startswith("["):
        try:
            domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
        except UnicodeError:
            return None
    if not local_part or not domain:
        return None
    return local_part, domain


class Recipient(NamedTuple):
    """Where RCPT TO:<address> goes, once the address is understood.

    `address` is the recipient as we record it. A `remote` recipient is another domain's (relayed);
    a local one with no `destination` does not exist here (UNKNOWN_USER).
    """

    address: str
    domain: str
    remote: bool
    needs_relay: bool
    destination: Destination | None = None

    @property
    def unknown(self) -> bool:
        return not self.remote and self.destination is None


def route_recipient(snapshot: ServerSnapshot, address: str, *, accepted_so_far: int) -> str | Recipient:
    """A refusal of RCPT TO:<address> that needs nothing more, or where its mail goes.

    If `needs_relay`, the adapter first asks `relay_permitted` (then POP-before-SMTP) and refuses
    with RELAY_DENIED if neither allows it: the address is another domain's, or tries to route
    through us (`is_relay_trick`).
    """
    if accepted_so_far >= snapshot.policy.max_recipients_per_message:
        return replies.TOO_MANY_RECIPIENTS
    parts = split_recipient(address, snapshot.default_domain)
    if parts is None:
        return replies.BAD_ADDRESS
    local_part, domain = parts
    if not snapshot.accepts_domain(domain):
        return Recipient(f"{local_part}@{domain}", domain, True, True)  # remote, needs relay
    local_part = local_part.lower()
    # Positional: RCPT is on the hot path, and a tuple built from keywords costs twice as much.
    return Recipient(
        f"{local_part}@{domain}", domain, False, is_relay_trick(address), snapshot.destination(local_part, domain)
    )


def relay_permitted(snapshot: ServerSnapshot, *, signed_in_as: str | None, client_ip: str, domain: str) -> bool:
    """Whether we may take mail for another domain from this client without asking Redis.

    Signed-in users, domains marked "relay incoming mail", and clients on the relay list may; else
    only POP-before-SMTP (`pop_login_recent`) can still allow it.
    """
    return bool(signed_in_as) or domain in snapshot.relay_domains or snapshot.policy.relay_list.matches(client_ip)


def pop_login_recent(logged_in_at: float | None, *, now: float, minutes: int) -> bool:
    """POP-before-SMTP: whether a POP3 login at `logged_in_at` (epoch seconds) still lets the client relay."""
    return logged_in_at is not None and now - logged_in_at <= minutes * 60


def harvest_penalty(policy: SmtpPolicy, unknown_recipients: int) -> tuple[float, bool]:
    """Directory harvesting: how long to wait before answering the n-th unknown recipient, and
    whether to hang up (HARVEST_LIMIT) after it."""
    limit = policy.harvest_unknown_recipients_limit
    if not limit or unknown_recipients < limit:
        return 0, False
    return min(unknown_recipients - limit + 1, 5), unknown_recipients >= limit * 2


# -- DATA -------------------------------------------------------------------------------------------


def message_rate_keys(policy: SmtpPolicy, *, client_ip: str, sender: str) -> list[tuple[str, int]]:
    """The hourly counters one more message counts toward, with their limits."""
    keys = []
    if policy.max_messages_per_client_per_hour:
        keys.append((f"client:{client_ip}", policy.max_messages_per_client_per_hour))
    if policy.max_messages_per_sender_per_hour:
        keys.append((f"sender:{sender.lower()}", policy.max_messages_per_sender_per_hour))
    return keys


def data_refusal(
    policy: SmtpPolicy, content: bytes, *, bytes_accepted: int, recent_counts: Iterable[tuple[int, int]] = ()
) -> str | None:
    """The reply that refuses a received message before it is stored, or None.

    `recent_counts` gives (messages this hour, limit) per key of `message_rate_keys`; it is read
    only if the message passes the other checks.
    """
    if hop_count(content) > policy.max_hop_count:
        return replies.TOO_MANY_HOPS
    if bytes_accepted + len(content) > policy.max_session_size_bytes:
        return replies.SESSION_TOO_BIG
    if any(count >= limit for count, limit in recent_counts):
        return replies.RATE_LIMITED
    return None


# -- the Filters tab (end of DATA) ---------------------------------------------------------------
# Applied to neither signed-in users nor relay-list clients (`antispam_exempt`), like the Anti-spam
# tab: the rule, and an outbound scan would need its own setting (see docs/architecture.md).


def reply_safe(text: str, limit: int = 120) -> str:
    """Text a sender chose (a file name, a signature), made fit for one SMTP reply line: printable
    ASCII (others as \\x.. escapes), no quotes, at most `limit` characters."""
    escaped = text.encode("ascii", "backslashreplace").decode("ascii")
    cleaned = "".join(char if 32 <= ord(char) < 127 and char != '"' else "?" for char in escaped)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


class AttachmentVerdict(NamedTuple):
    """What the attachment filter does with one message: refuse it, or strip `to_strip` (or nothing)."""

    refusal: str | None
    to_strip: tuple[Finding, ...] = ()


def attachment_verdict(policy: SmtpPolicy, parts: Sequence[MimePart], *, complete: bool = True) -> AttachmentVerdict:
    """The attachment filter's answer for a message's leaf parts (`message_filters.walk_message`).

    refuse: ATTACHMENT_REFUSED naming the first forbidden file; strip: the forbidden parts, replaced
    by a notice and the message kept; off: nothing. A message with more parts than were walked
    (`complete` false) cannot be checked: refused in either mode.
    """
    if policy.attachment_filter == "off":
        return AttachmentVerdict(None)
    if not complete:
        return AttachmentVerdict(replies.TOO_MANY_PARTS.format(limit=message_filters.MAX_PARTS))
    findings = forbidden_parts(parts, policy.attachment_rules)
    if not findings:
        return AttachmentVerdict(None)
    if policy.attachment_filter == "refuse":
        first = findings[0]
        return AttachmentVerdict(
            replies.ATTACHMENT_REFUSED.format(filename=reply_safe(first.name), reason=first.reason)
        )
    return AttachmentVerdict(None, tuple(findings))


class ScanResult(NamedTuple):
    """What the virus scanner said: a signature it found, or an error (it could not tell), or neither."""

    signature: str = ""
    error: str = ""


def virus_reply(policy: SmtpPolicy, result: ScanResult) -> str | None:
    """VIRUS_FOUND naming the signature; a scanner that could not tell defers (closed) or lets pass (open)."""
    if result.signature:
        return replies.VIRUS_FOUND.format(signature=reply_safe(result.signature))
    if result.error and policy.virus_scanner_failure == "closed":
        return replies.VIRUS_SCANNER_UNAVAILABLE
    return None


class SpamVerdict(NamedTuple):
    """What a spam score leads to: mark it (headers, subject prefix), file it in Junk, or refuse it."""

    spam: bool
    junk: bool
    refusal: str | None


def _reached(score: float, threshold: float | None) -> bool:
    return threshold is not None and score >= threshold


def spam_verdict(policy: SmtpPolicy, score: float) -> SpamVerdict:
    """The three thresholds of the Filters tab, each reached at its value or above (rspamd's rule)."""
    refusal = replies.SPAM_REFUSED.format(score=f"{score:.2f}") if _reached(score, policy.spam_refuse_score) else None
    return SpamVerdict(_reached(score, policy.spam_tag_score), _reached(score, policy.spam_junk_score), refusal)


def spam_headers(policy: SmtpPolicy, score: float, verdict: SpamVerdict) -> bytes:
    """X-Spam-Flag (spam only), X-Spam-Score and X-Spam-Status, as SpamAssassin writes them."""
    required = "" if policy.spam_tag_score is None else f" required={policy.spam_tag_score:.2f}"
    lines = ["X-Spam-Flag: YES\r\n"] if verdict.spam else []
    lines.append(f"X-Spam-Score: {score:.2f}\r\n")
    lines.append(f"X-Spam-Status: {'Yes' if verdict.spam else 'No'}, score={score:.2f}{required}\r\n")
    return "".join(lines).encode("ascii")


# -- the worker's sweep -----------------------------------------------------------------------------

# A session is not judged on its data rate before it is this old.
RATE_GRACE_S = 60


def sweep_reply(policy: SmtpPolicy, *, age_s: float, bytes_in: int) -> str | None:
    """Why the periodic sweep closes a session (time limit, minimum data rate), or None."""
    if age_s > policy.max_session_duration_s:
        return replies.SESSION_TOO_LONG
    if policy.min_data_rate_bps and age_s > RATE_GRACE_S and bytes_in / age_s < policy.min_data_rate_bps:
        return replies.TOO_SLOW
    return None
