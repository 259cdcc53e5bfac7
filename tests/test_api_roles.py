"""What each role may see and do through /api/v1/.

bob operates server one; carol administers domain two-a of server two (which has another domain,
two-b); dave has no role. Outside a user's scope everything answers 404; inside it, what the
role may not change answers 403.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from rest_framework.test import APIClient

from servers import services
from servers.models import Domain, Mailbox, VirtualServer
from servers.services.api_support import set_domain_administrators, set_server_operators
from tests.api_factories import GOOD_PASSWORD, client_for, results
from tests.factories import default_domain_of, make_server

pytestmark = pytest.mark.usefixtures("fast_hashing")


@dataclass
class Lab:
    one: VirtualServer
    two: VirtualServer
    d1: Domain
    d2a: Domain
    d2b: Domain
    m1: Mailbox
    m2a: Mailbox
    m2b: Mailbox


@pytest.fixture
def lab(people) -> Lab:
    one = make_server(domain="one.test")
    two = make_server(domain="two-a.test")
    d2b = services.add_domain(two, "two-b.test")
    lab = Lab(
        one=one,
        two=two,
        d1=default_domain_of(one),
        d2a=default_domain_of(two),
        d2b=d2b,
        m1=services.add_mailbox(one.default_domain, "m1", GOOD_PASSWORD),
        m2a=services.add_mailbox(two.default_domain, "m2a", GOOD_PASSWORD),
        m2b=services.add_mailbox(d2b, "m2b", GOOD_PASSWORD),
    )
    set_server_operators(one, [people.bob])
    set_domain_administrators(lab.d2a, [people.carol])
    return lab


@pytest.fixture
def bob(people):
    return client_for(people.bob)


@pytest.fixture
def carol(people):
    return client_for(people.carol)


def ids(response) -> list[int]:
    return sorted(item["id"] for item in results(response))


# -- anonymous ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "nodes/",
        "servers/",
        "domains/",
        "mailboxes/",
        "groups/",
        "logons/",
        "audit/",
        "stats/",
        "servers/1/",
        "mailboxes/1/",
        "access-rules/",
        "relay-rules/",
    ],
)
def test_anonymous_gets_401_everywhere(lab, path):
    assert APIClient().get(f"/api/v1/{path}").status_code == 401


def test_anonymous_cannot_act(lab):
    client = APIClient()
    assert client.post(f"/api/v1/servers/{lab.one.pk}/stop/").status_code == 401
    assert client.delete(f"/api/v1/mailboxes/{lab.m1.pk}/").status_code == 401
    assert VirtualServer.objects.filter(pk=lab.one.pk).exists() and Mailbox.objects.filter(pk=lab.m1.pk).exists()


# -- server operator ----------------------------------------------------------------------------------


def test_operator_sees_only_the_servers_they_operate(lab, bob):
    assert ids(bob.get("/api/v1/servers/")) == [lab.one.pk]
    assert bob.get(f"/api/v1/servers/{lab.two.pk}/").status_code == 404
    assert bob.post(f"/api/v1/servers/{lab.two.pk}/stop/").status_code == 404
    assert bob.patch(f"/api/v1/servers/{lab.two.pk}/", {"port": 2700}, format="json").status_code == 404
    assert bob.delete(f"/api/v1/servers/{lab.two.pk}/").status_code == 404


def test_operator_changes_settings_and_starts_and_stops_their_server(lab, bob):
    assert bob.patch(f"/api/v1/servers/{lab.one.pk}/", {"max_message_size_kb": 99}, format="json").status_code == 200
    assert bob.post(f"/api/v1/servers/{lab.one.pk}/start/").json()["desired_state"] == "running"
    assert bob.post(f"/api/v1/servers/{lab.one.pk}/pause/").json()["desired_state"] == "paused"
    lab.one.refresh_from_db()
    assert (lab.one.max_message_size_kb, lab.one.desired_state) == (99, "paused")


def test_operator_cannot_create_or_delete_servers_or_change_operators(lab, bob, people):
    assert (
        bob.post("/api/v1/servers/", {"name": "mine", "default_domain": "mine.test"}, format="json").status_code == 403
    )
    assert bob.delete(f"/api/v1/servers/{lab.one.pk}/").status_code == 403
    response = bob.patch(f"/api/v1/servers/{lab.one.pk}/", {"operators": ["bob", "dave"]}, format="json")
    assert response.status_code == 400
    assert list(lab.one.operators.all()) == [people.bob]
    assert VirtualServer.objects.filter(pk=lab.one.pk).exists()


def test_operator_cannot_touch_nodes(lab, bob):
    assert results(bob.get("/api/v1/nodes/")) == []
    assert bob.get(f"/api/v1/nodes/{lab.one.node_id}/").status_code == 404
    assert bob.post(f"/api/v1/nodes/{lab.one.node_id}/stop/").status_code == 404


def test_operator_manages_the_domains_of_their_server_only(lab, bob):
    assert ids(bob.get("/api/v1/domains/")) == [lab.d1.pk]
    assert bob.get(f"/api/v1/domains/{lab.d2a.pk}/").status_code == 404
    assert bob.post(f"/api/v1/domains/{lab.d2a.pk}/lock/").status_code == 404
    created = bob.post("/api/v1/domains/", {"server": lab.one.pk, "name": "extra.test"}, format="json")
    assert created.status_code == 201
    refused = bob.post("/api/v1/domains/", {"server": lab.two.pk, "name": "sneaky.test"}, format="json")
    assert refused.status_code == 400 and "server" in refused.json()
    assert bob.post(f"/api/v1/domains/{lab.d1.pk}/lock/").status_code == 200
    assert bob.patch(f"/api/v1/domains/{lab.d1.pk}/", {"administrators": ["dave"]}, format="json").status_code == 200


def test_operator_manages_mailboxes_and_groups_of_their_server_only(lab, bob):
    assert ids(bob.get("/api/v1/mailboxes/")) == [lab.m1.pk]
    assert bob.get(f"/api/v1/mailboxes/{lab.m2a.pk}/").status_code == 404
    assert bob.post(f"/api/v1/mailboxes/{lab.m2a.pk}/lock/").status_code == 404
    assert bob.delete(f"/api/v1/mailboxes/{lab.m2a.pk}/").status_code == 404
    assert (
        bob.post(
            "/api/v1/mailboxes/", {"domain": lab.d1.pk, "local_part": "new", "password": GOOD_PASSWORD}, format="json"
        ).status_code
        == 201
    )
    assert (
        bob.post(
            "/api/v1/mailboxes/", {"domain": lab.d2a.pk, "local_part": "new", "password": GOOD_PASSWORD}, format="json"
        ).status_code
        == 400
    )
    assert {g["domain"] for g in results(bob.get("/api/v1/groups/"))} == {lab.d1.pk}
    assert Mailbox.objects.filter(pk=lab.m2a.pk, is_locked=False).exists()


def test_operator_stats_and_audit_are_scoped(lab, bob):
    bob.post(f"/api/v1/servers/{lab.one.pk}/start/")
    stats = bob.get("/api/v1/stats/").json()
    assert (stats["servers"], stats["domains"], stats["mailboxes"]) == (1, 1, 1)
    assert {entry["actor"] for entry in results(bob.get("/api/v1/audit/"))} == {"bob"}


# -- domain administrator -----------------------------------------------------------------------------


def test_domain_administrator_reads_their_domain_but_cannot_change_it(lab, carol):
    assert results(carol.get("/api/v1/servers/")) == []
    assert carol.post(f"/api/v1/servers/{lab.two.pk}/stop/").status_code == 404
    assert ids(carol.get("/api/v1/domains/")) == [lab.d2a.pk]
    assert carol.get(f"/api/v1/domains/{lab.d2a.pk}/").status_code == 200
    assert carol.get(f"/api/v1/domains/{lab.d2b.pk}/").status_code == 404
    assert carol.patch(f"/api/v1/domains/{lab.d2a.pk}/", {"administrators": ["dave"]}, format="json").status_code == 403
    assert carol.post(f"/api/v1/domains/{lab.d2a.pk}/lock/").status_code == 403
    assert carol.delete(f"/api/v1/domains/{lab.d2a.pk}/").status_code == 403
    assert carol.post("/api/v1/domains/", {"server": lab.two.pk, "name": "x.test"}, format="json").status_code == 403
    assert not Domain.objects.get(pk=lab.d2a.pk).is_locked


def test_domain_administrator_manages_the_mailboxes_of_their_domain_only(lab, carol):
    assert ids(carol.get("/api/v1/mailboxes/")) == [lab.m2a.pk]
    assert carol.post(f"/api/v1/mailboxes/{lab.m2a.pk}/lock/").status_code == 200
    assert (
        carol.post(f"/api/v1/mailboxes/{lab.m2a.pk}/password/", {"password": "Another123"}, format="json").status_code
        == 200
    )
    assert carol.get(f"/api/v1/mailboxes/{lab.m2b.pk}/").status_code == 404
    assert carol.delete(f"/api/v1/mailboxes/{lab.m2b.pk}/").status_code == 404
    assert (
        carol.post(
            "/api/v1/mailboxes/", {"domain": lab.d2b.pk, "local_part": "x", "password": GOOD_PASSWORD}, format="json"
        ).status_code
        == 400
    )
    created = carol.post(
        "/api/v1/mailboxes/", {"domain": lab.d2a.pk, "local_part": "x", "password": GOOD_PASSWORD}, format="json"
    )
    assert created.status_code == 201
    assert carol.delete(f"/api/v1/mailboxes/{created.json()['id']}/").status_code == 204


def test_domain_administrator_groups_take_members_from_their_domain_only(lab, carol):
    ok = carol.post(
        "/api/v1/groups/", {"domain": lab.d2a.pk, "local_part": "team", "members": [lab.m2a.pk]}, format="json"
    )
    assert ok.status_code == 201
    refused = carol.post(
        "/api/v1/groups/", {"domain": lab.d2a.pk, "local_part": "team2", "members": [lab.m2b.pk]}, format="json"
    )
    assert refused.status_code == 400 and "members" in refused.json()
    assert {g["domain"] for g in results(carol.get("/api/v1/groups/"))} == {lab.d2a.pk}


def test_domain_administrator_sees_logons_of_their_mailboxes_only(lab, carol):
    services.record_logon(lab.m2a.pk, "192.0.2.1")
    services.record_logon(lab.m2b.pk, "192.0.2.2")
    assert [entry["mailbox"] for entry in results(carol.get("/api/v1/logons/"))] == [lab.m2a.pk]
