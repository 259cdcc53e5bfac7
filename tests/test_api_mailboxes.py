"""Mailboxes and group addresses through /api/v1/, as an administrator."""

from __future__ import annotations

import pytest
from django.contrib.auth.hashers import check_password

from servers import mailstore, services
from servers.models import AuditEntry, Logon, Mailbox
from tests.api_factories import GOOD_PASSWORD, client_for, results
from tests.factories import make_server

pytestmark = pytest.mark.usefixtures("fast_hashing")


@pytest.fixture
def domain(db):
    return make_server(domain="study003.local").default_domain


def test_creating_a_mailbox_makes_its_maildir_and_never_shows_the_password(admin, domain):
    response = admin.post(
        "/api/v1/mailboxes/",
        {
            "domain": domain.pk,
            "local_part": "Ann",
            "password": GOOD_PASSWORD,
            "display_name": "Ann Lee",
            "quota_bytes": 1000000,
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["address"] == "ann@study003.local" and "password" not in data
    assert (data["size_bytes"], data["message_count"], data["last_logon_at"]) == (0, 0, None)
    mailbox = Mailbox.objects.get(pk=data["id"])
    assert (mailbox.maildir / "new").is_dir()
    assert check_password(GOOD_PASSWORD, mailbox.password)
    assert AuditEntry.objects.filter(action="add_mailbox", actor="alice").exists()


def test_a_weak_password_answers_400_on_the_password_field(admin, domain):
    response = admin.post(
        "/api/v1/mailboxes/", {"domain": domain.pk, "local_part": "ann", "password": "short"}, format="json"
    )
    assert response.status_code == 400 and list(response.json()) == ["password"]


def test_a_mailbox_in_a_remote_domain_is_refused(admin, domain):
    remote = services.add_domain(domain.server, "far.example", type="remote")
    response = admin.post(
        "/api/v1/mailboxes/", {"domain": remote.pk, "local_part": "ann", "password": GOOD_PASSWORD}, format="json"
    )
    assert response.status_code == 400 and "domain" in response.json()


def test_size_and_message_count_come_from_the_maildir(admin, domain):
    mailbox = services.add_mailbox(domain, "ann", GOOD_PASSWORD)
    mailstore.deliver(mailbox.maildir, [b"Subject: hi\r\n\r\nhello\r\n"])
    data = admin.get(f"/api/v1/mailboxes/{mailbox.pk}/").json()
    assert data["message_count"] == 1 and data["size_bytes"] > 0


def test_list_filters_by_domain_and_searches(admin, domain):
    services.add_mailbox(domain, "ann", GOOD_PASSWORD, display_name="Ann Lee")
    services.add_mailbox(domain, "bob", GOOD_PASSWORD, display_name="Bob Stone")
    other = make_server().default_domain
    services.add_mailbox(other, "carl", GOOD_PASSWORD)
    assert [m["local_part"] for m in results(admin.get(f"/api/v1/mailboxes/?domain={domain.pk}"))] == ["ann", "bob"]
    assert [m["local_part"] for m in results(admin.get("/api/v1/mailboxes/?search=stone"))] == ["bob"]
    assert [m["local_part"] for m in results(admin.get("/api/v1/mailboxes/?ordering=-local_part"))][0] == "carl"


def test_update_changes_display_name_quota_and_catch_all_but_not_the_address(admin, domain):
    mailbox = services.add_mailbox(domain, "ann", GOOD_PASSWORD)
    response = admin.patch(
        f"/api/v1/mailboxes/{mailbox.pk}/",
        {
            "display_name": "Ann",
            "quota_messages": 10,
            "is_catch_all": True,
            "local_part": "eve",
            "is_locked": True,
            "last_logon_from": "1.2.3.4",
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    data = response.json()
    assert (data["display_name"], data["quota_messages"], data["is_catch_all"]) == ("Ann", 10, True)
    assert (data["local_part"], data["is_locked"], data["last_logon_from"]) == ("ann", False, "")


def test_lock_unlock_and_password_actions(admin, domain):
    mailbox = services.add_mailbox(domain, "ann", GOOD_PASSWORD)
    assert admin.post(f"/api/v1/mailboxes/{mailbox.pk}/lock/").json()["is_locked"] is True
    assert admin.post(f"/api/v1/mailboxes/{mailbox.pk}/lock/").json()["is_locked"] is True
    assert admin.post(f"/api/v1/mailboxes/{mailbox.pk}/unlock/").json()["is_locked"] is False
    assert (
        admin.post(f"/api/v1/mailboxes/{mailbox.pk}/password/", {"password": "weak"}, format="json").status_code == 400
    )
    assert (
        admin.post(f"/api/v1/mailboxes/{mailbox.pk}/password/", {"password": "NewSecret456"}, format="json").status_code
        == 200
    )
    mailbox.refresh_from_db()
    assert check_password("NewSecret456", mailbox.password)


@pytest.mark.django_db(transaction=True)
def test_delete_keeps_stored_mail_unless_remove_mail_is_asked(people):
    admin = client_for(people.alice)
    domain = make_server().default_domain
    kept = services.add_mailbox(domain, "kept", GOOD_PASSWORD)
    removed = services.add_mailbox(domain, "gone", GOOD_PASSWORD)
    assert admin.delete(f"/api/v1/mailboxes/{kept.pk}/").status_code == 204
    assert admin.delete(f"/api/v1/mailboxes/{removed.pk}/?remove_mail=1").status_code == 204
    assert kept.maildir.is_dir() and not removed.maildir.exists()
    assert not Mailbox.objects.filter(pk__in=[kept.pk, removed.pk]).exists()


def test_delete_refuses_a_remove_mail_value_it_does_not_understand(admin, domain):
    mailbox = services.add_mailbox(domain, "ann", GOOD_PASSWORD)
    assert admin.delete(f"/api/v1/mailboxes/{mailbox.pk}/?remove_mail=maybe").status_code == 400
    assert Mailbox.objects.filter(pk=mailbox.pk).exists()


# -- group addresses --------------------------------------------------------------------------------


def test_every_local_domain_has_a_postmaster_group_that_cannot_be_removed(admin, domain):
    groups = results(admin.get(f"/api/v1/groups/?domain={domain.pk}"))
    assert [g["address"] for g in groups] == ["postmaster@study003.local"]
    response = admin.delete(f"/api/v1/groups/{groups[0]['id']}/")
    assert response.status_code == 409 and "local_part" in response.json()


def test_group_is_created_with_members_which_can_then_be_replaced(admin, domain):
    ann = services.add_mailbox(domain, "ann", GOOD_PASSWORD)
    bob = services.add_mailbox(domain, "bob", GOOD_PASSWORD)
    response = admin.post(
        "/api/v1/groups/", {"domain": domain.pk, "local_part": "info", "members": [ann.pk]}, format="json"
    )
    assert response.status_code == 201, response.content
    group = response.json()
    assert group["member_addresses"] == ["ann@study003.local"]
    response = admin.patch(f"/api/v1/groups/{group['id']}/", {"members": [bob.pk, ann.pk]}, format="json")
    assert sorted(response.json()["member_addresses"]) == ["ann@study003.local", "bob@study003.local"]
    assert admin.delete(f"/api/v1/groups/{group['id']}/").status_code == 204


def test_a_group_cannot_take_an_address_a_mailbox_has(admin, domain):
    services.add_mailbox(domain, "ann", GOOD_PASSWORD)
    response = admin.post("/api/v1/groups/", {"domain": domain.pk, "local_part": "ann"}, format="json")
    assert response.status_code == 400 and "local_part" in response.json()


def test_a_group_cannot_have_members_on_another_server(admin, domain):
    stranger = services.add_mailbox(make_server().default_domain, "x", GOOD_PASSWORD)
    response = admin.post(
        "/api/v1/groups/", {"domain": domain.pk, "local_part": "info", "members": [stranger.pk]}, format="json"
    )
    assert response.status_code == 400 and "members" in response.json()


# -- logons -----------------------------------------------------------------------------------------


def test_logons_list_sign_ins_and_filter_by_mailbox(admin, domain):
    ann = services.add_mailbox(domain, "ann", GOOD_PASSWORD)
    bob = services.add_mailbox(domain, "bob", GOOD_PASSWORD)
    services.record_logon(ann.pk, "192.0.2.1")
    services.record_logon(bob.pk, "192.0.2.2")
    assert len(results(admin.get("/api/v1/logons/"))) == 2
    only_ann = results(admin.get(f"/api/v1/logons/?mailbox={ann.pk}"))
    assert [(entry["address"], entry["client_address"]) for entry in only_ann] == [("ann@study003.local", "192.0.2.1")]
    mailbox = admin.get(f"/api/v1/mailboxes/{ann.pk}/").json()
    assert mailbox["last_logon_from"] == "192.0.2.1" and mailbox["last_logon_at"]
    logon = Logon.objects.get(mailbox=ann)
    assert admin.delete(f"/api/v1/logons/{logon.pk}/").status_code == 405


def test_mailboxes_and_groups_filter_by_server(admin, domain):
    services.add_mailbox(domain, "ann", GOOD_PASSWORD)
    other = make_server().default_domain
    services.add_mailbox(other, "carl", GOOD_PASSWORD)
    assert [m["address"] for m in results(admin.get(f"/api/v1/mailboxes/?server={domain.server_id}"))] == [
        "ann@study003.local"
    ]
    assert [g["address"] for g in results(admin.get(f"/api/v1/groups/?server={other.server_id}"))] == [
        f"postmaster@{other.name}"
    ]


def test_a_password_in_cyrillic_meets_the_rule_through_the_api_as_in_the_console(admin, domain):
    response = admin.post(
        "/api/v1/mailboxes/", {"domain": domain.pk, "local_part": "olga", "password": "Пароль2024"}, format="json"
    )
    assert response.status_code == 201, response.content
    weak = admin.post(
        "/api/v1/mailboxes/", {"domain": domain.pk, "local_part": "ivan", "password": "пароль2024"}, format="json"
    )
    assert weak.status_code == 400 and "upper-case" in weak.json()["password"][0]
