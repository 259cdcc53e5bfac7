"""SMTP policy decisions without I/O: client lists, relay tricks, hop counts, command hygiene.

The SMTP session asks these questions; the answers depend only on the arguments, so they are
tested without sockets.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from servers import replies
from servers.models import AccessRuleKind

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


def count_received_headers(message: bytes) -> int:
    """How many Received: trace headers (RFC 5321 6.3) the message already carries."""
    header_end = message.find(b"\r\n\r\n")
    headers = message if header_end < 0 else message[: header_end + 2]
    return sum(1 for line in headers.split(b"\r\n") if line[:9].lower() == b"received:")


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
