"""Domains of a virtual server through /api/v1/domains/, as an administrator."""

from __future__ import annotations

import pytest

from servers import services
from servers.models import AuditEntry, Domain
from tests.api_factories import GOOD_PASSWORD, results
from tests.factories import make_server

pytestmark = pytest.mark.usefixtures("fast_hashing")


def test_adding_local_alias_and_remote_domains(admin):
    server = make_server(domain="study003.local")
    local = server.default_domain
    alias = admin.post(
        "/api/v1/domains/",
        {"server": server.pk, "name": "Alias.Local", "type": "alias", "alias_of": local.pk},
        format="json",
    )
    assert alias.status_code == 201, alias.content
    assert (alias.json()["name"], alias.json()["alias_of_name"]) == ("alias.local", "study003.local")
    remote = admin.post(
        "/api/v1/domains/",
        {"server": server.pk, "name": "partner.org", "type": "remote", "relay_allowed": True},
        format="json",
    )
    assert remote.status_code == 201 and remote.json()["relay_allowed"] is True
    assert AuditEntry.objects.filter(action="add_domain", actor="alice").count() == 2


def test_a_domain_error_names_the_field_at_fault(admin):
    server = make_server()
    response = admin.post(
        "/api/v1/domains/",
        {"server": server.pk, "name": "x.test", "type": "local", "relay_allowed": True},
        format="json",
    )
    assert response.status_code == 400
    assert response.json() == {"relay_allowed": ["Only a remote domain can allow relaying to it."]}


def test_a_duplicate_domain_answers_400(admin):
    server = make_server(domain="dup.test")
    response = admin.post("/api/v1/domains/", {"server": server.pk, "name": "DUP.test"}, format="json")
    assert response.status_code == 400 and "name" in response.json()


def test_list_filters_by_server_and_type(admin):
    first, second = make_server(), make_server()
    services.add_domain(first, "far.example", type="remote")
    ids = {d["id"] for d in results(admin.get(f"/api/v1/domains/?server={first.pk}"))}
    assert ids == set(Domain.objects.filter(server=first).values_list("pk", flat=True))
    remote = results(admin.get("/api/v1/domains/?type=remote"))
    assert [d["name"] for d in remote] == ["far.example"]
    assert second.default_domain.pk not in ids
    assert admin.get("/api/v1/domains/?type=bogus").status_code == 400


def test_set_default_moves_the_default_and_is_idempotent(admin):
    server = make_server()
    other = services.add_domain(server, "second.test")
    for _ in range(2):
        response = admin.post(f"/api/v1/domains/{other.pk}/set-default/")
        assert response.status_code == 200 and response.json()["is_default"] is True
    assert server.default_domain == other


def test_lock_and_unlock_a_domain(admin):
    domain = make_server().default_domain
    assert admin.post(f"/api/v1/domains/{domain.pk}/lock/").json()["is_locked"] is True
    assert admin.post(f"/api/v1/domains/{domain.pk}/lock/").json()["is_locked"] is True
    assert admin.post(f"/api/v1/domains/{domain.pk}/unlock/").json()["is_locked"] is False


def test_changing_the_type_goes_through_the_service_and_keeps_the_name(admin):
    server = make_server()
    domain = services.add_domain(server, "partner.org", type="remote")
    response = admin.patch(
        f"/api/v1/domains/{domain.pk}/",
        {"relay_allowed": True, "name": "renamed.org", "is_default": True},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["relay_allowed"] is True
    assert (response.json()["name"], response.json()["is_default"]) == ("partner.org", False)
    response = admin.patch(f"/api/v1/domains/{domain.pk}/", {"type": "local"}, format="json")
    assert response.status_code == 200 and response.json()["relay_allowed"] is False


def test_the_default_domain_cannot_become_remote(admin):
    domain = make_server().default_domain
    response = admin.patch(f"/api/v1/domains/{domain.pk}/", {"type": "remote"}, format="json")
    assert response.status_code == 400 and "type" in response.json()


def test_removing_the_default_domain_is_refused_and_another_one_succeeds(admin):
    server = make_server()
    other = services.add_domain(server, "other.test", type="remote")
    assert admin.delete(f"/api/v1/domains/{server.default_domain.pk}/").status_code == 409
    assert admin.delete(f"/api/v1/domains/{other.pk}/").status_code == 204
    assert not Domain.objects.filter(pk=other.pk).exists()


def test_a_domain_with_mailboxes_cannot_be_removed(admin):
    server = make_server()
    domain = services.add_domain(server, "second.test")
    services.add_mailbox(domain, "ann", GOOD_PASSWORD)
    response = admin.delete(f"/api/v1/domains/{domain.pk}/")
    assert response.status_code == 409 and "name" in response.json()


def test_domain_administrators_are_set_by_user_name_and_audited(admin, people):
    domain = make_server().default_domain
    response = admin.patch(f"/api/v1/domains/{domain.pk}/", {"administrators": ["carol"]}, format="json")
    assert response.status_code == 200 and response.json()["administrators"] == ["carol"]
    assert list(domain.administrators.all()) == [people.carol]
    assert AuditEntry.objects.filter(action="set_domain_administrators", actor="alice").exists()


def test_a_domain_typed_in_unicode_or_as_its_a_label_is_one_domain(admin):
    server = make_server(domain="study003.local")
    created = admin.post("/api/v1/domains/", {"server": server.pk, "name": "Почта.рф"}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["name"] == "xn--80a1acny.xn--p1ai"
    again = admin.post("/api/v1/domains/", {"server": server.pk, "name": "XN--80A1ACNY.xn--p1ai."}, format="json")
    assert again.status_code == 400 and "name" in again.json()
