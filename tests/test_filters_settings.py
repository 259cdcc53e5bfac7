"""The Filters tab's settings on every face (console tab, REST API, `smtpsvc set`) and the scanners on
the Services view; what they do to mail is in tests/test_filters.py and tests/test_filters_worker.py."""

from __future__ import annotations

import json
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse

from servers import services
from servers.livestate import redis_client, scanner_key
from servers.message_filters import DEFAULT_FORBIDDEN_EXTENSIONS
from servers.snapshot import load_snapshot
from tests.factories import make_server
from tests.filter_helpers import FakeClamd, FakeRspamd
from tests.panel_helpers import clear_login_throttle, make_cast

pytestmark = pytest.mark.django_db


def test_the_filters_are_off_or_safe_by_default_and_reach_the_workers_snapshot(settings):
    settings.RSPAMD_URL = ""
    server = make_server()
    policy = load_snapshot(server.pk).policy
    assert (policy.attachment_filter, policy.virus_scanner, policy.virus_scanner_failure, policy.rspamd_url) == (
        "off",
        "",
        "open",
        "",
    )
    assert (policy.spam_tag_score, policy.spam_junk_score, policy.spam_refuse_score) == (6.0, 10.0, None)
    assert {"exe", "scr", "js", "vbs", "bat", "cmd", "com", "pif", "jar", "msi", "ps1", "hta", "wsf", "lnk", "cpl"} <= (
        policy.attachment_rules.extensions
    )
    assert policy.attachment_rules.max_size_bytes is None

    settings.RSPAMD_URL = "http://127.0.0.1:11333"
    services.update_virtual_server(
        server, attachment_filter="strip", forbidden_extensions=".EXE, zip", max_attachment_size_kb="100"
    )
    policy = load_snapshot(server.pk).policy
    assert policy.rspamd_url == "http://127.0.0.1:11333"  # the environment's, no override
    assert (policy.attachment_filter, policy.attachment_rules.extensions, policy.attachment_rules.max_size_bytes) == (
        "strip",
        frozenset({"exe", "zip"}),
        100 * 1024,
    )


def test_the_api_takes_the_filters_and_answers_field_errors(admin):
    server = make_server()
    url = f"/api/v1/servers/{server.pk}/"
    body = {
        "attachment_filter": "refuse",
        "forbidden_mime_types": "application/x-msdownload\nvideo/*",
        "virus_scanner": "unix:/run/clamav/clamd.ctl",
        "virus_scanner_failure": "closed",
        "rspamd_url": "http://127.0.0.1:11333",
        "spam_tag_score": 5,
        "spam_junk_score": 8.5,
        "spam_refuse_score": 20,
        "spam_subject_prefix": "***SPAM***",
    }

    response = admin.patch(url, body, format="json")
    assert response.status_code == 200, response.content
    assert {key: response.json()[key] for key in body} == {
        **body,
        "spam_tag_score": 5.0,
        "forbidden_mime_types": "application/x-msdownload\nvideo/*",
    }

    for bad, field in [
        ({"attachment_filter": "drop"}, "attachment_filter"),
        ({"forbidden_extensions": "exe, not an extension!"}, "forbidden_extensions"),
        ({"forbidden_mime_types": "executable"}, "forbidden_mime_types"),
        ({"virus_scanner": "127.0.0.1:3310"}, "virus_scanner"),
        ({"virus_scanner_failure": "maybe"}, "virus_scanner_failure"),
        ({"rspamd_url": "https://rspamd.test"}, "rspamd_url"),
        ({"spam_junk_score": 4}, "spam_junk_score"),  # below the tag score (5)
        ({"spam_refuse_score": 8}, "spam_refuse_score"),  # below the junk score (8.5)
    ]:
        response = admin.patch(url, bad, format="json")
        assert response.status_code == 400 and field in response.json(), (bad, response.content)


def test_smtpsvc_set_changes_the_filters_and_refuses_a_bad_scanner_address():
    server = make_server()

    call_command(
        "smtpsvc",
        "set",
        str(server.pk),
        "virus_scanner=tcp://127.0.0.1:3310",
        "attachment_filter=strip",
        "spam_refuse_score=30",
        stdout=StringIO(),
    )
    call_command("smtpsvc", "set", str(server.pk), "spam_junk_score=", stdout=StringIO())  # empty: off
    server.refresh_from_db()
    assert (server.virus_scanner, server.attachment_filter, server.spam_refuse_score, server.spam_junk_score) == (
        "tcp://127.0.0.1:3310",
        "strip",
        30.0,
        None,
    )

    with pytest.raises(CommandError, match="tcp://host:port"):
        call_command("smtpsvc", "set", str(server.pk), "virus_scanner=clamd", stdout=StringIO())


@pytest.fixture
def cast(fast_hashing):
    clear_login_throttle()
    return make_cast()


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_filters_tab_saves_its_settings_and_shows_a_bad_one_next_to_its_field(cast):
    client = client_for(cast.alice)
    url = reverse("console:server", args=[cast.server.pk]) + "?tab=filters"
    page = client.get(url).content.decode()
    assert 'name="virus_scanner"' in page and "Filters" in page
    data = {
        "form": "server",
        "attachment_filter": "refuse",
        "forbidden_extensions": DEFAULT_FORBIDDEN_EXTENSIONS,
        "forbidden_mime_types": "",
        "max_attachment_size_kb": "",
        "virus_scanner_failure": "open",
        "rspamd_url": "",
        "spam_tag_score": "6",
        "spam_subject_prefix": "[SPAM]",
        "spam_junk_score": "10",
        "spam_refuse_score": "",
    }

    page = client.post(url, {**data, "virus_scanner": "clamd.lab"}).content.decode()
    assert "tcp://host:port or unix:/path" in page

    client.post(url, {**data, "virus_scanner": "tcp://127.0.0.1:3310"})
    cast.server.refresh_from_db()
    assert (cast.server.attachment_filter, cast.server.virus_scanner, cast.server.spam_refuse_score) == (
        "refuse",
        "tcp://127.0.0.1:3310",
        None,
    )


def test_the_services_view_pings_each_scanner_and_shows_what_the_workers_last_heard(cast, settings):
    with FakeClamd() as clamd, FakeRspamd() as rspamd:
        settings.RSPAMD_URL = rspamd.url  # the environment's, for every server without its own
        services.update_virtual_server(cast.server, virus_scanner=clamd.address)
        redis = redis_client()
        redis.set(
            scanner_key("clamd", clamd.address),
            json.dumps({"reachable": False, "error": "ConnectionRefusedError: refused", "checked_at": time.time()}),
            ex=60,
        )
        redis.delete(scanner_key("rspamd", rspamd.url))
        page = client_for(cast.alice).get(reverse("console:services")).content.decode()
    services.update_virtual_server(cast.server, virus_scanner="tcp://127.0.0.1:1")
    down = client_for(cast.alice).get(reverse("console:services")).content.decode()

    clamd_row, rspamd_row = (row for row in page.split("<tr>") if "(clamd)" in row or "(rspamd)" in row)
    assert "Reachable" in clamd_row and "last error: ConnectionRefusedError: refused" in clamd_row
    assert "Reachable" in rspamd_row and "not used by a worker lately" in rspamd_row
    [down_row] = (row for row in down.split("<tr>") if "(clamd)" in row)
    assert "Unreachable" in down_row and "now: ConnectionRefusedError" in down_row
