"""A server's Delivery tab through /api/v1/servers/{id}/delivery/."""

from __future__ import annotations

import pytest

from servers.models import AuditEntry
from tests.api_factories import client_for
from tests.factories import make_server

pytestmark = pytest.mark.usefixtures("fast_hashing")


def test_a_new_server_shows_the_iis_delivery_defaults(admin):
    data = admin.get(f"/api/v1/servers/{make_server().pk}/delivery/").json()
    assert data["first_retry_interval_s"] == 600 and data["smart_host"] == ""
    assert data["smart_host_password_set"] is False and "smart_host_password" not in data


def test_the_smart_host_password_is_stored_but_never_shown_nor_audited(admin):
    server = make_server()
    response = admin.patch(
        f"/api/v1/servers/{server.pk}/delivery/",
        {
            "smart_host": "Relay.Example.NET",
            "smart_host_username": "lab",
            "smart_host_password": "s3cret",
            "first_retry_interval_s": 60,
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    data = response.json()
    assert (data["smart_host"], data["first_retry_interval_s"], data["smart_host_password_set"]) == (
        "relay.example.net",
        60,
        True,
    )
    assert "s3cret" not in response.content.decode()
    entry = AuditEntry.objects.get(action="update_delivery_settings", actor="alice")
    assert "s3cret" not in str(entry.after)


def test_credentials_without_a_smart_host_answer_409(admin):
    server = make_server()
    response = admin.patch(f"/api/v1/servers/{server.pk}/delivery/", {"smart_host_username": "lab"}, format="json")
    assert response.status_code == 409 and "smart_host" in response.json()


def test_a_retry_interval_of_zero_is_refused(admin):
    response = admin.patch(
        f"/api/v1/servers/{make_server().pk}/delivery/", {"first_retry_interval_s": 0}, format="json"
    )
    assert response.status_code == 400 and "first_retry_interval_s" in response.json()


def test_the_delivery_tab_of_a_server_outside_the_scope_is_404(people):
    server = make_server()
    assert client_for(people.bob).get(f"/api/v1/servers/{server.pk}/delivery/").status_code == 404
    assert (
        client_for(people.bob)
        .patch(f"/api/v1/servers/{server.pk}/delivery/", {"smart_host": ""}, format="json")
        .status_code
        == 404
    )
