"""The audit log and dashboard counts through /api/v1/."""

from __future__ import annotations

import pytest

from servers import mailstore, services
from tests.api_factories import GOOD_PASSWORD, results
from tests.factories import make_server

pytestmark = pytest.mark.usefixtures("fast_hashing")


def test_every_change_made_through_the_api_is_in_the_audit_log_under_its_user(admin):
    server = make_server()
    admin.post(f"/api/v1/servers/{server.pk}/start/")
    admin.patch(f"/api/v1/servers/{server.pk}/", {"port": 2999}, format="json")
    entries = results(admin.get(f"/api/v1/audit/?actor=alice&object_id={server.pk}&object_type=virtualserver"))
    assert [e["action"] for e in entries] == ["update_virtual_server", "start_virtual_server"]
    assert entries[0]["after"]["port"] == 2999


def test_the_audit_log_filters_by_action_and_is_read_only(admin):
    server = make_server()
    entries = results(admin.get("/api/v1/audit/?action=create_virtual_server"))
    assert [e["object_id"] for e in entries] == [str(server.pk)]
    assert admin.post("/api/v1/audit/", {}, format="json").status_code == 405
    assert admin.delete(f"/api/v1/audit/{entries[0]['id']}/").status_code == 405


def test_stats_count_servers_by_state_domains_mailboxes_and_stored_mail(admin):
    server = make_server()
    make_server()
    services.add_domain(server, "far.example", type="remote")
    ann = services.add_mailbox(server.default_domain, "ann", GOOD_PASSWORD)
    services.add_mailbox(server.default_domain, "bob", GOOD_PASSWORD)
    services.set_mailbox_lock(ann, True)
    mailstore.deliver(ann.maildir, [b"Subject: one\r\n\r\nx\r\n"])
    mailstore.deliver(ann.maildir, [b"Subject: two\r\n\r\ny\r\n"])
    response = admin.get("/api/v1/stats/")
    assert response.status_code == 200
    stats = response.json()
    assert stats["servers"] == 2 and stats["servers_by_state"] == {"stopped": 2}
    assert stats["servers_by_desired_state"] == {"stopped": 2}
    assert stats["domains"] == 3 and stats["domains_by_type"] == {"local": 2, "remote": 1}
    assert (stats["mailboxes"], stats["locked_mailboxes"], stats["groups"]) == (2, 1, 2)
    assert stats["messages_stored"] == 2 and stats["bytes_stored"] > 0
