"""The console in a real browser (Debian's Chromium driven by Playwright) against a live server.

Screenshots of the main screens go to test-artifacts/ (desktop 1280x800 and a phone width).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from servers import services
from servers.models import DkimKey, Mailbox, VirtualServer
from tests.conftest import REPO_DIR
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, free_port
from tests.panel_helpers import PASSWORD, clear_login_throttle, make_cast, make_user

playwright_sync = pytest.importorskip("playwright.sync_api")

ARTIFACTS = REPO_DIR / "test-artifacts"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# Live updates poll every 2 s; a reconcile through the real Celery worker takes a few more.
STATE_TIMEOUT_MS = 40_000

pytestmark = [
    # The pages' database work is tested on both backends by the view tests.
    pytest.mark.backend_independent,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
    pytest.mark.timeout(180),
]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    # Playwright's sync API runs an event loop in this thread; the ORM calls the tests make between
    # browser steps are ordinary blocking calls, which Django would otherwise refuse there.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with playwright_sync.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def page(browser, live_server):
    ARTIFACTS.mkdir(exist_ok=True)
    clear_login_throttle()
    context = browser.new_context(viewport=DESKTOP, base_url=live_server.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("requestfailed", lambda request: errors.append(f"{request.url}: {request.failure}"))
    yield page
    context.close()
    # Every script (htmx, Bootstrap, plotly.js) loads from this server and runs without errors.
    assert errors == []


def shoot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)


def sign_in(page, username: str, password: str = PASSWORD) -> None:
    page.goto("/console/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("[data-testid=login-form] button[type=submit]")


def expect_state(page, server_pk: int, state: str) -> None:
    page.wait_for_selector(
        f'#server-state-{server_pk} [data-testid="server-state"][data-state="{state}"]', timeout=STATE_TIMEOUT_MS
    )


def test_administrator_signs_in_and_out(page, transactional_db):
    make_user("alice", superuser=True)
    page.goto("/")
    assert page.url.endswith("/console/login/?next=/console/")
    shoot(page, "01-sign-in")
    sign_in(page, "alice", "wrong-password")
    assert "user name or password is incorrect" in page.inner_text('[data-testid="login-error"]')
    sign_in(page, "alice")
    page.wait_for_url("**/console/")
    assert "alice" in page.inner_text('[data-testid="signed-in-as"]')
    shoot(page, "02-dashboard")
    page.click("text=Sign out")
    page.wait_for_url("**/console/login/")


def test_wizard_creates_a_server_that_starts_pauses_and_stops_from_the_toolbar(page, supervised, settings):
    make_user("alice", superuser=True)
    sign_in(page, "alice")
    page.wait_for_url("**/console/")
    page.goto("/console/servers/")
    page.click('[data-testid="new-server"]')
    page.fill("#id_step0-name", "Browser lab")
    shoot(page, "03-wizard-name")
    page.click('[data-testid="wizard-next"]')
    page.select_option("#id_step1-ip_address", "127.0.0.1")
    port = free_port()
    page.fill("#id_step1-port", str(port))
    page.click('[data-testid="wizard-next"]')
    assert page.is_visible('[data-testid="home-warning"]')
    home = settings.VAR_DIR / "homes" / "browser-lab"
    page.fill("#id_step2-home_dir", str(home))
    shoot(page, "04-wizard-home")
    page.click('[data-testid="wizard-next"]')
    page.fill("#id_step3-default_domain", "study003.local")
    page.click('[data-testid="wizard-next"]')
    page.wait_for_selector('[data-testid="server-title"]')
    server = VirtualServer.objects.get(name="Browser lab")
    assert server.port == port and server.desired_state == "running"
    # The real Celery worker starts the SMTP worker; the page sees it without a reload.
    expect_state(page, server.pk, "running")
    shoot(page, "05-server-running")
    # A client connects; Current Sessions shows it and Terminate closes it with 421.
    with socket.create_connection(("127.0.0.1", port), timeout=20) as client:
        assert client.recv(512).startswith(b"220")
        client.sendall(b"EHLO browser.test\r\n")
        reply = b""
        while b"\r\n250 " not in b"\r\n" + reply:
            reply += client.recv(1024)
        page.click(f'a.tree-item[href="/console/servers/{server.pk}/sessions/"]')
        page.wait_for_selector('[data-testid="sessions"] td:has-text("127.0.0.1")', timeout=STATE_TIMEOUT_MS)
        shoot(page, "05b-current-sessions")
        page.click('[data-testid="sessions"] button:has-text("Terminate")')
        assert client.recv(512).startswith(b"421"), "the terminated session was not closed with 421"
    page.goto(f"/console/servers/{server.pk}/")
    page.click(f'#server-state-{server.pk} [data-testid="pause"]')
    expect_state(page, server.pk, "paused")
    assert page.is_disabled(f'#server-state-{server.pk} [data-testid="pause"]')
    page.click(f'#server-state-{server.pk} [data-testid="stop"]')
    expect_state(page, server.pk, "stopped")
    shoot(page, "06-server-stopped")
    page.click('[data-testid="tab-delivery"]')
    page.wait_for_selector('[data-testid="delivery-form"]')
    shoot(page, "06b-delivery-tab")
    page.click('[data-testid="tab-messages"]')
    page.fill("#id_max_message_size_kb", "4096")
    page.click('[data-testid="save"]')
    assert "2048 \u2192 4096" in page.inner_text('[data-testid="message"]')


def test_operator_adds_a_domain_and_a_mailbox(page, transactional_db):
    make_user("alice", superuser=True)
    server = services.create_virtual_server(
        name="Domains lab",
        default_domain="lab.example.test",
        ip_address="127.0.0.1",
        port=free_port(),
        start=False,
        home_dir=settings.VAR_DIR / "homes" / "domains-lab",
        actor="test",
    )
    sign_in(page, "alice")
    page.wait_for_url("**/console/")
    page.goto(f"/console/servers/{server.pk}/domains/")
    page.fill("#id_name", "alias.example.test")
    page.select_option("#id_type", "alias")
    page.select_option("#id_alias_of", "lab.example.test")
    page.click('[data-testid="add-domain"] button[type=submit]')
    page.wait_for_selector('tr[data-domain="alias.example.test"]')
    shoot(page, "07-domains")
    page.click('a[data-testid="tree-domain"]:has-text("lab.example.test")')
    page.click('[data-testid="new-mailbox"]')
    assert "8 characters" in page.inner_text('[data-testid="password-rule"]')
    page.fill("#id_local_part", "bob")
    page.fill("#id_display_name", "Bob Builder")
    page.fill("#id_password", "weak")
    page.click('[data-testid="mailbox-form"] button[type=submit]')
    assert "upper-case" in page.inner_text('[data-field="password"] .field-error')
    page.fill("#id_password", PASSWORD)
    page.click('[data-testid="mailbox-form"] button[type=submit]')
    page.wait_for_selector('tr[data-mailbox="bob"]')
    assert Mailbox.objects.filter(local_part="bob", display_name="Bob Builder").exists()
    shoot(page, "08-mailboxes")
    page.set_viewport_size(PHONE)
    shoot(page, "09-mailboxes-phone")
    page.click('button[aria-controls="console-tree"]')
    page.wait_for_selector("#console-tree.show")
    shoot(page, "10-tree-phone")


def test_domain_administrator_cannot_open_another_domain(page, transactional_db):
    cast = make_cast()
    sign_in(page, cast.dora.username)
    page.wait_for_url("**/console/")
    response = page.goto(f"/console/domains/{cast.domain.pk}/")
    assert response.status == 200
    response = page.goto(f"/console/domains/{cast.other_domain.pk}/")
    assert response.status == 404


def test_csv_import_dry_run_shows_row_errors(page, transactional_db, tmp_path):
    make_user("alice", superuser=True)
    server = services.create_virtual_server(
        name="Import lab",
        default_domain="import.example.test",
        ip_address="127.0.0.1",
        port=free_port(),
        start=False,
        home_dir=settings.VAR_DIR / "homes" / "import-lab",
        actor="test",
    )
    csv_file = tmp_path / "boxes.csv"
    csv_file.write_text(
        "local_part,password,display_name,quota_kb\nann,Good-Pass-1,Ann,100\nbad name,Good-Pass-1,,\nweak,short,,\n"
    )
    sign_in(page, "alice")
    page.wait_for_url("**/console/")
    page.goto(f"/console/domains/{server.default_domain.pk}/import/")
    page.set_input_files("#id_csv_file", str(csv_file))
    page.click('[data-testid="import-form"] button[type=submit]')
    assert "3 rows, 2 with errors" in page.inner_text('[data-testid="import-summary"]')
    assert "not a valid mailbox name" in page.inner_text('tr[data-line="3"]')
    assert "at least 8 characters" in page.inner_text('tr[data-line="4"]')
    assert not Mailbox.objects.exists()
    shoot(page, "11-import-dry-run")
    services.add_mailbox(server.default_domain, "ann", PASSWORD, actor="test")
    page.goto("/console/")
    page.wait_for_selector("#chart-mailboxes .main-svg")
    shoot(page, "14-dashboard-with-data")
    page.set_viewport_size(PHONE)
    shoot(page, "15-dashboard-phone")
    page.goto(f"/console/servers/{server.pk}/?tab=access")
    shoot(page, "16-access-tab-phone")
    page.goto("/console/services/")
    shoot(page, "12-services")
    page.goto("/console/audit/")
    shoot(page, "13-audit")


def test_domain_administrator_generates_a_dkim_key_and_copies_the_record(page, transactional_db):
    cast = make_cast()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, cast.dora.username)
    page.wait_for_url("**/console/")
    page.goto(f"/console/domains/{cast.domain.pk}/")
    page.click('[data-testid="dkim-form"] button')
    page.wait_for_selector('[data-testid="dkim-record"]')
    key = DkimKey.objects.get(domain=cast.domain)
    assert page.input_value("#dkim-name") == f"{key.selector}._domainkey.{cast.domain.name}"
    page.click('button[data-copy="dkim-value"]')
    page.wait_for_function("document.querySelector('[data-copy=\"dkim-value\"]').textContent === '✓'")
    assert page.evaluate("navigator.clipboard.readText()") == f"v=DKIM1; k=rsa; p={key.public_key}"
    shoot(page, "11-domain-dkim")


def test_domain_administrator_checks_the_dns_records_and_copies_the_line_to_publish(
    page, transactional_db, dns, settings
):
    settings.DELIVERY_DNS_SERVER = dns.address  # publishes nothing for the cast's domains
    settings.MAIL_HOSTNAME = "mail.lab.example.test"
    cast = make_cast()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, cast.dora.username)
    page.wait_for_url("**/console/")
    page.goto(f"/console/domains/{cast.domain.pk}/")

    page.click('[data-testid="dns-check-link"]')

    page.wait_for_selector('[data-testid="dns-checks"]')
    assert page.get_attribute('tr[data-check="mx"]', "data-status") == "missing"
    page.click('button[data-copy="dns-mx-1"]')
    page.wait_for_function("document.querySelector('[data-copy=\"dns-mx-1\"]').textContent === '✓'")
    line = f"{cast.domain.name}. 3600 IN MX 10 mail.lab.example.test."
    assert page.evaluate("navigator.clipboard.readText()") == line
    shoot(page, "14-domain-dns")
