"""The remote-delivery queue through /api/v1/queue/: view, retry, freeze, delete."""

from __future__ import annotations

import pytest

from servers.delivery import engine
from servers.delivery.models import QueuedMessage
from servers.models import AuditEntry
from servers.services.api_support import set_server_operators
from tests.api_factories import client_for, results
from tests.factories import make_server

pytestmark = pytest.mark.usefixtures("fast_hashing")


def queue_message(server, *recipients: str) -> QueuedMessage:
    queued = engine.submit(
        server, "ann@example.test", list(recipients or ["bob@remote.example"]), b"Subject: hello\r\n\r\nhi\r\n"
    )
    assert queued is not None
    return queued


def test_the_queue_lists_sender_recipients_and_size(admin):
    server = make_server()
    message = queue_message(server, "bob@remote.example", "carl@remote.example")
    [entry] = results(admin.get(f"/api/v1/queue/?server={server.pk}"))
    assert (entry["id"], entry["server"], entry["sender"]) == (message.pk, server.pk, "ann@example.test")
    assert [r["address"] for r in entry["recipients"]] == ["bob@remote.example", "carl@remote.example"]
    assert entry["size_octets"] > 0 and entry["frozen"] is False
    assert admin.get(f"/api/v1/queue/{message.pk}/").json()["name"] == message.name


def test_freeze_unfreeze_and_retry_are_audited(admin):
    message = queue_message(make_server())
    assert admin.post(f"/api/v1/queue/{message.pk}/freeze/").json()["frozen"] is True
    assert admin.post(f"/api/v1/queue/{message.pk}/retry/").json()["frozen"] is True
    assert admin.post(f"/api/v1/queue/{message.pk}/unfreeze/").json()["frozen"] is False
    actions = set(AuditEntry.objects.filter(actor="alice", object_id=str(message.pk)).values_list("action", flat=True))
    assert actions == {"freeze_queued_message", "retry_queued_message", "unfreeze_queued_message"}


def test_deleting_removes_the_file_and_the_entry(admin):
    server = make_server()
    message = queue_message(server)
    path = engine.queue_dir(server) / message.name
    assert path.exists()
    assert admin.delete(f"/api/v1/queue/{message.pk}/").status_code == 204
    assert not path.exists() and not QueuedMessage.objects.filter(pk=message.pk).exists()
    assert admin.get(f"/api/v1/queue/{message.pk}/").status_code == 404


def test_a_message_whose_file_is_gone_has_left_the_queue(admin):
    server = make_server()
    message = queue_message(server)
    (engine.queue_dir(server) / message.name).unlink()
    assert admin.get(f"/api/v1/queue/{message.pk}/").status_code == 404
    assert results(admin.get("/api/v1/queue/")) == []


def test_operator_sees_only_the_queues_of_their_servers(people):
    mine, theirs = make_server(), make_server()
    set_server_operators(mine, [people.bob])
    own, foreign = queue_message(mine), queue_message(theirs)
    bob = client_for(people.bob)
    assert [entry["id"] for entry in results(bob.get("/api/v1/queue/"))] == [own.pk]
    assert results(bob.get(f"/api/v1/queue/?server={theirs.pk}")) == []
    assert bob.post(f"/api/v1/queue/{foreign.pk}/freeze/").status_code == 404
    assert bob.delete(f"/api/v1/queue/{foreign.pk}/").status_code == 404
    assert client_for(people.carol).get(f"/api/v1/queue/{own.pk}/").status_code == 404
