"""The Django admin under /admin/: its sign-in shares the console's throttle, and it writes only through services.

Finding 3 of issue 13: /admin/login/ took 344 checked guesses a minute with no lockout, and its bulk delete,
the Node admin and the AuditEntry admin wrote past the services (no invariants, no audit entry, no worker stop).
"""

from __future__ import annotations

import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest
from django.test import Client, override_settings

from servers import services
from servers.models import AuditEntry, Domain, Node, VirtualServer
from tests.factories import make_server
from tests.panel_helpers import PASSWORD, clear_login_throttle, make_user


@pytest.fixture
def alice(db, fast_hashing):
    clear_login_throttle()
    yield make_user("alice", superuser=True)
    clear_login_throttle()


@pytest.fixture
def admin_client(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def admin_login(client: Client, username: str, password: str):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password, "next": "/admin/"})


def signed_in_to_admin(client: Client) -> bool:
    return client.get("/admin/").status_code == 200


# -- sign-in ------------------------------------------------------------------------------------------


def test_the_right_password_signs_in_to_the_admin(alice):
    client = Client()
    response = admin_login(client, "alice", PASSWORD)
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert signed_in_to_admin(client)


@override_settings(CONSOLE_LOGIN_FAILURES_PER_USERNAME=3)
def test_admin_sign_in_is_locked_out_after_repeated_failures_even_with_the_right_password(alice):
    client = Client()
    for _ in range(3):
        assert admin_login(client, "alice", "wrong").status_code == 200
    response = admin_login(client, "alice", PASSWORD)
    assert response.status_code == 429
    assert b"Too many failed sign-ins" in response.content
    assert not signed_in_to_admin(client)
    # The lockout is the console's: the same counters refuse alice there too.
    console = Client().post("/console/login/", {"username": "alice", "password": PASSWORD})
    assert console.status_code == 429


@override_settings(CONSOLE_LOGIN_FAILURES_PER_USERNAME=3)
def test_failures_at_the_console_lock_the_admin_sign_in_too(alice):
    for _ in range(3):
        assert Client().post("/console/login/", {"username": "alice", "password": "wrong"}).status_code == 401
    client = Client()
    assert admin_login(client, "alice", PASSWORD).status_code == 429
    assert not signed_in_to_admin(client)


@override_settings(CONSOLE_LOGIN_FAILURES_PER_ADDRESS=4, CONSOLE_LOGIN_FAILURES_PER_USERNAME=100)
def test_admin_guesses_across_usernames_lock_out_the_client_address(alice):
    client = Client(REMOTE_ADDR="10.7.7.7")
    for name in ("root", "admin", "administrator", "postmaster"):
        admin_login(client, name, "guess")
    assert admin_login(client, "alice", PASSWORD).status_code == 429
    assert admin_login(Client(REMOTE_ADDR="10.7.7.8"), "alice", PASSWORD).status_code == 302


# -- writes only through the services ----------------------------------------------------------------


def bulk_delete(client: Client, model_path: str, pks: list[int]):
    return client.post(
        f"/admin/servers/{model_path}/",
        {"action": "delete_selected", "_selected_action": [str(pk) for pk in pks], "post": "yes"},
    )


def test_bulk_delete_of_servers_is_not_offered_and_deletes_nothing(admin_client):
    server = make_server()
    assert b"delete_selected" not in admin_client.get("/admin/servers/virtualserver/").content
    bulk_delete(admin_client, "virtualserver", [server.pk])
    assert VirtualServer.objects.filter(pk=server.pk).exists()


def test_bulk_delete_of_domains_is_not_offered_and_deletes_nothing(admin_client):
    server = make_server(domain="keep.example.test")
    extra = services.add_domain(server, "extra.example.test")
    assert b"delete_selected" not in admin_client.get("/admin/servers/domain/").content
    bulk_delete(admin_client, "domain", [server.default_domain.pk, extra.pk])
    assert Domain.objects.filter(server=server).count() == 2


def test_deleting_a_server_in_the_admin_goes_through_the_service_and_is_audited(admin_client):
    server = make_server()
    response = admin_client.post(f"/admin/servers/virtualserver/{server.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not VirtualServer.objects.filter(pk=server.pk).exists()
    assert AuditEntry.objects.filter(actor="alice", action="delete_virtual_server").exists()


def test_the_node_admin_is_read_only(admin_client):
    node = make_server().node
    page = admin_client.get(f"/admin/servers/node/{node.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert admin_client.post(f"/admin/servers/node/{node.pk}/change/", {"name": "renamed"}).status_code == 403
    assert admin_client.post(f"/admin/servers/node/{node.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.get("/admin/servers/node/add/").status_code == 403
    assert Node.objects.get(pk=node.pk).name == node.name


def test_the_audit_log_admin_is_read_only(admin_client):
    make_server()
    entry = AuditEntry.objects.first()
    assert entry is not None
    change = f"/admin/servers/auditentry/{entry.pk}/change/"
    assert admin_client.post(change, {"actor": "mallory"}).status_code == 403
    assert admin_client.post(f"/admin/servers/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    bulk_delete(admin_client, "auditentry", [entry.pk])
    assert AuditEntry.objects.get(pk=entry.pk).actor == entry.actor


@override_settings(CONSOLE_LOGIN_FAILURES_PER_USERNAME=3)
def test_over_a_socket_the_admin_locks_out_after_wrong_passwords(live_server, transactional_db, fast_hashing):
    clear_login_throttle()
    make_user("alice", superuser=True)
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    login_url = f"{live_server.url}/admin/login/?next=/admin/"

    def sign_in(password: str) -> int:
        page = browser.open(login_url, timeout=10).read().decode()
        found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert found is not None, "the sign-in page carries a CSRF token"
        token = found.group(1)
        body = urllib.parse.urlencode(
            {"csrfmiddlewaretoken": token, "username": "alice", "password": password, "next": "/admin/"}
        ).encode()
        request = urllib.request.Request(login_url, data=body, headers={"Referer": login_url})
        try:
            with browser.open(request, timeout=10) as response:
                signed_in = urllib.parse.urlsplit(response.geturl()).path == "/admin/"
                return 302 if signed_in else response.status
        except urllib.error.HTTPError as refused:
            return refused.code

    try:
        assert [sign_in("wrong") for _ in range(3)] == [200, 200, 200]
        assert sign_in(PASSWORD) == 429
        clear_login_throttle()
        assert sign_in(PASSWORD) == 302  # the same request signs in once the lockout is over
    finally:
        clear_login_throttle()
