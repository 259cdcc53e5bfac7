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


async def forward_confirmed_name(client_ip: str) -> str | None:
    """The client's PTR name if that name resolves back to the client's address (FCrDNS), else None."""
    resolver = make_async_resolver()
    try:
        answer = await resolver.resolve(dns.reversename.from_address(client_ip), "PTR")
    except (dns.exception.DNSException, ValueError):
        return None
    family = "AAAA" if ":" in client_ip else "A"
    for record in answer:
        name = record.target.to_text().rstrip(".")
        try:
            addresses = await resolver.resolve(name, family)
        except dns.exception.DNSException:
            continue
        if any(a.to_text() == client_ip for a in addresses):
            return name
    return None
