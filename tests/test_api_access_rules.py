"""A server's Access-tab lists (connection control, relay) through /api/v1/access-rules/ and relay-rules/."""

from __future__ import annotations

import pytest

from servers import services
from servers.models import AccessRule, AuditEntry, RelayRule
from servers.services.api_support import set_domain_administrators, set_server_operators
from tests.api_factories import client_for, results
from tests.factories import make_server

pytestmark = pytest.mark.usefixtures("fast_hashing")


@pytest.mark.parametrize("resource, model", [("access-rules", AccessRule), ("relay-rules", RelayRule)])
def test_a_rule_is_added_in_canonical_form_and_removed(admin, resource, model):
    server = make_server()
    response = admin.post(
        f"/api/v1/{resource}/", {"server": server.pk, "kind": "network", "value": " 192.168.1.7/24 "}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["value"] == "192.168.1.0/24"
    rule_id = response.json()["id"]
    assert admin.delete(f"/api/v1/{resource}/{rule_id}/").status_code == 204
    assert not model.objects.filter(pk=rule_id).exists()
    assert AuditEntry.objects.filter(actor="alice", object_id=str(rule_id)).count() == 2


@pytest.mark.parametrize("resource", ["access-rules", "relay-rules"])
def test_a_value_that_does_not_fit_its_kind_answers_400_on_value(admin, resource):
    server = make_server()
    response = admin.post(
        f"/api/v1/{resource}/", {"server": server.pk, "kind": "range", "value": "10.0.0.9-10.0.0.1"}, format="json"
    )
    assert response.status_code == 400 and list(response.json()) == ["value"]


def test_rules_filter_by_server_and_kind(admin):
    first, second = make_server(), make_server()
    services.add_access_rule(first, "address", "10.0.0.1")
    services.add_access_rule(first, "domain", "Example.ORG.")
    services.add_access_rule(second, "address", "10.0.0.2")
    assert [r["value"] for r in results(admin.get(f"/api/v1/access-rules/?server={first.pk}"))] == [
        "10.0.0.1",
        "example.org",
    ]
    assert [r["value"] for r in results(admin.get("/api/v1/access-rules/?kind=address"))] == ["10.0.0.1", "10.0.0.2"]
    assert results(admin.get("/api/v1/relay-rules/")) == []


def test_rules_cannot_be_edited_in_place(admin):
    rule = services.add_relay_rule(make_server(), "address", "10.0.0.1")
    assert admin.patch(f"/api/v1/relay-rules/{rule.pk}/", {"value": "10.0.0.2"}, format="json").status_code == 405


def test_operator_manages_the_rules_of_their_server_only(people):
    mine, theirs = make_server(), make_server()
    set_server_operators(mine, [people.bob])
    foreign = services.add_access_rule(theirs, "address", "10.0.0.1")
    bob = client_for(people.bob)
    assert (
        bob.post(
            "/api/v1/access-rules/", {"server": mine.pk, "kind": "address", "value": "10.0.0.5"}, format="json"
        ).status_code
        == 201
    )
    assert (
        bob.post(
            "/api/v1/access-rules/", {"server": theirs.pk, "kind": "address", "value": "10.0.0.5"}, format="json"
        ).status_code
        == 400
    )
    assert [r["server"] for r in results(bob.get("/api/v1/access-rules/"))] == [mine.pk]
    assert bob.get(f"/api/v1/access-rules/{foreign.pk}/").status_code == 404
    assert bob.delete(f"/api/v1/access-rules/{foreign.pk}/").status_code == 404


def test_domain_administrator_has_no_access_lists(people):
    server = make_server()
    set_domain_administrators(server.default_domain, [people.carol])
    rule = services.add_relay_rule(server, "address", "10.0.0.1")
    carol = client_for(people.carol)
    assert results(carol.get("/api/v1/relay-rules/")) == []
    assert carol.get(f"/api/v1/relay-rules/{rule.pk}/").status_code == 404
    assert (
        carol.post(
            "/api/v1/relay-rules/", {"server": server.pk, "kind": "address", "value": "10.0.0.2"}, format="json"
        ).status_code
        == 403
    )
