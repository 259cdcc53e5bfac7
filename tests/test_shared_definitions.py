"""Rules that two faces share are defined once: dashboard and /stats/ counts, badge colours, yes and no."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from frontend.queries import ServerStatus, ServiceRow, badge_colour
from mailconsole.words import parse_bool
from servers import services
from servers.services.api_support import set_domain_administrators
from tests.api_factories import GOOD_PASSWORD, client_for
from tests.factories import make_server

pytestmark = pytest.mark.usefixtures("fast_hashing")


def test_the_console_dashboard_and_the_api_count_what_a_domain_administrator_sees_alike(people):
    server = make_server(domain="seen.test")
    make_server(domain="unseen.test")
    services.add_mailbox(server.default_domain, "ann", GOOD_PASSWORD)
    services.add_mailbox(services.add_domain(server, "other.test"), "zed", GOOD_PASSWORD)
    set_domain_administrators(server.default_domain, [people.carol])
    stats = client_for(people.carol).get("/api/v1/stats/").json()
    browser = Client()
    browser.force_login(people.carol)
    counts = dict(browser.get(reverse("console:dashboard")).context["counts_list"])
    assert (stats["servers"], stats["domains"], stats["mailboxes"], stats["groups"]) == (0, 1, 1, 1)
    assert (counts["Virtual servers"], counts["Domains"], counts["Mailboxes"], counts["Group addresses"]) == (
        stats["servers"],
        stats["domains"],
        stats["mailboxes"],
        stats["groups"],
    )


@pytest.mark.parametrize(
    "state, colour", [("running", "success"), ("paused", "warning"), ("stopped", "secondary"), ("error", "danger")]
)
def test_a_server_and_a_service_in_the_same_state_get_the_same_badge(state, colour):
    server_badge = ServerStatus(None, state, state, state, None, False).badge
    service_badge = ServiceRow("SMTP", "", state.capitalize(), "Automatic").badge
    assert server_badge == service_badge == badge_colour(state) == colour


def test_a_state_without_a_colour_is_info_for_a_server_and_danger_for_a_service():
    assert ServerStatus(None, "running", "running", "starting", None, False).badge == "info"
    assert ServiceRow("Redis", "", "Not responding", "Automatic").badge == "danger"
    assert ServiceRow("POP3 Service", "", "Not installed", "Manual").badge == "secondary"


@pytest.mark.parametrize(
    "raw, value",
    [(True, True), ("Yes", True), ("on", True), ("1", True), (1, True), (False, False), ("OFF", False), ("0", False)],
)
def test_settings_the_services_and_the_cli_read_yes_and_no_alike(raw, value, monkeypatch):
    from mailconsole.settings import envbool
    from servers.services.virtual_servers import _clean_flag

    assert parse_bool(raw) is value
    assert _clean_flag(raw, "require_tls") is value
    monkeypatch.setenv("MAILCONSOLE_TEST_FLAG", str(raw))
    assert envbool("MAILCONSOLE_TEST_FLAG", not value) is value


def test_a_word_that_is_neither_yes_nor_no_is_refused_everywhere(monkeypatch):
    from mailconsole.settings import SettingError, envbool
    from servers.services import RefusedError
    from servers.services.virtual_servers import _clean_flag

    assert parse_bool("maybe") is None and parse_bool(2) is None
    with pytest.raises(RefusedError):
        _clean_flag("maybe", "require_tls")
    monkeypatch.setenv("MAILCONSOLE_TEST_FLAG", "maybe")
    with pytest.raises(SettingError):
        envbool("MAILCONSOLE_TEST_FLAG", False)
    assert _clean_flag("", "require_tls") is False  # an unticked box sends nothing


def test_every_server_setting_is_declared_once_and_each_face_follows_that_list():
    from api.serializers import VirtualServerSettingsSerializer
    from frontend.forms import SERVER_TABS
    from servers.models import VirtualServer
    from servers.services.virtual_servers import EDITABLE_FIELDS, SERVER_SETTINGS
    from servers.snapshot import POLICY_FIELDS

    names = [name for name, _, _ in SERVER_SETTINGS]
    assert len(names) == len(set(names)) and tuple(names) == EDITABLE_FIELDS
    assert [name for tab in SERVER_TABS.values() for name in tab] == names
    assert set(VirtualServerSettingsSerializer().fields) == set(names)
    assert {field.name for field in VirtualServer._meta.get_fields()} >= set(names)
    # What the workers read is a setting someone can change.
    assert set(POLICY_FIELDS) <= set(names)
