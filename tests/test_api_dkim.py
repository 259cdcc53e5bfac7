"""DKIM keys through /api/v1/domains/{id}/dkim/: the record to publish, generate and rotate, who may."""

from __future__ import annotations

import json

import pytest

from servers import services
from servers.models import AuditEntry, DkimKey, DkimKeyState
from servers.services.api_support import set_domain_administrators, set_server_operators
from tests.api_factories import client_for
from tests.factories import default_domain_of, make_server

pytestmark = pytest.mark.usefixtures("fast_hashing")

RECORD_FIELDS = {"selector", "algorithm", "txt_name", "txt_value", "txt_strings", "created_at", "retired_selectors"}


def no_private_key_in(response) -> bool:
    text = response.content.decode()
    return "PRIVATE KEY" not in text and "fernet:" not in text and "private" not in text


def test_a_domain_without_a_key_answers_404_and_a_post_generates_one(admin):
    domain = default_domain_of(make_server(domain="lab.test"))
    assert admin.get(f"/api/v1/domains/{domain.pk}/dkim/").status_code == 404

    created = admin.post(f"/api/v1/domains/{domain.pk}/dkim/", {}, format="json")

    assert created.status_code == 201, created.content
    body = created.json()
    assert set(body) == RECORD_FIELDS
    assert body["txt_name"] == f"{body['selector']}._domainkey.lab.test"
    assert body["txt_value"].startswith("v=DKIM1; k=rsa; p=MII")
    assert "".join(body["txt_strings"]) == body["txt_value"]
    assert (body["algorithm"], body["retired_selectors"]) == ("rsa-sha256", [])
    assert no_private_key_in(created)
    shown = admin.get(f"/api/v1/domains/{domain.pk}/dkim/")
    assert shown.status_code == 200 and shown.json() == body
    assert AuditEntry.objects.filter(action="rotate_dkim_key", actor="alice").count() == 1


def test_a_second_post_rotates_and_keeps_the_old_selector_retired(admin):
    domain = default_domain_of(make_server(domain="lab.test"))
    first = admin.post(f"/api/v1/domains/{domain.pk}/dkim/", {}, format="json").json()

    second = admin.post(f"/api/v1/domains/{domain.pk}/dkim/", {"algorithm": "ed25519-sha256"}, format="json")

    assert second.status_code == 201
    body = second.json()
    assert body["selector"] != first["selector"] and body["retired_selectors"] == [first["selector"]]
    assert body["algorithm"] == "ed25519-sha256" and body["txt_value"].startswith("v=DKIM1; k=ed25519; p=")
    states = dict(DkimKey.objects.filter(domain=domain).values_list("selector", "state"))
    assert states == {first["selector"]: DkimKeyState.RETIRED, body["selector"]: DkimKeyState.ACTIVE}


def test_bad_algorithms_and_non_local_domains_are_refused(admin):
    server = make_server(domain="lab.test")
    domain = default_domain_of(server)
    alias = services.add_domain(server, "alias.test", type="alias", alias_of=domain)
    remote = services.add_domain(server, "far.test", type="remote")

    bad = admin.post(f"/api/v1/domains/{domain.pk}/dkim/", {"algorithm": "rsa-sha1"}, format="json")
    assert bad.status_code == 400 and "algorithm" in bad.json()
    for other in (alias, remote):
        refused = admin.post(f"/api/v1/domains/{other.pk}/dkim/", {}, format="json")
        assert refused.status_code == 409 and "Only a local domain" in json.dumps(refused.json())
    assert not DkimKey.objects.exists()


def test_an_alias_domain_shows_its_targets_key_under_its_own_name(admin):
    server = make_server(domain="lab.test")
    alias = services.add_domain(server, "alias.test", type="alias", alias_of=default_domain_of(server))
    key = services.generate_dkim_key(default_domain_of(server))

    body = admin.get(f"/api/v1/domains/{alias.pk}/dkim/").json()

    assert body["txt_name"] == f"{key.selector}._domainkey.alias.test"
    assert body["txt_value"].endswith(key.public_key)


def test_operators_and_the_domains_administrators_manage_keys_and_others_get_404(people):
    server = make_server(domain="lab.test")
    other = make_server(domain="other.test")
    domain = default_domain_of(server)
    second = services.add_domain(server, "second.test")
    set_server_operators(server, [people.bob])
    set_domain_administrators(domain, [people.carol])
    services.generate_dkim_key(default_domain_of(other))
    bob, carol, dave = client_for(people.bob), client_for(people.carol), client_for(people.dave)

    assert bob.post(f"/api/v1/domains/{second.pk}/dkim/", {}, format="json").status_code == 201
    assert carol.post(f"/api/v1/domains/{domain.pk}/dkim/", {}, format="json").status_code == 201
    assert carol.get(f"/api/v1/domains/{domain.pk}/dkim/").status_code == 200
    assert carol.post(f"/api/v1/domains/{second.pk}/dkim/", {}, format="json").status_code == 404
    for client in (bob, carol, dave):
        foreign = default_domain_of(other).pk
        assert client.get(f"/api/v1/domains/{foreign}/dkim/").status_code == 404
        assert client.post(f"/api/v1/domains/{foreign}/dkim/", {}, format="json").status_code == 404
    assert DkimKey.objects.filter(domain=default_domain_of(other)).count() == 1


def test_no_response_about_a_domain_shows_a_private_key(admin):
    domain = default_domain_of(make_server(domain="lab.test"))
    services.generate_dkim_key(domain)
    responses = [
        admin.get(f"/api/v1/domains/{domain.pk}/"),
        admin.get("/api/v1/domains/"),
        admin.get(f"/api/v1/domains/{domain.pk}/dkim/"),
        admin.get("/api/v1/audit/"),
    ]
    assert all(response.status_code == 200 for response in responses)
    assert all("PRIVATE KEY" not in r.content.decode() and "fernet:" not in r.content.decode() for r in responses)
