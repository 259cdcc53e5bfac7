"""The sender checks' settings on every face (API, `smtpsvc set`, console), and on a real SMTP worker."""

from __future__ import annotations

import smtplib
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse

from servers import replies, services
from servers.delivery.services import update_delivery_settings
from servers.models import Domain
from servers.snapshot import load_snapshot
from tests.api_factories import client_for
from tests.factories import PASSWORD, make_mailbox, make_server, make_user
from tests.helpers import worker_running


@pytest.mark.django_db
def test_the_sender_settings_are_off_by_default_and_reach_the_workers_snapshot():
    server = make_server(domain="lab.test")
    assert (server.require_sender_domain, server.ptr_matches_sender, server.sender_allow, server.sender_deny) == (
        False,
        False,
        "",
        "",
    )
    assert (server.outbound_max_messages_per_hour, server.outbound_max_messages_per_day) == (0, 0)
    assert server.outbound_max_new_recipients_per_day == 0

    services.update_virtual_server(server, sender_deny="@Pest.TEST\nboss@far.test.", require_sender_domain="yes")
    services.set_domain_sender_lists(server.default_domain, sender_allow="partner.test")
    snapshot = load_snapshot(server.pk)

    assert snapshot.policy.require_sender_domain
    assert snapshot.policy.sender_deny.matches("x@mail.pest.test") and snapshot.policy.sender_deny.matches(
        "boss@far.test"
    )
    assert snapshot.domain_sender_lists["lab.test"][0].matches("news@partner.test")


def test_the_server_api_takes_sender_lists_and_answers_field_errors(admin):
    server = make_server()
    url = f"/api/v1/servers/{server.pk}/"

    response = admin.patch(
        url, {"sender_allow": "@Partner.test\nboss@far.test", "outbound_max_messages_per_hour": 100}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["sender_allow"] == "partner.test\nboss@far.test"

    for body, field in [
        ({"sender_deny": "not a domain"}, "sender_deny"),
        ({"sender_allow": "nodot"}, "sender_allow"),
        ({"ptr_matches_sender": "maybe"}, "ptr_matches_sender"),
        ({"outbound_max_messages_per_day": -1}, "outbound_max_messages_per_day"),
    ]:
        response = admin.patch(url, body, format="json")
        assert response.status_code == 400 and field in response.json(), (body, response.content)


@pytest.mark.django_db
def test_smtpsvc_set_changes_the_sender_settings_and_refuses_a_bad_entry():
    server = make_server()

    call_command("smtpsvc", "set", str(server.pk), "ptr_matches_sender=true", stdout=StringIO())
    call_command("smtpsvc", "set", str(server.pk), "sender_deny=@spam.test,x@far.test", stdout=StringIO())
    server.refresh_from_db()
    assert server.ptr_matches_sender and server.sender_deny == "spam.test\nx@far.test"

    with pytest.raises(CommandError, match="not a valid domain name"):
        call_command("smtpsvc", "set", str(server.pk), "sender_deny=user@", stdout=StringIO())


def test_the_domain_api_changes_sender_lists_for_operators_not_domain_administrators(admin):
    server = make_server(domain="lab.test")
    domain = server.default_domain
    carol = make_user("carol-da")
    domain.administrators.add(carol)
    url = f"/api/v1/domains/{domain.pk}/"

    assert client_for(carol).patch(url, {"sender_deny": "pest.test"}, format="json").status_code == 403
    refused = admin.patch(url, {"sender_deny": "pest.test\nbad entry!"}, format="json")
    assert refused.status_code == 400 and "sender_deny" in refused.json(), refused.content
    response = admin.patch(url, {"sender_allow": "@Partner.test", "sender_deny": "pest.test"}, format="json")

    assert response.status_code == 200, response.content
    assert (response.json()["sender_allow"], response.json()["sender_deny"]) == ("partner.test", "pest.test")


@pytest.mark.django_db
def test_the_console_domain_page_edits_the_sender_lists_and_shows_field_errors(fast_hashing):
    server = make_server(domain="lab.test")
    domain = server.default_domain
    browser = Client()
    browser.force_login(make_user("root", superuser=True))
    url = reverse("console:domain-sender-lists", args=[domain.pk])

    refused = browser.post(url, {"sender_allow": "partner.test", "sender_deny": "user@"})
    assert refused.status_code == 400
    page = refused.content.decode()
    assert "is-invalid" in page and "not a valid domain name" in page and "partner.test" in page  # what was typed stays
    assert Domain.objects.get(pk=domain.pk).sender_allow == ""  # nothing saved when one field is wrong

    assert browser.post(url, {"sender_allow": "@Partner.test", "sender_deny": "pest.test"}).status_code == 302
    domain.refresh_from_db()
    assert (domain.sender_allow, domain.sender_deny) == ("partner.test", "pest.test")
    assert (
        'data-testid="domain-sender-lists"' in browser.get(reverse("console:domain", args=[domain.pk])).content.decode()
    )


# -- a real SMTP worker --------------------------------------------------------------------------------


@pytest.mark.usefixtures("supervised")
def test_the_worker_refuses_unknown_sender_domains_and_impostors_but_not_signed_in_users(dns):
    server = worker_running(make_server(domain="lab.test", start=True))
    make_mailbox(server, "alice")
    dns.add_ptr("127.0.0.1", "mail.spam.test")
    dns.add_a("mail.spam.test", "127.0.0.1")
    dns.add_mx("spam.test", (10, "mail.spam.test"))
    dns.add_mx("example.test", (10, "mx.example.test"))
    update_delivery_settings(server, dns_server=dns.address)
    services.update_virtual_server(server, require_sender_domain=True, ptr_matches_sender=True)
    worker_running(server)

    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.ehlo("client.test")
        code, text = client.mail("bob@nowhere.test")
        assert f"{code} {text.decode()}" == replies.SENDER_DOMAIN_UNKNOWN.format(
            address="bob@nowhere.test", domain="nowhere.test"
        )
        client.rset()
        code, text = client.mail("ceo@example.test")
        assert f"{code} {text.decode()}" == replies.PTR_NOT_IN_SENDER_DOMAIN.format(
            address="ceo@example.test", name="mail.spam.test", domain="example.test"
        )
        client.rset()
        assert client.sendmail("news@spam.test", ["alice@lab.test"], b"Subject: ok\r\n\r\nok\r\n") == {}
        assert client.sendmail("", ["alice@lab.test"], b"Subject: bounce\r\n\r\nok\r\n") == {}

    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.login("alice@lab.test", PASSWORD)  # lab.test is in no DNS here: signed in, not checked
        assert client.sendmail("alice@lab.test", ["alice@lab.test"], b"Subject: me\r\n\r\nok\r\n") == {}


@pytest.mark.django_db
def test_the_console_anti_spam_and_outbound_tabs_save_the_settings_and_show_a_bad_entry_at_its_field(fast_hashing):
    server = make_server()
    browser = Client()
    browser.force_login(make_user("root", superuser=True))
    antispam = reverse("console:server", args=[server.pk]) + "?tab=antispam"
    data = {
        "form": "server",
        "dnsbl_action": "tag",
        "greylisting_delay_s": "300",
        "ptr_matches_sender": "on",
        "spf_action": "none",
        "dmarc_action": "none",
    }

    page = browser.post(antispam, {**data, "sender_deny": "spam.test\nuser@"}).content.decode()
    assert "not a valid domain name" in page
    browser.post(antispam, {**data, "sender_deny": "@Spam.test", "require_sender_domain": "on"})
    outbound = reverse("console:server", args=[server.pk]) + "?tab=outbound"
    browser.post(
        outbound,
        {
            "form": "server",
            "outbound_max_messages_per_hour": "50",
            "outbound_max_messages_per_day": "200",
            "outbound_max_new_recipients_per_day": "0",
        },
    )

    server.refresh_from_db()
    assert (server.sender_deny, server.require_sender_domain, server.ptr_matches_sender) == ("spam.test", True, True)
    assert (server.outbound_max_messages_per_hour, server.outbound_max_messages_per_day) == (50, 200)
