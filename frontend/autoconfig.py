"""Mail program autoconfiguration: thin faces of servers.services.client_settings.

Thunderbird's clientConfig (GET, `emailaddress=`), Outlook's Autodiscover (POST of a small XML
request), and, in webmail, an Apple configuration profile and the "Mail program settings" page.
Machine endpoints: unauthenticated by design, so no CSRF; any address of a local domain gets the same
answer whether its mailbox exists or not, and a domain that is not local here gets 404.
"""

from __future__ import annotations

import plistlib
import uuid
import xml.etree.ElementTree as ET

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from frontend.webmail import session
from frontend.webmail.views import _page_context
from servers.services.client_settings import IMAP, POP3, SMTP, SSL, ClientSetting, settings_for_address

# An Autodiscover request is a few hundred bytes; anything much bigger is not one.
MAX_AUTODISCOVER_BYTES = 8192
OUTLOOK_REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
OUTLOOK_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
AUTODISCOVER_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
PROVENANCE = (
    " Derived by MailConsole from the services configured now. Host names are MAILCONSOLE_HOSTNAME "
    "unless a service listens on one specific address. Certificates may be self-signed. "
)


def _settings_or_404(address: str) -> list[ClientSetting]:
    found = settings_for_address(address)
    if not found:
        raise Http404("No such domain here.")
    return found


def _xml_response(root: ET.Element) -> HttpResponse:
    body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return HttpResponse(body, content_type="application/xml; charset=utf-8")


def _sub(parent: ET.Element, tag: str, text: object) -> ET.Element:
    child = ET.SubElement(parent, tag)
    child.text = str(text)
    return child


@require_GET
def thunderbird(request: HttpRequest) -> HttpResponse:
    """clientConfig v1.1 (https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat)."""
    address = request.GET.get("emailaddress", "")
    found = _settings_or_404(address)
    domain = address.strip().lower().rpartition("@")[2]
    root = ET.Element("clientConfig", version="1.1")
    root.append(ET.Comment(PROVENANCE))
    provider = ET.SubElement(root, "emailProvider", id=domain)
    _sub(provider, "domain", domain)
    _sub(provider, "displayName", domain)
    _sub(provider, "displayShortName", domain)
    for setting in found:
        tag = "incomingServer" if setting.incoming else "outgoingServer"
        server = ET.SubElement(provider, tag, type=setting.protocol)
        _sub(server, "hostname", setting.hostname)
        _sub(server, "port", setting.port)
        _sub(server, "socketType", setting.security)
        _sub(server, "authentication", "password-cleartext")
        _sub(server, "username", setting.username)
    return _xml_response(root)


def requested_address(body: bytes) -> str | None:
    """The EMailAddress of an Outlook Autodiscover request, or None. Refused without parsing: bodies
    over the size limit and any DTD (no entities, internal or external, so no XXE or entity bombs)."""
    if len(body) > MAX_AUTODISCOVER_BYTES or b"<!" in body:
        return None
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    for element in root.iter():
        if element.tag.rpartition("}")[2] == "EMailAddress" and element.text:
            return element.text.strip()
    return None


@csrf_exempt
@require_http_methods(["POST"])
def outlook(request: HttpRequest) -> HttpResponse:
    """Outlook's POX Autodiscover answer for an IMAP/POP3/SMTP account."""
    length = request.META.get("CONTENT_LENGTH") or "0"
    if not length.isdigit() or int(length) > MAX_AUTODISCOVER_BYTES:
        return HttpResponse(status=413)
    address = requested_address(request.body)
    if address is None:
        return HttpResponse(status=400)
    found = _settings_or_404(address)
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_NS)
    root.append(ET.Comment(PROVENANCE))
    response = ET.SubElement(root, "Response", xmlns=OUTLOOK_RESPONSE_NS)
    account = ET.SubElement(response, "Account")
    _sub(account, "AccountType", "email")
    _sub(account, "Action", "settings")
    for setting in found:
        protocol = ET.SubElement(account, "Protocol")
        _sub(protocol, "Type", setting.protocol.upper())
        _sub(protocol, "Server", setting.hostname)
        _sub(protocol, "Port", setting.port)
        _sub(protocol, "LoginName", setting.username)
        _sub(protocol, "DomainRequired", "off")
        _sub(protocol, "SPA", "off")
        _sub(protocol, "SSL", "on")
        _sub(protocol, "Encryption", "SSL" if setting.security == SSL else "TLS")
        _sub(protocol, "AuthRequired", "on")
    return _xml_response(root)


def _first(found: list[ClientSetting], protocols: tuple[str, ...]) -> ClientSetting | None:
    for protocol in protocols:
        for setting in found:
            if setting.protocol == protocol:
                return setting
    return None


def mobileconfig_profile(address: str, display_name: str, found: list[ClientSetting]) -> bytes:
    """An unsigned Apple configuration profile with one mail account (no password in it)."""
    incoming = _first(found, (IMAP, POP3))
    outgoing = _first(found, (SMTP,))
    domain = address.rpartition("@")[2]
    account: dict[str, object] = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"mailconsole.{domain}.mail.{address}",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailconsole:mail:{address}")).upper(),
        "PayloadDisplayName": address,
        "EmailAccountDescription": address,
        "EmailAccountName": display_name or address,
        "EmailAddress": address,
        "EmailAccountType": "EmailTypePOP" if incoming and incoming.protocol == POP3 else "EmailTypeIMAP",
    }
    if incoming:
        account |= {
            "IncomingMailServerHostName": incoming.hostname,
            "IncomingMailServerPortNumber": incoming.port,
            "IncomingMailServerUseSSL": True,
            "IncomingMailServerUsername": incoming.username,
            "IncomingMailServerAuthentication": "EmailAuthPassword",
        }
    if outgoing:
        account |= {
            "OutgoingMailServerHostName": outgoing.hostname,
            "OutgoingMailServerPortNumber": outgoing.port,
            "OutgoingMailServerUseSSL": True,
            "OutgoingMailServerUsername": outgoing.username,
            "OutgoingMailServerAuthentication": "EmailAuthPassword",
            "OutgoingPasswordSameAsIncomingPassword": True,
        }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"mailconsole.{domain}.{address}",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailconsole:profile:{address}")).upper(),
        "PayloadDisplayName": address,
        "PayloadContent": [account],
    }
    return plistlib.dumps(profile)


@session.mailbox_required
def apple_profile(request: HttpRequest) -> HttpResponse:
    mailbox = request.mailbox
    found = _settings_or_404(mailbox.address)
    response = HttpResponse(
        mobileconfig_profile(mailbox.address, mailbox.display_name, found),
        content_type="application/x-apple-aspen-config",
    )
    response["Content-Disposition"] = f'attachment; filename="{mailbox.domain.name}.mobileconfig"'
    return response


@session.mailbox_required
def settings_page(request: HttpRequest) -> HttpResponse:
    found = settings_for_address(request.mailbox.address) or []
    return render(
        request,
        "webmail/client_settings.html",
        _page_context(
            request,
            incoming=[s for s in found if s.incoming],
            outgoing=[s for s in found if not s.incoming],
        ),
    )
