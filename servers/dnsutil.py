"""DNS lookups for policy checks, through a resolver the administrator (or a test) can point anywhere."""

from __future__ import annotations

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename
from django.conf import settings


def make_async_resolver() -> dns.asyncresolver.Resolver:
    """The system resolver, or MAILCONSOLE_DNS_SERVER ("ip" or "ip:port") when set (tests, air gaps)."""
    server = getattr(settings, "DELIVERY_DNS_SERVER", "")
    if not server:
        return dns.asyncresolver.Resolver()
    resolver = dns.asyncresolver.Resolver(configure=False)
    host, _, port = server.rpartition(":") if server.count(":") == 1 else (server, "", "53")
    resolver.nameservers = [host or server]
    resolver.port = int(port or 53)
    resolver.lifetime = 5
    return resolver


async def forward_confirmed_names(resolver: dns.asyncresolver.Resolver, client_ip: str) -> tuple[list[str], bool]:
    """The client's PTR names that resolve back to its address (FCrDNS), and whether a lookup failed.

    "Failed" is a timeout or a server failure, not an answer: NXDOMAIN and NoAnswer are answers
    (no name), so callers that fail open can tell "no name" from "DNS did not say".
    """
    try:
        answer = await resolver.resolve(dns.reversename.from_address(client_ip), "PTR")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, ValueError):
        return [], False
    except (dns.exception.DNSException, OSError):
        return [], True
    family = "AAAA" if ":" in client_ip else "A"
    names: list[str] = []
    failed = False
    for record in answer:
        name = record.target.to_text().rstrip(".")
        try:
            addresses = await resolver.resolve(name, family)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except (dns.exception.DNSException, OSError):
            failed = True
            continue
        if any(a.to_text() == client_ip for a in addresses):
            names.append(name)
    return names, failed and not names


async def forward_confirmed_name(client_ip: str) -> str | None:
    """The client's PTR name if that name resolves back to the client's address (FCrDNS), else None."""
    names, _ = await forward_confirmed_names(make_async_resolver(), client_ip)
    return names[0] if names else None
