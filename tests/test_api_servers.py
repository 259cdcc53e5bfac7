"""Virtual servers and nodes through /api/v1/, as an administrator."""

from __future__ import annotations

import pytest
from django.conf import settings

from servers.models import AuditEntry, Node, ServiceState, VirtualServer
from tests.api_factories import results
from tests.factories import make_server
from tests.helpers import free_port

pytestmark = pytest.mark.usefixtures("fast_hashing")


def new_server_body(**overrides) -> dict:
    body = {
        "name": "Lab server",
        "default_domain": "study003.local",
        "ip_address": "127.0.0.1",
        "port": free_port(),
        "home_dir": str(settings.VAR_DIR / "homes" / f"lab-{free_port()}"),
        "start": False,
    }
    body.update(overrides)
    return body


def test_administrator_creates_a_server_with_its_default_domain_and_home_dirs(admin):
    body = new_server_body(max_message_size_kb=4096)
    response = admin.post("/api/v1/servers/", body, format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["name"] == "Lab server" and data["default_domain"] == "study003.local"
    assert data["max_message_size_kb"] == 4096 and data["desired_state"] == "stopped"
    server = VirtualServer.objects.get(pk=data["id"])
    assert (server.home_path / "Drop").is_dir()
    assert AuditEntry.objects.filter(action="create_virtual_server", actor="alice", object_id=str(server.pk)).exists()


def test_creating_a_server_with_a_bad_domain_answers_400_on_that_field(admin):
    response = admin.post("/api/v1/servers/", new_server_body(default_domain="bad..name"), format="json")
    assert response.status_code == 400
    assert list(response.json()) == ["default_domain"]


def test_creating_a_server_on_a_taken_address_answers_400_on_the_port(admin):
    other = make_server(start=True)
    response = admin.post("/api/v1/servers/", new_server_body(port=other.port, start=True), format="json")
    assert response.status_code == 400
    assert "port" in response.json()


def test_a_missing_required_field_answers_400(admin):
    response = admin.post("/api/v1/servers/", {"name": "No domain"}, format="json")
    assert response.status_code == 400
    assert "default_domain" in response.json()


def test_malformed_json_answers_400(admin):
    response = admin.post("/api/v1/servers/", data="{not json", content_type="application/json")
    assert response.status_code == 400


def test_list_is_paginated_and_orderable(admin):
    make_server(name="b-server")
    make_server(name="a-server")
    names = [s["name"] for s in results(admin.get("/api/v1/servers/?ordering=-name"))]
    assert names == ["b-server", "a-server"]
    page = admin.get("/api/v1/servers/?page_size=1").json()
    assert page["count"] == 2 and len(page["results"]) == 1 and page["next"]


def test_list_filters_by_node_and_refuses_a_non_numeric_filter(admin):
    server = make_server()
    assert [s["id"] for s in results(admin.get(f"/api/v1/servers/?node={server.node_id}"))] == [server.pk]
    assert results(admin.get(f"/api/v1/servers/?node={server.node_id + 1000}")) == []
    assert admin.get("/api/v1/servers/?node=abc").status_code == 400


def test_update_changes_settings_and_ignores_observed_state(admin):
    server = make_server()
    response = admin.patch(
        f"/api/v1/servers/{server.pk}/",
        {
            "port": 2600,
            "max_message_size_kb": 10,
            "state": "running",
            "pid": 1,
            "restart_count": 99,
            "desired_state": "running",
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    server.refresh_from_db()
    assert (server.port, server.max_message_size_kb) == (2600, 10)
    assert (server.state, server.pid, server.restart_count, server.desired_state) == ("stopped", None, 0, "stopped")


def test_home_dir_can_be_set_on_create_but_never_changed(admin):
    server = make_server()
    response = admin.patch(f"/api/v1/servers/{server.pk}/", {"home_dir": "/srv/elsewhere"}, format="json")
    assert response.status_code == 400
    assert "home_dir" in response.json()
    assert admin.patch(f"/api/v1/servers/{server.pk}/", {"home_dir": server.home_dir}, format="json").status_code == 200
    server.refresh_from_db()
    assert server.home_dir != "/srv/elsewhere"


def test_start_pause_stop_record_the_desired_state_and_are_idempotent(admin):
    server = make_server()
    for verb, state in [
        ("start", "running"),
        ("start", "running"),
        ("pause", "paused"),
        ("stop", "stopped"),
        ("stop", "stopped"),
    ]:
        response = admin.post(f"/api/v1/servers/{server.pk}/{verb}/")
        assert response.status_code == 200, response.content
        assert response.json()["desired_state"] == state
    actions = list(AuditEntry.objects.filter(object_id=str(server.pk), actor="alice").values_list("action", flat=True))
    assert sorted(actions) == ["pause_virtual_server", "start_virtual_server", "stop_virtual_server"]


def test_start_is_refused_with_409_when_another_server_holds_the_address(admin):
    running = make_server(start=True)
    server = make_server(port=running.port)
    response = admin.post(f"/api/v1/servers/{server.pk}/start/")
    assert response.status_code == 409
    assert "port" in response.json()


def test_delete_removes_the_configuration_and_keeps_the_home_dir(admin):
    server = make_server()
    assert admin.delete(f"/api/v1/servers/{server.pk}/").status_code == 204
    assert not VirtualServer.objects.filter(pk=server.pk).exists()
    assert server.home_path.is_dir()
    assert admin.get(f"/api/v1/servers/{server.pk}/").status_code == 404


def test_unknown_server_and_unsupported_method_answer_404_and_405(admin):
    assert admin.get("/api/v1/servers/999999/").status_code == 404
    assert admin.post("/api/v1/servers/999999/start/").status_code == 404
    assert admin.post("/api/v1/servers/stats/").status_code in (404, 405)
    assert admin.put("/api/v1/servers/", {}, format="json").status_code == 405


def test_operators_cannot_be_set_to_unknown_users(admin):
    server = make_server()
    response = admin.patch(f"/api/v1/servers/{server.pk}/", {"operators": ["nobody"]}, format="json")
    assert response.status_code == 400


# -- nodes ------------------------------------------------------------------------------------------


def test_administrator_lists_nodes_with_their_service_state(admin):
    server = make_server()
    data = results(admin.get("/api/v1/nodes/"))
    assert [(n["name"], n["server_count"]) for n in data] == [(server.node.name, 1)]


def test_stopping_a_node_stops_its_whole_smtp_service_and_is_idempotent(admin):
    node = make_server().node
    for verb, state in [("stop", "stopped"), ("stop", "stopped"), ("pause", "paused"), ("start", "running")]:
        response = admin.post(f"/api/v1/nodes/{node.pk}/{verb}/")
        assert response.status_code == 200
        assert response.json()["smtp_service_state"] == state
    assert Node.objects.get(pk=node.pk).smtp_service_state == ServiceState.RUNNING


def test_nodes_cannot_be_created_or_deleted_through_the_api(admin):
    node = make_server().node
    assert admin.post("/api/v1/nodes/", {"name": "x"}, format="json").status_code == 405
    assert admin.delete(f"/api/v1/nodes/{node.pk}/").status_code == 405


def test_unknown_api_paths_answer_404_in_json_even_for_a_post_without_trailing_slash(admin):
    for response in (
        admin.get("/api/v1/nothing-here/"),
        admin.post("/api/v1/servers", {}, format="json"),
        admin.get("/api/v1/servers/abc/"),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": "Not found."}


def test_a_home_dir_that_cannot_be_created_answers_400_and_saves_nothing(admin, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    response = admin.post(
        "/api/v1/servers/", new_server_body(name="Blocked", home_dir=str(blocker / "home")), format="json"
    )
    assert response.status_code == 400 and "home_dir" in response.json()
    assert not VirtualServer.objects.filter(name="Blocked").exists()
