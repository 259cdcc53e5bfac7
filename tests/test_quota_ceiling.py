"""A domain's quota ceiling: its domain administrators stay under it and never make a quota unlimited.

alice administers, bob operates the server, carol administers the domain `lab.test` only.
"""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from servers import services
from servers.models import AuditEntry, Mailbox
from servers.services import RefusedError
from servers.services.api_support import set_domain_administrators, set_server_operators
from tests.api_factories import GOOD_PASSWORD, client_for
from tests.factories import make_server

pytestmark = pytest.mark.usefixtures("fast_hashing")

MB = 1024 * 1024


@pytest.fixture
def domain(people):
    server = make_server(domain="lab.test", node=services.local_node())
    set_server_operators(server, [people.bob])
    set_domain_administrators(server.default_domain, [people.carol])
    return services.set_mailbox_quota_ceiling(server.default_domain, 100, actor="alice")


@pytest.fixture
def mailbox(domain):
    return services.add_mailbox(domain, "helena", GOOD_PASSWORD, quota_bytes=10 * MB)


def test_a_domain_administrator_cannot_raise_a_quota_above_the_ceiling_through_the_api(people, mailbox):
    carol = client_for(people.carol)
    url = f"/api/v1/mailboxes/{mailbox.pk}/"
    above = carol.patch(url, {"quota_bytes": 100 * MB + 1}, format="json")
    assert above.status_code == 400 and "at most 100 MB" in above.json()["quota_bytes"][0]
    unlimited = carol.patch(url, {"quota_bytes": None}, format="json")
    assert unlimited.status_code == 400 and "never unlimited" in unlimited.json()["quota_bytes"][0]
    zero = carol.patch(url, {"quota_bytes": 0}, format="json")
    assert zero.status_code == 400 and "quota_bytes" in zero.json()
    assert Mailbox.objects.get(pk=mailbox.pk).quota_bytes == 10 * MB
    within = carol.patch(url, {"quota_bytes": 100 * MB}, format="json")
    assert within.status_code == 200 and within.json()["quota_bytes"] == 100 * MB


def test_a_domain_administrator_creates_mailboxes_only_with_a_quota_under_the_ceiling(people, domain):
    carol = client_for(people.carol)
    body = {"domain": domain.pk, "local_part": "new", "password": GOOD_PASSWORD}
    refused = carol.post("/api/v1/mailboxes/", body, format="json")
    assert refused.status_code == 400 and "quota_bytes" in refused.json()
    assert carol.post("/api/v1/mailboxes/", {**body, "quota_bytes": 101 * MB}, format="json").status_code == 400
    assert not Mailbox.objects.filter(local_part="new").exists()
    created = carol.post("/api/v1/mailboxes/", {**body, "quota_bytes": 50 * MB}, format="json")
    assert created.status_code == 201 and created.json()["quota_bytes"] == 50 * MB


def test_administrators_and_operators_are_not_held_to_the_ceiling(people, mailbox):
    for user in (people.alice, people.bob):
        response = client_for(user).patch(f"/api/v1/mailboxes/{mailbox.pk}/", {"quota_bytes": None}, format="json")
        assert response.status_code == 200 and response.json()["quota_bytes"] is None
        response = client_for(user).patch(f"/api/v1/mailboxes/{mailbox.pk}/", {"quota_bytes": 500 * MB}, format="json")
        assert response.status_code == 200


def test_a_domain_administrator_keeps_what_an_administrator_set_when_changing_something_else(people, mailbox):
    services.update_mailbox(mailbox, quota_bytes=None, actor="alice")
    client = Client()
    client.force_login(people.carol)
    page = client.post(
        reverse("console:mailbox", args=[mailbox.pk]),
        {"form": "properties", "display_name": "Helena", "quota_kb": "", "quota_messages": ""},
    )
    assert page.status_code == 302
    mailbox.refresh_from_db()
    assert (mailbox.display_name, mailbox.quota_bytes) == ("Helena", None)


def test_the_console_shows_the_ceiling_next_to_the_quota_field(people, mailbox):
    client = Client()
    client.force_login(people.carol)
    page = client.post(
        reverse("console:mailbox", args=[mailbox.pk]),
        {"form": "properties", "display_name": "", "quota_kb": str(200 * 1024), "quota_messages": ""},
    )
    assert page.status_code == 200
    form = page.context["properties"]
    assert "at most 100 MB" in form.errors["quota_kb"][0]
    assert Mailbox.objects.get(pk=mailbox.pk).quota_bytes == 10 * MB
    new = client.post(
        reverse("console:mailbox-new", args=[mailbox.domain_id]),
        {"local_part": "x", "password": GOOD_PASSWORD, "quota_kb": "", "quota_messages": ""},
    )
    assert new.status_code == 200 and "never unlimited" in new.context["form"].errors["quota_kb"][0]
    assert "at most 102400 KB" in new.content.decode()


def test_only_administrators_and_operators_change_the_ceiling(people, domain):
    url = f"/api/v1/domains/{domain.pk}/"
    assert client_for(people.carol).patch(url, {"max_mailbox_quota_mb": None}, format="json").status_code == 403
    with pytest.raises(RefusedError) as refused:
        services.set_mailbox_quota_ceiling(domain, None, actor="carol", acting_user=people.carol)
    assert refused.value.field == "max_mailbox_quota_mb"
    carol_console = Client()
    carol_console.force_login(people.carol)
    shown = carol_console.get(reverse("console:domain", args=[domain.pk])).content.decode()
    assert "100 MB" in shown and 'data-testid="domain-quota-ceiling"' not in shown
    carol_console.post(reverse("console:domain-quota-ceiling", args=[domain.pk]), {"max_mailbox_quota_mb": "0"})
    domain.refresh_from_db()
    assert domain.max_mailbox_quota_mb == 100
    bob_console = Client()
    bob_console.force_login(people.bob)
    assert (
        'data-testid="domain-quota-ceiling"'
        in bob_console.get(reverse("console:domain", args=[domain.pk])).content.decode()
    )
    response = client_for(people.bob).patch(url, {"max_mailbox_quota_mb": 2048}, format="json")
    assert response.status_code == 200 and response.json()["max_mailbox_quota_mb"] == 2048
    assert client_for(people.alice).patch(url, {"max_mailbox_quota_mb": -1}, format="json").status_code == 400
    assert AuditEntry.objects.filter(action="set_mailbox_quota_ceiling", actor="bob").exists()


def test_the_command_line_sets_and_removes_the_ceiling(domain):
    out = StringIO()
    call_command("smtpsvc", "domain", "ceiling", str(domain.server_id), "lab.test", "250", stdout=out)
    assert "250 MB" in out.getvalue()
    domain.refresh_from_db()
    assert domain.max_mailbox_quota_mb == 250
    call_command("smtpsvc", "domain", "ceiling", str(domain.server_id), "lab.test", "0", stdout=StringIO())
    domain.refresh_from_db()
    assert domain.max_mailbox_quota_mb is None


def test_a_csv_import_by_a_domain_administrator_is_checked_against_the_ceiling(people, domain):
    from frontend.bulk import check_rows, parse_csv

    rows = check_rows(
        domain,
        parse_csv(
            f"local_part,password,display_name,quota_kb\nbig,{GOOD_PASSWORD},,"
            f"{200 * 1024}\nfine,{GOOD_PASSWORD},,1024\n"
        ),
        acting_user=people.carol,
    )
    assert ["at most 100 MB" in " ".join(row.errors) for row in rows] == [True, False]
