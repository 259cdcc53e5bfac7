"""Where a recipient domain's mail goes: a domain's own smart host, the server's, or its MX hosts.

RFC 5321 section 5.1: MX records in preference order, random among equal preferences, the domain's
own A/AAAA records when it has no MX; RFC 7505: a null MX ("0 .") means the domain takes no mail.
DNS timeouts and SERVFAIL are temporary; NXDOMAIN is permanent.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

# RFC 3463 / RFC 7505 statuses of routing failures.
NULL_MX = (556, "5.1.10", "Recipient address has null MX")
NO_SUCH_DOMAIN = (550, "5.1.2", "Host unknown: the domain does not exist")
NO_ADDRESS = (550, "5.1.2", "The domain has no mail exchanger and no address")
ROUTING_LOOP = (554, "5.4.6", "Mail for this domain loops back to this server")
DNS_TEMPORARY = (451, "4.4.3", "DNS lookup failed temporarily")
NO_REACHABLE_HOST = (451, "4.4.3", "No address found for any mail exchanger")


class RoutingError(Exception):
    """A recipient domain that cannot be routed now (temporary) or ever (permanent)."""

    def __init__(self, reply: tuple[int, str, str], detail: str = "") -> None:
        self.code, self.status, text = reply
        self.text = f"{text} ({detail})" if detail else text
        super().__init__(f"{self.code} {self.status} {self.text}")

    @property
    def permanent(self) -> bool:
        return self.code >= 500


@dataclass(frozen=True)
class Target:
    """One address to connect to, and the host name it came from."""

    host: str
    address: str
    port: int


@dataclass(frozen=True)
class Route:
    """How to reach one recipient domain: hosts to try in order, and the AUTH to use."""

    targets: tuple[Target, ...]
    via: str  # "mx", "smart host", "domain route"
    username: str = ""
    # As stored (`servers.stored_secrets`, encrypted); the client decrypts it just before AUTH.
    password: str = field(default="", repr=False)
    # Tried when every target above fails temporarily ("attempt direct delivery before smart host").
    fallback: Route | None = None

    @property
    def key(self) -> tuple:
        """Recipients with equal keys go in one SMTP transaction."""
        return (self.targets, self.username, self.fallback.key if self.fallback else None)


@dataclass(frozen=True)
class SmartHost:
    host: str
    port: int
    username: str = ""
    password: str = field(default="", repr=False)


def parse_dns_server(value: str) -> tuple[str, int]:
    """`"10.0.0.53"`, `"127.0.0.1:5353"` or `"[::1]:5353"` -> (address, port)."""
    value = value.strip()
    if value.startswith("["):
        address, _, rest = value[1:].partition("]")
        port = int(rest.lstrip(":") or 53)
    elif value.count(":") == 1:
        address, _, port_text = value.partition(":")
        port = int(port_text)
    else:
        address, port = value, 53
    ipaddress.ip_address(address)  # a name here would need a resolver to resolve the resolver
    return address, port


def make_resolver(dns_server: str = "", *, timeout_s: float = 5.0) -> dns.resolver.Resolver:
    """A resolver asking `dns_server` ("ip[:port]"), or the system's configured ones when empty."""
    if dns_server:
        resolver = dns.resolver.Resolver(configure=False)
        address, port = parse_dns_server(dns_server)
        resolver.nameservers = [address]
        resolver.port = port
    else:
        resolver = dns.resolver.Resolver()
    resolver.lifetime = timeout_s
    resolver.timeout = timeout_s
    return resolver


def order_mx(records: Iterable[tuple[int, str]], rng: random.Random | None = None) -> list[tuple[int, str]]:
    """MX records by preference, shuffled among equal preferences (RFC 5321 section 5.1)."""
    shuffle = rng.shuffle if rng is not None else random.shuffle
    by_preference: dict[int, list[str]] = {}
    for preference, host in records:
        by_preference.setdefault(preference, []).append(host)
    ordered = []
    for preference in sorted(by_preference):
        hosts = by_preference[preference]
        shuffle(hosts)
        ordered += [(preference, host) for host in hosts]
    return ordered


def host_addresses(resolver: dns.resolver.Resolver, host: str) -> list[str]:
    """IPv4 then IPv6 addresses of `host` (a literal is its own address); raises on DNS errors."""
    literal = host.strip("[]")
    try:
        return [str(ipaddress.ip_address(literal))]
    except ValueError:
        pass
    addresses: list[str] = []
    temporary: Exception | None = None
    for rdtype in ("A", "AAAA"):
        try:
            answer = resolver.resolve(host, rdtype, search=False)
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            continue
        except dns.exception.DNSException as error:
            temporary = error
            continue
        addresses += [rdata.address for rdata in answer]
    if not addresses and temporary is not None:
        raise temporary
    return addresses


def mx_records(resolver: dns.resolver.Resolver, domain: str) -> list[tuple[int, str]] | None:
    """The domain's MX records as (preference, host); None when it has none; raises RoutingError."""
    try:
        answer = resolver.resolve(domain, "MX", search=False)
    except dns.resolver.NXDOMAIN as error:
        raise RoutingError(NO_SUCH_DOMAIN, domain) from error
    except dns.resolver.NoAnswer:
        return None
    except dns.exception.DNSException as error:
        raise RoutingError(DNS_TEMPORARY, f"MX {domain}: {type(error).__name__}") from error
    return [(rdata.preference, rdata.exchange.to_text(omit_final_dot=True).lower()) for rdata in answer]


def mx_route(
    resolver: dns.resolver.Resolver,
    domain: str,
    port: int,
    *,
    is_self: Callable[[str, str, int], bool],
    rng: random.Random | None = None,
) -> Route:
    """The route to `domain` through its MX hosts (or its own address when it has no MX)."""
    records = mx_records(resolver, domain)
    if records is None:
        records = [(0, domain)]  # RFC 5321 5.1: the implicit MX
    elif len(records) == 1 and records[0][1] in ("", "."):
        raise RoutingError(NULL_MX, domain)
    records = [(pref, host) for pref, host in records if host not in ("", ".")]
    targets: list[Target] = []
    own_preference: int | None = None
    temporary_failure: Exception | None = None
    resolved: list[tuple[int, str, list[str]]] = []
    for preference, host in order_mx(records, rng):
        try:
            addresses = host_addresses(resolver, host)
        except dns.exception.DNSException as error:
            temporary_failure = error
            continue
        if any(is_self(host, address, port) for address in addresses) or (not addresses and is_self(host, "", port)):
            own_preference = preference if own_preference is None else min(own_preference, preference)
            continue
        resolved.append((preference, host, addresses))
    for preference, host, addresses in resolved:
        # RFC 5321 5.1: when we are an MX ourselves, only more preferred hosts may take the mail.
        if own_preference is not None and preference >= own_preference:
            continue
        targets += [Target(host, address, port) for address in addresses]
    if targets:
        return Route(targets=tuple(targets), via="mx")
    if own_preference is not None:
        raise RoutingError(ROUTING_LOOP, domain)
    if temporary_failure is not None:
        raise RoutingError(NO_REACHABLE_HOST, f"{domain}: {type(temporary_failure).__name__}")
    if records == [(0, domain)]:
        raise RoutingError(NO_ADDRESS, domain)
    raise RoutingError(NO_ADDRESS, f"{domain}: no mail exchanger has an address")


def smart_host_route(resolver: dns.resolver.Resolver, smart_host: SmartHost, via: str) -> Route:
    """The route through a smart host, given as an address, "[address]" or a host name."""
    host = smart_host.host.strip()
    try:
        addresses = host_addresses(resolver, host)
    except dns.resolver.NXDOMAIN as error:
        raise RoutingError(NO_SUCH_DOMAIN, f"smart host {host}") from error
    except dns.exception.DNSException as error:
        raise RoutingError(DNS_TEMPORARY, f"smart host {host}: {type(error).__name__}") from error
    if not addresses:
        raise RoutingError(NO_ADDRESS, f"smart host {host}")
    return Route(
        targets=tuple(Target(host.strip("[]"), a, smart_host.port) for a in addresses),
        via=via,
        username=smart_host.username,
        password=smart_host.password,
    )


def route_domain(
    resolver: dns.resolver.Resolver,
    domain: str,
    *,
    outbound_port: int,
    domain_smart_host: SmartHost | None,
    server_smart_host: SmartHost | None,
    attempt_direct_first: bool,
    is_self: Callable[[str, str, int], bool],
    rng: random.Random | None = None,
) -> Route:
    """Pick the route for one recipient domain, in IIS's order of precedence."""
    if domain_smart_host is not None:
        return smart_host_route(resolver, domain_smart_host, "domain route")
    if server_smart_host is None:
        return mx_route(resolver, domain, outbound_port, is_self=is_self, rng=rng)
    smart = smart_host_route(resolver, server_smart_host, "smart host")
    if not attempt_direct_first:
        return smart
    try:
        direct = mx_route(resolver, domain, outbound_port, is_self=is_self, rng=rng)
    except RoutingError as error:
        if error.permanent and error.status in (NULL_MX[1], ROUTING_LOOP[1]):
            raise
        return smart
    return Route(targets=direct.targets, via="mx", fallback=smart)


def self_checker(hostname: str, server_address: str, server_port: int) -> Callable[[str, str, int], bool]:
    """A test for "this target is our own server": our host name, or our listening address and port."""
    hostname = hostname.lower().rstrip(".")

    def is_self(host: str, address: str, port: int) -> bool:
        if host.lower().rstrip(".") == hostname:
            return True
        if not address or port != server_port:
            return False
        if server_address in ("0.0.0.0", "::"):
            return ipaddress.ip_address(address).is_loopback
        return address == server_address

    return is_self
