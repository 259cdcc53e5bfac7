"""What a mail program needs to reach this installation: derived from the services actually configured.

`client_settings` is a pure function of plain descriptions of the IMAP and POP3 services and the SMTP
virtual servers that take signed-in users' mail; `configured_endpoints` reads those from the database.
The autoconfig answers (Thunderbird, Outlook, Apple) and webmail's "Mail program settings" page are
faces of the same list.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IMAP, POP3, SMTP = "imap", "pop3", "smtp"
# Thunderbird's socketType names; Outlook and Apple map them.
SSL, STARTTLS = "SSL", "STARTTLS"

_WILDCARDS = {"0.0.0.0", "::", ""}


@dataclass(frozen=True)
class Endpoint:
    """One listening service as the console knows it."""

    protocol: str  # IMAP, POP3 or SMTP
    ip_address: str
    port: int
    tls_port: int | None = None
    # SMTP only: takes mail without AUTH (an MX). A server that requires AUTH is a submission server.
    allows_anonymous: bool = False
    # SMTP only: AUTH offered at all.
    allows_auth: bool = True


@dataclass(frozen=True)
class ClientSetting:
    """One incoming or outgoing server entry of a mail program's account."""

    protocol: str
    hostname: str
    port: int
    security: str  # SSL (implicit TLS) or STARTTLS
    username: str

    @property
    def incoming(self) -> bool:
        return self.protocol != SMTP


def host_for(ip_address: str, default_hostname: str) -> str:
    """The host name a client should use: the configured mail host name, unless the service listens
    on one specific address that is not loopback (then that address is what reaches it)."""
    if ip_address in _WILDCARDS:
        return default_hostname
    try:
        address = ipaddress.ip_address(ip_address)
    except ValueError:
        return default_hostname
    if address.is_loopback or address.is_unspecified:
        return default_hostname
    return str(address)


def _entries(endpoint: Endpoint, username: str, default_hostname: str) -> list[ClientSetting]:
    host = host_for(endpoint.ip_address, default_hostname)
    entries = []
    # Implicit TLS first: clients try the first entry first, and it never sends a password in the clear.
    if endpoint.tls_port:
        entries.append(ClientSetting(endpoint.protocol, host, endpoint.tls_port, SSL, username))
    # Every service of ours offers STARTTLS on its plain port.
    entries.append(ClientSetting(endpoint.protocol, host, endpoint.port, STARTTLS, username))
    return entries


def client_settings(endpoints: list[Endpoint], *, address: str, default_hostname: str) -> list[ClientSetting]:
    """Incoming (IMAP, then POP3) and outgoing (SMTP) settings for the mailbox `address`.

    The user name is always the full address: every service accepts it, whatever its default domain.
    Outgoing mail prefers servers that require AUTH (submission servers) over ones that also take
    anonymous mail (an MX, which clients can still use by signing in); servers without AUTH are left out.
    """
    username = address.strip().lower()
    result: list[ClientSetting] = []
    for protocol in (IMAP, POP3):
        for endpoint in endpoints:
            if endpoint.protocol == protocol:
                result.extend(_entries(endpoint, username, default_hostname))
    smtp = [e for e in endpoints if e.protocol == SMTP and e.allows_auth]
    smtp.sort(key=lambda e: (e.allows_anonymous, e.port))
    for endpoint in smtp:
        result.extend(_entries(endpoint, username, default_hostname))
    return result


def local_domain_for(domain_name: str) -> str | None:
    """The local domain whose mailboxes `domain_name` reaches: itself, the local domain an alias
    domain stands for, or None for a domain that is not ours."""
    from servers.models import Domain, DomainType

    domain = (
        Domain.objects.filter(name=domain_name, type__in=[DomainType.LOCAL, DomainType.ALIAS])
        .select_related("alias_of")
        .order_by("-type")  # a local domain of that name first ("local" > "alias")
        .first()
    )
    if domain is None:
        return None
    if domain.type == DomainType.ALIAS:
        return domain.alias_of.name if domain.alias_of else None
    return domain.name


def configured_endpoints(domain_name: str) -> list[Endpoint]:
    """The services that serve `domain_name`'s mailboxes now: the node's IMAP and POP3 services and
    the SMTP servers a signed-in user of that domain can send through (submission servers of the node,
    and the domain's own server)."""
    from servers.models import Domain, DomainType, ImapService, Pop3Service, ServiceState, VirtualServer

    domain = Domain.objects.filter(name=domain_name, type=DomainType.LOCAL).select_related("server").first()
    if domain is None:
        return []
    node_id = domain.server.node_id
    endpoints: list[Endpoint] = []
    for model, protocol in ((ImapService, IMAP), (Pop3Service, POP3)):
        for service in model.objects.filter(node_id=node_id).exclude(desired_state=ServiceState.STOPPED):
            endpoints.append(Endpoint(protocol, service.ip_address, service.port, service.tls_port))
    servers = VirtualServer.objects.filter(node_id=node_id).exclude(desired_state=ServiceState.STOPPED)
    for server in servers:
        submission = not server.allow_anonymous
        if server.pk != domain.server_id and not submission:
            continue
        endpoints.append(
            Endpoint(
                SMTP,
                server.ip_address,
                server.port,
                server.tls_port,
                allows_anonymous=server.allow_anonymous,
                allows_auth=server.allow_basic_auth,
            )
        )
    return endpoints


def settings_for_address(address: str) -> list[ClientSetting] | None:
    """The settings for any address of a local domain (whether or not that mailbox exists, so the
    answer reveals nothing about mailboxes); None for a domain that is not local here."""
    from django.conf import settings

    local_part, at, given_domain = address.strip().lower().rpartition("@")
    if not at or not local_part or not given_domain:
        return None
    # An alias domain's address signs in as the mailbox of the local domain it stands for.
    domain = local_domain_for(given_domain)
    if domain is None:
        return None
    endpoints = configured_endpoints(domain)
    if not endpoints:
        return None
    return client_settings(endpoints, address=f"{local_part}@{domain}", default_hostname=settings.MAIL_HOSTNAME)
