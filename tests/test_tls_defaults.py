"""Safe by default: off loopback, new servers and POP3 services take passwords only under TLS.

Plaintext AUTH (IIS-compatible) and USER/PASS before STLS stay available as explicit settings, and
the console warns wherever they are allowed.
"""

from __future__ import annotations

import socket
import ssl

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from servers import services
from servers.services.virtual_servers import passwords_need_tls_by_default
from tests.api_factories import client_for
from tests.factories import make_server
from tests.helpers import free_port, worker_running
from tests.smtp_inprocess import Client as SmtpClient
from tests.smtp_inprocess import lab_snapshot, serving

WARNING = "Passwords may be sent unencrypted"


@pytest.mark.parametrize(
    ("ip_address", "tls_first"),
    [
        ("192.0.2.10", True),
        ("0.0.0.0", True),
        ("", True),
        ("::", True),
        ("2001:db8::10", True),
        ("127.0.0.1", False),
        ("127.3.4.5", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),
    ],
)
def test_only_loopback_addresses_keep_plaintext_passwords_by_default(ip_address, tls_first):
    assert passwords_need_tls_by_default(ip_address) is tls_first


# -- services and API ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_new_server_off_loopback_requires_tls_before_auth():
    public = make_server(ip_address="192.0.2.10")
    everywhere = make_server(ip_address="0.0.0.0")
    local = make_server(ip_address="127.0.0.1")

    assert public.auth_requires_tls and everywhere.auth_requires_tls
    assert not public.plaintext_passwords_allowed
    assert not local.auth_requires_tls and local.plaintext_passwords_allowed
    # Mail from other servers still comes in plaintext (RFC 3207 4): only passwords need TLS.
    assert not public.require_tls


@pytest.mark.django_db
def test_plaintext_auth_stays_an_explicit_choice():
    server = make_server(ip_address="192.0.2.10", auth_requires_tls=False)
    assert server.plaintext_passwords_allowed

    server = services.update_virtual_server(server, auth_requires_tls=True)
    assert not server.plaintext_passwords_allowed


@pytest.fixture
def admin_api(people):
    return client_for(people.alice)


def server_body(ip_address: str, **extra) -> dict:
    port = free_port()
    home = str(settings.VAR_DIR / "homes" / f"tls-{port}")
    body = {"name": f"tls-{port}", "default_domain": "tls.test", "ip_address": ip_address, "port": port}
    return {**body, "home_dir": home, "start": False, **extra}


def test_a_server_created_through_the_api_on_a_public_address_requires_tls_before_auth(admin_api):
    public = admin_api.post("/api/v1/servers/", server_body("192.0.2.10"), format="json")
    local = admin_api.post("/api/v1/servers/", server_body("127.0.0.1"), format="json")
    chosen = admin_api.post("/api/v1/servers/", server_body("192.0.2.11", auth_requires_tls=False), format="json")

    assert (public.status_code, local.status_code, chosen.status_code) == (201, 201, 201)
    assert public.json()["auth_requires_tls"] is True
    assert local.json()["auth_requires_tls"] is False
    assert chosen.json()["auth_requires_tls"] is False
    assert public.json()["plaintext_passwords_allowed"] is False
    assert local.json()["plaintext_passwords_allowed"] is True


@pytest.mark.django_db
@pytest.mark.parametrize(("ip_address", "tls_first"), [("192.0.2.10", True), ("0.0.0.0", True), ("127.0.0.1", False)])
def test_a_new_pop3_service_off_loopback_refuses_plaintext_login_before_stls(ip_address, tls_first):
    service = services.create_pop3_service(ip_address=ip_address, port=free_port(), start=False)
    assert service.plaintext_requires_tls is tls_first
    assert service.plaintext_passwords_allowed is not tls_first


@pytest.mark.django_db
def test_a_pop3_service_may_still_be_created_with_plaintext_login():
    service = services.create_pop3_service(
        ip_address="192.0.2.10", port=free_port(), plaintext_requires_tls=False, start=False
    )
    assert not service.plaintext_requires_tls


# -- the console warns where passwords may travel in plaintext -----------------------------------


@pytest.fixture
def console(db):
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.test", "x"))
    return client


def test_the_property_sheet_and_the_list_warn_only_while_plaintext_auth_is_allowed(console):
    plaintext = make_server(name="Plain", ip_address="127.0.0.1")
    guarded = make_server(name="Guarded", ip_address="192.0.2.10")

    plain_page = console.get(reverse("console:server", args=[plaintext.pk])).content.decode()
    guarded_page = console.get(reverse("console:server", args=[guarded.pk])).content.decode()
    listing = console.get(reverse("console:servers")).content.decode()

    assert WARNING in plain_page and "require TLS before AUTH" in plain_page
    assert WARNING not in guarded_page
    plain_row, guarded_row = (
        next(row for row in listing.split("<tbody>", 1)[1].split("<tr>") if f">{name}</a>" in row)
        for name in ("Plain", "Guarded")
    )
    assert 'data-testid="plaintext-password-warning"' in plain_row
    assert 'data-testid="plaintext-password-warning"' not in guarded_row


def test_the_access_tab_turns_tls_before_auth_on_and_the_warning_goes(console):
    server = make_server(ip_address="127.0.0.1")
    url = reverse("console:server", args=[server.pk]) + "?tab=access"
    form = console.get(url).context["form"]
    data = {name: "on" if value is True else value for name, value in form.initial.items()}
    data = {name: value for name, value in data.items() if value is not None and value is not False}

    response = console.post(url, {**data, "auth_requires_tls": "on"})

    assert response.status_code == 302
    server.refresh_from_db()
    assert server.auth_requires_tls
    assert WARNING not in console.get(url).content.decode()


@pytest.mark.parametrize("tls_first", [False, True])
def test_the_pop3_pages_warn_only_while_plaintext_login_is_allowed(console, tls_first):
    services.create_pop3_service(
        ip_address="127.0.0.1", port=free_port(), plaintext_requires_tls=tls_first, start=False
    )

    pop3_page = console.get(reverse("console:pop3")).content.decode()
    services_page = console.get(reverse("console:services")).content.decode()

    assert (WARNING in pop3_page) is not tls_first
    assert ('data-testid="plaintext-password-warning"' in services_page) is not tls_first


# -- what a client sees ----------------------------------------------------------------------------


def test_with_tls_before_auth_no_password_is_taken_in_plaintext_but_mail_still_is(tmp_path):
    with serving(lab_snapshot(tmp_path, auth_requires_tls=True)) as port:
        client = SmtpClient(port)
        ehlo = client.command("EHLO client.test")
        auth = client.command("AUTH PLAIN AGFsaWNlQGxhYi50ZXN0AHNlY3JldA==")
        mail = client.command("MAIL FROM:<a@outside.test>")
        client.command("RSET")
        client.command("STARTTLS")
        client.starttls()
        ehlo_in_tls = client.command("EHLO client.test")
        client.close()

    assert not [line for line in ehlo if "AUTH" in line]
    assert auth[0].startswith("538 5.7.11")
    assert mail == ["250 2.1.0 OK"]
    assert "250-AUTH LOGIN PLAIN" in ehlo_in_tls


@pytest.mark.usefixtures("supervised")
def test_the_supervised_worker_takes_auth_only_after_starttls_when_the_server_says_so():
    server = worker_running(make_server(domain="lab.test", start=True, auth_requires_tls=True))
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        reader = raw.makefile("rb")
        reader.readline()
        raw.sendall(b"EHLO client.test\r\n")
        ehlo = []
        while not ehlo or not ehlo[-1].startswith(b"250 "):
            ehlo.append(reader.readline())
        raw.sendall(b"AUTH LOGIN\r\n")
        auth = reader.readline().decode()
        raw.sendall(b"STARTTLS\r\n")
        assert reader.readline().startswith(b"220 ")
        with context.wrap_socket(raw, server_hostname="mx.test.invalid") as tls:
            tls.sendall(b"EHLO client.test\r\n")
            ehlo_in_tls = b""
            while b"250 HELP" not in ehlo_in_tls:
                ehlo_in_tls += tls.recv(4096)

    assert not [line for line in ehlo if b"AUTH" in line]
    assert auth.startswith("538 5.7.11")
    assert b"250-AUTH LOGIN PLAIN" in ehlo_in_tls
