"""Current sessions of a server's worker through /api/v1/servers/{id}/sessions/ (live state in Redis)."""

from __future__ import annotations

import json
import time

import pytest

from servers.livestate import redis_client, sessions_key, terminate_key
from servers.models import AuditEntry
from servers.services.api_support import set_server_operators
from tests.api_factories import client_for
from tests.factories import make_server

pytestmark = pytest.mark.usefixtures("fast_hashing")


@pytest.fixture
def server(people):
    server = make_server()
    yield server
    redis_client().delete(sessions_key("smtp", server.pk), terminate_key("smtp", server.pk))


def publish(server, **session) -> None:
    """What the server's worker writes every heartbeat."""
    info = {
        "id": "a1b2c3d4e5f6",
        "protocol": "SMTP",
        "client": "192.0.2.9",
        "user": "",
        "connected_at": time.time(),
        "state": "DATA",
        "messages": 2,
        "bytes": 2048,
        "tls": False,
        **session,
    }
    redis_client().hset(sessions_key("smtp", server.pk), info["id"], json.dumps(info))


def test_sessions_lists_what_the_worker_reports(people, server):
    publish(server)
    response = client_for(people.alice).get(f"/api/v1/servers/{server.pk}/sessions/")
    assert response.status_code == 200
    [session] = response.json()
    assert (session["id"], session["client"], session["state"], session["messages"]) == (
        "a1b2c3d4e5f6",
        "192.0.2.9",
        "DATA",
        2,
    )
    assert session["connected_at"].endswith("Z") or "+00:00" in session["connected_at"]


def test_a_server_without_a_worker_has_no_sessions(people, server):
    assert client_for(people.alice).get(f"/api/v1/servers/{server.pk}/sessions/").json() == []


def test_terminating_a_session_asks_the_worker_and_is_audited(people, server):
    publish(server)
    response = client_for(people.alice).delete(f"/api/v1/servers/{server.pk}/sessions/a1b2c3d4e5f6/")
    assert response.status_code == 204
    orders = redis_client().smembers(terminate_key("smtp", server.pk))
    assert {m if isinstance(m, str) else m.decode() for m in orders} == {"a1b2c3d4e5f6"}
    assert AuditEntry.objects.filter(action="terminate_session", actor="alice").exists()


def test_terminating_an_unknown_session_answers_404(people, server):
    response = client_for(people.alice).delete(f"/api/v1/servers/{server.pk}/sessions/ffffffffffff/")
    assert response.status_code == 404 and "no such session" in response.json()["detail"]


def test_sessions_of_a_server_outside_the_users_scope_are_404(people, server):
    publish(server)
    mine = make_server()
    set_server_operators(mine, [people.bob])
    bob = client_for(people.bob)
    assert bob.get(f"/api/v1/servers/{server.pk}/sessions/").status_code == 404
    assert bob.delete(f"/api/v1/servers/{server.pk}/sessions/a1b2c3d4e5f6/").status_code == 404
    assert bob.get(f"/api/v1/servers/{mine.pk}/sessions/").json() == []
