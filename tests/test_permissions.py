"""Who may see and change what, asked of both faces: the console (Django's test client) and the API.

Each rule below once had two answers, one per face. `servers/services/permissions.py` now decides
it, and every test runs once per face (`[console]`, `[api]`) and expects the same outcome.

bob operates server one; carol administers domain two-a of server two (which also has two-b);
dave is a second operator of server one.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages import constants as message_levels
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from servers import services
from servers.models import DkimKey, Domain, GroupAddress, ImapService, Mailbox, VirtualServer
from servers.services import permissions
from servers.services.api_support import set_domain_administrators, set_server_operators
from tests.api_factories import GOOD_PASSWORD, client_for, results
from tests.factories import People, default_domain_of, make_people, make_server, make_user
from tests.helpers import free_port

OK, FORBIDDEN, NOT_FOUND = "ok", 403, 404


pytestmark = pytest.mark.usefixtures("fast_hashing")


@dataclass
class Lab:
    people: People
    one: VirtualServer
    two: VirtualServer
    d1: Domain
    d2a: Domain
    d2b: Domain
    m2a: Mailbox
    m2b: Mailbox
    team: GroupAddress  # in two-a, with a member of two-a and one of two-b


@pytest.fixture
def lab(db) -> Lab:
    people = make_people()
    one = make_server(domain="one.test")
    two = make_server(domain="two-a.test")
    d2b = services.add_domain(two, "two-b.test")
    m2a = services.add_mailbox(two.default_domain, "m2a", GOOD_PASSWORD)
    m2b = services.add_mailbox(d2b, "m2b", GOOD_PASSWORD)
    team = services.add_group(two.default_domain, "team", [m2a, m2b])
    set_server_operators(one, [people.bob, people.dave])
    set_domain_administrators(two.default_domain, [people.carol])
    return Lab(people, one, two, default_domain_of(one), default_domain_of(two), d2b, m2a, m2b, team)


def outcome(status_code: int) -> str | int:
    return OK if status_code in (200, 201, 204, 302) else status_code


class ConsoleFace:
    """The console, driven as a browser would post its forms."""

    def __init__(self, user):
        self.client = Client()
        self.client.force_login(user)

    def lock_domain(self, domain):
        return outcome(
            self.client.post(reverse("console:domain-action", args=[domain.pk]), {"action": "lock"}).status_code
        )

    def remove_domain(self, domain):
        url = reverse("console:domain-action", args=[domain.pk])
        return outcome(self.client.post(url, {"action": "remove"}).status_code)

    def set_domain_administrators(self, domain, users):
        url = reverse("console:domain-administrators", args=[domain.pk])
        return outcome(self.client.post(url, {"administrators": [u.pk for u in users]}).status_code)

    def set_quota_ceiling(self, domain, ceiling_mb: int):
        url = reverse("console:domain-quota-ceiling", args=[domain.pk])
        return outcome(self.client.post(url, {"max_mailbox_quota_mb": str(ceiling_mb)}).status_code)

    def rotate_dkim_key(self, domain):
        return outcome(self.client.post(reverse("console:domain-dkim", args=[domain.pk])).status_code)

    def check_dns(self, domain):
        return outcome(self.client.get(reverse("console:domain-dns", args=[domain.pk])).status_code)

    def set_group_members(self, group, mailboxes):
        url = reverse("console:group", args=[group.pk])
        return outcome(self.client.post(url, {"members": [m.pk for m in mailboxes]}).status_code)

    def shown_members(self, group) -> set[str]:
        """Addresses shown as members, on the group's page and in its domain's list."""
        page = self.client.get(reverse("console:group", args=[group.pk])).content.decode()
        listing = self.client.get(reverse("console:domain", args=[group.domain_id])).content.decode()
        candidates = Mailbox.objects.filter(domain__server=group.domain.server)
        on_page = {m.address for m in candidates if f'value="{m.pk}" checked' in page}
        in_listing = {m.address for m in candidates if m.address in listing}
        assert on_page == in_listing, (on_page, in_listing)
        return on_page

    def audit_mentions(self, text: str) -> bool:
        response = self.client.get(reverse("console:audit"))
        assert response.status_code == 200
        return text in response.content.decode()

    def delete_server(self, server):
        return outcome(self.client.post(reverse("console:server-delete", args=[server.pk])).status_code)

    def change_imap_port(self, service, port: int):
        url = reverse("console:imap", args=[service.pk])
        return outcome(self.client.post(url, {"ip_address": service.ip_address, "port": port}).status_code)

    def shown_operators(self, server) -> str:
        page = self.client.get(reverse("console:server", args=[server.pk]) + "?tab=security").content.decode()
        start = page.index('data-testid="operators"')
        return page[start : page.index("</p>", start)]

    def _refusals(self, url: str, data: dict) -> list[str]:
        """The errors a form's post gets: back to the form's page (302), each error shown on it."""
        response = self.client.post(url, data)
        assert response.status_code == 302, response.status_code
        refusals = [m.message for m in get_messages(response.wsgi_request) if m.level == message_levels.ERROR]
        page = self.client.get(response["Location"]).content.decode()
        assert all(escape(refusal) in page for refusal in refusals), page
        return refusals

    def operator_refusals(self, server, users) -> list[str]:
        url = reverse("console:server", args=[server.pk]) + "?tab=security"
        return self._refusals(url, {"operators": [u.pk for u in users]})

    def domain_administrator_refusals(self, domain, users) -> list[str]:
        url = reverse("console:domain-administrators", args=[domain.pk])
        return self._refusals(url, {"administrators": [u.pk for u in users]})


class ApiFace:
    """/api/v1/ with the user's token."""

    def __init__(self, user):
        self.client = client_for(user)

    def lock_domain(self, domain):
        return outcome(self.client.post(f"/api/v1/domains/{domain.pk}/lock/").status_code)

    def remove_domain(self, domain):
        return outcome(self.client.delete(f"/api/v1/domains/{domain.pk}/").status_code)

    def set_domain_administrators(self, domain, users):
        body = {"administrators": [u.get_username() for u in users]}
        return outcome(self.client.patch(f"/api/v1/domains/{domain.pk}/", body, format="json").status_code)

    def set_quota_ceiling(self, domain, ceiling_mb: int):
        body = {"max_mailbox_quota_mb": ceiling_mb}
        return outcome(self.client.patch(f"/api/v1/domains/{domain.pk}/", body, format="json").status_code)

    def rotate_dkim_key(self, domain):
        return outcome(self.client.post(f"/api/v1/domains/{domain.pk}/dkim/", {}, format="json").status_code)

    def check_dns(self, domain):
        return outcome(self.client.get(f"/api/v1/domains/{domain.pk}/dns-check/").status_code)

    def set_group_members(self, group, mailboxes):
        body = {"members": [m.pk for m in mailboxes]}
        return outcome(self.client.patch(f"/api/v1/groups/{group.pk}/", body, format="json").status_code)

    def shown_members(self, group) -> set[str]:
        one = self.client.get(f"/api/v1/groups/{group.pk}/").json()
        listed = [
            g for g in results(self.client.get(f"/api/v1/groups/?domain={group.domain_id}")) if g["id"] == group.pk
        ]
        assert listed == [one]
        assert len(one["members"]) == len(one["member_addresses"])
        return set(one["member_addresses"])

    def audit_mentions(self, text: str) -> bool:
        return any(text in entry["object_repr"] for entry in results(self.client.get("/api/v1/audit/")))

    def delete_server(self, server):
        return outcome(self.client.delete(f"/api/v1/servers/{server.pk}/").status_code)

    def change_imap_port(self, service, port: int):
        body = {"port": port}
        return outcome(self.client.patch(f"/api/v1/services/imap/{service.pk}/", body, format="json").status_code)

    def shown_operators(self, server) -> str:
        return ", ".join(self.client.get(f"/api/v1/servers/{server.pk}/").json()["operators"])

    def _refusals(self, url: str, field: str, users) -> list[str]:
        """The messages on `field` of a 400 (an accepted change has none)."""
        response = self.client.patch(url, {field: [u.get_username() for u in users]}, format="json")
        assert response.status_code in (200, 400), response.status_code
        return response.json()[field] if response.status_code == 400 else []

    def operator_refusals(self, server, users) -> list[str]:
        return self._refusals(f"/api/v1/servers/{server.pk}/", "operators", users)

    def domain_administrator_refusals(self, domain, users) -> list[str]:
        return self._refusals(f"/api/v1/domains/{domain.pk}/", "administrators", users)


@pytest.fixture(params=["console", "api"])
def face(request):
    kind = {"console": ConsoleFace, "api": ApiFace}[request.param]
    return lambda user: kind(user)


# -- the domain lock: operators, not the domain's administrators ------------------------------------


def test_a_domain_administrator_cannot_lock_or_unlock_their_domain(lab, face):
    assert face(lab.people.carol).lock_domain(lab.d2a) == FORBIDDEN
    assert not Domain.objects.get(pk=lab.d2a.pk).is_locked


def test_an_operator_locks_the_domains_of_their_server_only(lab, face):
    bob = face(lab.people.bob)
    assert bob.lock_domain(lab.d1) == OK
    assert bob.lock_domain(lab.d2a) == NOT_FOUND
    assert Domain.objects.get(pk=lab.d1.pk).is_locked and not Domain.objects.get(pk=lab.d2a.pk).is_locked


def test_the_console_offers_the_lock_button_only_to_who_may_use_it(lab):
    operator = ConsoleFace(lab.people.alice).client.get(reverse("console:domain", args=[lab.d2a.pk]))
    domain_administrator = ConsoleFace(lab.people.carol).client.get(reverse("console:domain", args=[lab.d2a.pk]))
    assert "Lock domain" in operator.content.decode()
    assert domain_administrator.status_code == 200 and "Lock domain" not in domain_administrator.content.decode()


def test_the_console_offers_new_servers_and_the_services_only_to_an_administrator(lab):
    administrator = ConsoleFace(lab.people.alice).client.get(reverse("console:servers")).content.decode()
    operator = ConsoleFace(lab.people.bob).client.get(reverse("console:servers")).content.decode()
    assert 'data-testid="new-server"' in administrator and reverse("console:services") in administrator
    assert 'data-testid="new-server"' not in operator and reverse("console:services") not in operator
    assert "Audit log (my changes)" in operator and "Audit log (my changes)" not in administrator


def test_only_an_administrator_sees_and_changes_the_nodes_imap_service(lab, face):
    service = services.create_imap_service(ip_address="127.0.0.1", port=free_port(), start=False)
    for person in (lab.people.bob, lab.people.carol, lab.people.dave):
        assert face(person).change_imap_port(service, free_port()) == NOT_FOUND
    assert face(lab.people.alice).change_imap_port(service, free_port()) == OK
    assert ImapService.objects.get(pk=service.pk).config_version == 2


# -- a domain the user sees but may not change: 403, never 404 --------------------------------------


def test_a_domain_administrator_sees_their_domain_but_may_not_remove_it(lab, face):
    assert face(lab.people.carol).remove_domain(lab.d2a) == FORBIDDEN
    assert face(lab.people.carol).remove_domain(lab.d2b) == NOT_FOUND
    assert Domain.objects.filter(pk__in=[lab.d2a.pk, lab.d2b.pk]).count() == 2


def test_a_domain_administrator_may_not_choose_the_domains_administrators(lab, face):
    assert face(lab.people.carol).set_domain_administrators(lab.d2a, [lab.people.dave]) == FORBIDDEN
    assert list(Domain.objects.get(pk=lab.d2a.pk).administrators.all()) == [lab.people.carol]


def test_a_domain_administrator_may_not_set_the_quota_ceiling(lab, face):
    assert face(lab.people.carol).set_quota_ceiling(lab.d2a, 5) == FORBIDDEN
    assert Domain.objects.get(pk=lab.d2a.pk).max_mailbox_quota_mb is None


# -- DKIM keys: whoever sees the domain, its administrators included ----------------------------------


def test_a_domain_administrator_rotates_their_domains_dkim_key_and_no_other(lab, face):
    carol = face(lab.people.carol)
    assert carol.rotate_dkim_key(lab.d2a) == OK
    assert carol.rotate_dkim_key(lab.d2b) == NOT_FOUND
    assert face(lab.people.bob).rotate_dkim_key(lab.d2a) == NOT_FOUND
    assert face(lab.people.bob).rotate_dkim_key(lab.d1) == OK
    assert set(DkimKey.objects.values_list("domain_id", flat=True)) == {lab.d2a.pk, lab.d1.pk}


def test_dns_readiness_is_shown_to_whoever_sees_the_domain_and_is_404_for_everyone_else(lab, face, dns, settings):
    settings.DELIVERY_DNS_SERVER = dns.address  # answers "no such name" at once
    carol, bob = face(lab.people.carol), face(lab.people.bob)
    assert carol.check_dns(lab.d2a) == OK
    assert carol.check_dns(lab.d2b) == NOT_FOUND  # another domain of the same server
    assert carol.check_dns(lab.d1) == NOT_FOUND
    assert bob.check_dns(lab.d1) == OK
    assert bob.check_dns(lab.d2a) == NOT_FOUND
    assert face(lab.people.alice).check_dns(lab.d2b) == OK


# -- group members: shown if visible, kept if invisible ---------------------------------------------


def test_a_group_shows_a_domain_administrator_only_the_members_they_can_see(lab, face):
    assert face(lab.people.carol).shown_members(lab.team) == {"m2a@two-a.test"}
    assert face(lab.people.alice).shown_members(lab.team) == {"m2a@two-a.test", "m2b@two-b.test"}


def test_editing_a_group_keeps_the_members_the_editor_cannot_see(lab, face):
    assert face(lab.people.carol).set_group_members(lab.team, []) == OK
    assert set(GroupAddress.objects.get(pk=lab.team.pk).members.all()) == {lab.m2b}
    assert face(lab.people.carol).set_group_members(lab.team, [lab.m2a]) == OK
    assert set(GroupAddress.objects.get(pk=lab.team.pk).members.all()) == {lab.m2a, lab.m2b}


# -- the audit log: an administrator reads all of it, anyone else their own changes -----------------


def test_a_non_administrator_reads_only_their_own_changes_in_the_audit_log(lab, face):
    services.set_mailbox_lock(lab.m2a, True, actor="carol")
    services.set_mailbox_lock(lab.m2b, True, actor="alice")
    carol = face(lab.people.carol)
    assert carol.audit_mentions("m2a@two-a.test") and not carol.audit_mentions("m2b@two-b.test")
    assert face(lab.people.alice).audit_mentions("m2b@two-b.test")


# -- deleting a server: administrators; a server the user cannot see is 404 -------------------------


def test_only_an_administrator_deletes_a_server_and_an_unseen_one_is_not_found(lab, face):
    bob = face(lab.people.bob)
    assert bob.delete_server(lab.one) == FORBIDDEN
    assert bob.delete_server(lab.two) == NOT_FOUND
    assert face(lab.people.carol).delete_server(lab.two) == NOT_FOUND
    assert VirtualServer.objects.filter(pk__in=[lab.one.pk, lab.two.pk]).count() == 2


# -- the operators of a server: shown to whoever sees it, chosen by administrators ------------------


def test_an_operator_sees_who_else_operates_their_server(lab, face):
    assert "dave" in face(lab.people.bob).shown_operators(lab.one)


# -- who can be given a role: active users who are not administrators -------------------------------


@pytest.mark.parametrize("who", ["an administrator", "an inactive user"])
def test_a_role_is_refused_to_an_administrator_or_an_inactive_user_with_a_message_on_the_field(lab, face, who):
    if who == "an administrator":
        user = lab.people.alice
    else:
        user = make_user("erin")
        get_user_model().objects.filter(pk=user.pk).update(is_active=False)
        user.refresh_from_db()
    refusal = permissions.role_refusal(user)
    assert refusal is not None and user.get_username() in refusal
    alice = face(lab.people.alice)

    assert alice.operator_refusals(lab.one, [lab.people.carol, user]) == [refusal]
    assert alice.domain_administrator_refusals(lab.d2a, [user]) == [refusal]

    assert set(VirtualServer.objects.get(pk=lab.one.pk).operators.all()) == {lab.people.bob, lab.people.dave}
    assert list(Domain.objects.get(pk=lab.d2a.pk).administrators.all()) == [lab.people.carol]
    assert alice.domain_administrator_refusals(lab.d2a, [lab.people.dave]) == []  # an active user is taken


# -- the module itself ------------------------------------------------------------------------------


def test_access_domain_tells_unseen_from_unchangeable(lab):
    carol = lab.people.carol
    assert permissions.access_domain(carol, lab.d2a.pk) == lab.d2a
    with pytest.raises(permissions.NotAllowed):
        permissions.access_domain(carol, lab.d2a.pk, for_change=True)
    with pytest.raises(permissions.NotVisible):
        permissions.access_domain(carol, lab.d2b.pk)
    assert permissions.access_domain(lab.people.bob, lab.d1.pk, for_change=True) == lab.d1


def test_only_a_domain_administrator_is_held_to_the_quota_ceiling(lab):
    assert permissions.acts_only_as_domain_administrator(lab.people.carol, lab.d2a)
    assert not permissions.acts_only_as_domain_administrator(lab.people.bob, lab.d1)
    assert not permissions.acts_only_as_domain_administrator(lab.people.alice, lab.d2a)
    assert not permissions.acts_only_as_domain_administrator(None, lab.d2a)
