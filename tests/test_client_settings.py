"""Mail program settings: the pure derivation, and the Thunderbird, Outlook, Apple and webmail faces."""

from __future__ import annotations

import plistlib
import xml.etree.ElementTree as ET

import pytest
from django.test import Client
from django.urls import reverse

from frontend.autoconfig import MAX_AUTODISCOVER_BYTES, requested_address
from servers import services
from servers.services.client_settings import IMAP, POP3, SMTP, SSL, STARTTLS, Endpoint, client_settings, host_for
from tests.factories import make_imap_service, make_mailbox, make_pop3_service, make_server
from tests.webmail_helpers import signed_in_client

OUTLOOK_NS = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"


def outlook_request(address: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
        f"<Request><EMailAddress>{address}</EMailAddress>"
        "<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
        "</AcceptableResponseSchema></Request></Autodiscover>"
    ).encode()


# -- the pure derivation -----------------------------------------------------------------------------


@pytest.mark.backend_independent
def test_incoming_lists_imap_before_pop3_and_implicit_tls_before_starttls():
    endpoints = [
        Endpoint(POP3, "0.0.0.0", 110, 995),
        Endpoint(IMAP, "0.0.0.0", 143, 993),
    ]
    found = client_settings(endpoints, address="Helena@Example.Test", default_hostname="mail.example.test")
    assert [(s.protocol, s.port, s.security) for s in found] == [
        (IMAP, 993, SSL),
        (IMAP, 143, STARTTLS),
        (POP3, 995, SSL),
        (POP3, 110, STARTTLS),
    ]
    assert {s.hostname for s in found} == {"mail.example.test"}
    assert {s.username for s in found} == {"helena@example.test"}


@pytest.mark.backend_independent
def test_outgoing_prefers_the_server_that_requires_sign_in_and_omits_servers_without_auth():
    endpoints = [
        Endpoint(SMTP, "0.0.0.0", 25, allows_anonymous=True),
        Endpoint(SMTP, "0.0.0.0", 587, 465, allows_anonymous=False),
        Endpoint(SMTP, "0.0.0.0", 2526, allows_anonymous=True, allows_auth=False),
    ]
    found = client_settings(endpoints, address="a@b.test", default_hostname="mx.b.test")
    assert [(s.port, s.security) for s in found] == [(465, SSL), (587, STARTTLS), (25, STARTTLS)]
    assert not any(s.incoming for s in found)


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("0.0.0.0", "mail.test"),
        ("::", "mail.test"),
        ("127.0.0.1", "mail.test"),
        ("::1", "mail.test"),
        ("192.0.2.7", "192.0.2.7"),
    ],
)
def test_host_is_the_mail_host_name_unless_the_service_listens_on_one_public_address(ip, expected):
    assert host_for(ip, "mail.test") == expected


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<Autodiscover><Request><EMailAddress>&x;</EMailAddress></Request></Autodiscover>",
        b'<!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><r><EMailAddress>&b;</EMailAddress></r>',
        b"<r><EMailAddress>" + b"x" * MAX_AUTODISCOVER_BYTES + b"@a.test</EMailAddress></r>",
        b"not xml",
    ],
)
def test_autodiscover_request_with_a_dtd_oversized_or_broken_is_refused(body):
    assert requested_address(body) is None


@pytest.mark.backend_independent
def test_autodiscover_request_address_is_read():
    assert requested_address(outlook_request("helena@a.test")) == "helena@a.test"


# -- the endpoints -----------------------------------------------------------------------------------


@pytest.fixture
def installation(db, fast_hashing, settings):
    settings.MAIL_HOSTNAME = "mail.autoconf.test"
    server = make_server(domain="autoconf.test", start=True)
    imap = make_imap_service()
    pop3 = make_pop3_service()
    mailbox = make_mailbox(server, "helena")
    return server, imap, pop3, mailbox


def thunderbird_config(client: Client, address: str, path: str = "/.well-known/autoconfig/mail/config-v1.1.xml"):
    return client.get(path, {"emailaddress": address})


@pytest.mark.parametrize("path", ["/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml"])
def test_thunderbird_config_lists_the_configured_services(installation, path):
    server, imap, pop3, _ = installation
    response = thunderbird_config(Client(), "helena@autoconf.test", path)
    assert response.status_code == 200
    root = ET.fromstring(response.content)
    assert root.tag == "clientConfig"
    provider = root.find("emailProvider")
    assert provider.findtext("domain") == "autoconf.test"
    incoming = [
        (
            s.get("type"),
            s.findtext("hostname"),
            int(s.findtext("port")),
            s.findtext("socketType"),
            s.findtext("username"),
        )
        for s in provider.findall("incomingServer")
    ]
    assert incoming == [
        ("imap", "mail.autoconf.test", imap.tls_port, "SSL", "helena@autoconf.test"),
        ("imap", "mail.autoconf.test", imap.port, "STARTTLS", "helena@autoconf.test"),
        ("pop3", "mail.autoconf.test", pop3.tls_port, "SSL", "helena@autoconf.test"),
        ("pop3", "mail.autoconf.test", pop3.port, "STARTTLS", "helena@autoconf.test"),
    ]
    outgoing = provider.findall("outgoingServer")
    assert [(s.get("type"), int(s.findtext("port"))) for s in outgoing] == [("smtp", server.port)]


def test_thunderbird_answers_the_same_for_a_mailbox_that_does_not_exist(installation):
    client = Client()
    existing = thunderbird_config(client, "helena@autoconf.test").content
    missing = thunderbird_config(client, "nobody@autoconf.test").content
    assert existing.replace(b"helena", b"nobody") == missing


@pytest.mark.parametrize("address", ["helena@elsewhere.test", "no-at-sign", ""])
def test_thunderbird_answers_404_for_a_domain_that_is_not_local(installation, address):
    assert thunderbird_config(Client(), address).status_code == 404


@pytest.mark.parametrize("path", ["/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"])
def test_outlook_autodiscover_answers_without_csrf(installation, path):
    _, imap, _, _ = installation
    client = Client(enforce_csrf_checks=True)
    response = client.post(path, outlook_request("helena@autoconf.test"), content_type="text/xml")
    assert response.status_code == 200
    root = ET.fromstring(response.content)
    account = root.find(f"{OUTLOOK_NS}Response/{OUTLOOK_NS}Account")
    protocols = account.findall(f"{OUTLOOK_NS}Protocol")
    first = protocols[0]
    assert first.findtext(f"{OUTLOOK_NS}Type") == "IMAP"
    assert first.findtext(f"{OUTLOOK_NS}Server") == "mail.autoconf.test"
    assert int(first.findtext(f"{OUTLOOK_NS}Port")) == imap.tls_port
    assert first.findtext(f"{OUTLOOK_NS}Encryption") == "SSL"
    assert first.findtext(f"{OUTLOOK_NS}LoginName") == "helena@autoconf.test"
    assert "SMTP" in [p.findtext(f"{OUTLOOK_NS}Type") for p in protocols]


def test_outlook_autodiscover_refuses_an_xxe_payload_and_foreign_domains(installation, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    payload = (
        f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]>'
        "<Autodiscover><Request><EMailAddress>helena@autoconf.test&x;</EMailAddress></Request></Autodiscover>"
    ).encode()
    response = Client().post("/autodiscover/autodiscover.xml", payload, content_type="text/xml")
    assert response.status_code == 400
    assert b"TOP-SECRET" not in response.content
    foreign = Client().post(
        "/autodiscover/autodiscover.xml", outlook_request("a@elsewhere.test"), content_type="text/xml"
    )
    assert foreign.status_code == 404
    assert Client().get("/autodiscover/autodiscover.xml").status_code == 405


def test_webmail_settings_page_shows_the_signed_in_mailbox_settings(installation):
    _, imap, _, mailbox = installation
    client = signed_in_client(mailbox)
    folder = client.get(reverse("webmail:folder", args=["inbox"]))
    assert reverse("webmail-client-settings").encode() in folder.content
    page = client.get(reverse("webmail-client-settings"))
    assert page.status_code == 200
    text = page.content.decode()
    assert "mail.autoconf.test" in text and str(imap.tls_port) in text and "helena@autoconf.test" in text


def test_apple_profile_is_for_signed_in_users_and_describes_the_mailbox(installation):
    _, imap, _, mailbox = installation
    anonymous = Client().get(reverse("webmail-apple-profile"))
    assert anonymous.status_code == 302
    response = signed_in_client(mailbox).get(reverse("webmail-apple-profile"))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-apple-aspen-config"
    profile = plistlib.loads(response.content)
    account = profile["PayloadContent"][0]
    assert account["EmailAddress"] == "helena@autoconf.test"
    assert account["EmailAccountType"] == "EmailTypeIMAP"
    assert account["IncomingMailServerPortNumber"] == imap.tls_port
    assert account["IncomingMailServerHostName"] == "mail.autoconf.test"
    assert "OutgoingMailServerHostName" in account
    assert "Password" not in str(account.keys()).replace("OutgoingPasswordSameAsIncomingPassword", "")


def test_a_stopped_imap_service_is_not_offered(installation):
    _, imap, _, _ = installation
    services.set_imap_state(imap, "stopped", actor="test")
    root = ET.fromstring(thunderbird_config(Client(), "helena@autoconf.test").content)
    assert [s.get("type") for s in root.find("emailProvider").findall("incomingServer")] == ["pop3", "pop3"]


def test_an_alias_domain_address_is_told_to_sign_in_as_the_local_domain_mailbox(installation):
    server = installation[0]
    services.add_domain(server, "alias.autoconf.test", type="alias", alias_of="autoconf.test")
    response = thunderbird_config(Client(), "helena@alias.autoconf.test")
    assert response.status_code == 200
    root = ET.fromstring(response.content)
    usernames = {s.findtext("username") for s in root.find("emailProvider")}
    usernames.discard(None)
    assert usernames == {"helena@autoconf.test"}
