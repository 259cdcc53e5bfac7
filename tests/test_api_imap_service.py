"""The IMAP service through /api/v1/services/imap/: settings, state and sessions, for administrators."""

from __future__ import annotations

import json
import time

import pytest

from servers import services
from servers.livestate import redis_client, sessions_key, terminate_key
from servers.models import AuditEntry, ImapService
from servers.services.api_support import set_domain_administrators, set_server_operators
from tests.api_factories import client_for
from tests.factories import make_server
from tests.helpers import free_port

pytestmark = pytest.mark.usefixtures("fast_hashing")

SESSION_ID = "0a1b2c3d4e5f"


@pytest.fixture
def imap(people):
    service = services.create_imap_service(ip_address="127.0.0.1", port=free_port(), start=False)
    redis_client().delete(sessions_key("imap", service.pk), terminate_key("imap", service.pk))
    yield service
    redis_client().delete(sessions_key("imap", service.pk), terminate_key("imap", service.pk))


def publish(service: ImapService) -> None:
    info = {
        "id": SESSION_ID,
        "protocol": "IMAP",
        "client": "192.0.2.9",
        "user": "helena@study003.local",
        "connected_at": time.time(),
        "state": "IDLE",
        "folder": "INBOX",
        "messages": 0,
        "bytes": 0,
        "tls": True,
    }
    redis_client().hset(sessions_key("imap", service.pk), SESSION_ID, json.dumps(info))


def test_an_administrator_reads_and_changes_the_settings(people, imap):
    api = client_for(people.alice)
    url = f"/api/v1/services/imap/{imap.pk}/"

    [listed] = api.get("/api/v1/services/imap/").json()["results"]
    assert (listed["id"], listed["port"], listed["plaintext_passwords_allowed"]) == (imap.pk, imap.port, True)

    tls_port = free_port()
    changed = api.patch(url, {"tls_port": tls_port, "plaintext_requires_tls": True}, format="json")

    assert changed.status_code == 200, changed.content
    body = changed.json()
    assert (body["tls_port"], body["plaintext_requires_tls"], body["plaintext_passwords_allowed"]) == (
        tls_port,
        True,
        False,
    )
    assert body["config_version"] == 2 and body["node_name"] == imap.node.name
    assert AuditEntry.objects.filter(action="update_imap_service", actor="alice").exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [({"port": 0}, "port"), ({"port": "143"}, "port"), ({"ip_address": "nowhere"}, "ip_address")],
)
def test_bad_settings_are_400_naming_the_field(people, imap, body, field):
    response = client_for(people.alice).patch(f"/api/v1/services/imap/{imap.pk}/", body, format="json")
    assert response.status_code == 400
    assert field in json.dumps(response.json())


def test_a_refusal_of_the_services_names_its_field(people, imap):
    response = client_for(people.alice).patch(
        f"/api/v1/services/imap/{imap.pk}/", {"tls_port": imap.port}, format="json"
    )
    assert response.status_code == 400
    assert "tls_port" in json.dumps(response.json()) and "IMAPS" in json.dumps(response.json())


def test_start_pause_and_stop_set_the_desired_state(people, imap):
    api = client_for(people.alice)
    for verb, desired in (("start", "running"), ("pause", "paused"), ("stop", "stopped")):
        response = api.post(f"/api/v1/services/imap/{imap.pk}/{verb}/")
        assert response.status_code == 200 and response.json()["desired_state"] == desired
    assert AuditEntry.objects.filter(action="stop_imap_service", actor="alice").exists()


def test_sessions_are_listed_with_their_folder_and_terminated(people, imap):
    publish(imap)
    api = client_for(people.alice)

    [session] = api.get(f"/api/v1/services/imap/{imap.pk}/sessions/").json()
    assert (session["id"], session["folder"], session["state"], session["tls"]) == (SESSION_ID, "INBOX", "IDLE", True)

    assert api.delete(f"/api/v1/services/imap/{imap.pk}/sessions/{SESSION_ID}/").status_code == 204
    assert redis_client().sismember(terminate_key("imap", imap.pk), SESSION_ID)
    assert api.delete(f"/api/v1/services/imap/{imap.pk}/sessions/ffffffffffff/").status_code == 404


def test_nobody_but_an_administrator_sees_the_imap_service(people, imap):
    server = make_server(domain="study003.local")
    set_server_operators(server, [people.bob])
    set_domain_administrators(server.default_domain, [people.carol])
    publish(imap)

    for user in (people.bob, people.carol, people.dave):
        api = client_for(user)
        assert api.get("/api/v1/services/imap/").json()["results"] == []
        assert api.get(f"/api/v1/services/imap/{imap.pk}/").status_code == 404
        assert api.patch(f"/api/v1/services/imap/{imap.pk}/", {"port": 1}, format="json").status_code == 404
        assert api.post(f"/api/v1/services/imap/{imap.pk}/start/").status_code == 404
        assert api.get(f"/api/v1/services/imap/{imap.pk}/sessions/").status_code == 404
        assert api.delete(f"/api/v1/services/imap/{imap.pk}/sessions/{SESSION_ID}/").status_code == 404
    assert client_for().get("/api/v1/services/imap/").status_code == 401
    imap.refresh_from_db()
    assert (imap.desired_state, imap.config_version) == ("stopped", 1)
    assert not redis_client().sismember(terminate_key("imap", imap.pk), SESSION_ID)
