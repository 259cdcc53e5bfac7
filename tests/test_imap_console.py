"""The IMAP service in the console: the Services row, its property sheet and Current Sessions, for
administrators only (it spans every server's mailboxes), with CSRF on every form."""

from __future__ import annotations

import json
import time

import pytest
from django.test import Client
from django.urls import reverse

from servers import services
from servers.livestate import redis_client, sessions_key, terminate_key
from servers.models import AuditEntry, ImapService
from tests.helpers import free_port
from tests.panel_helpers import make_cast

pytestmark = pytest.mark.django_db


@pytest.fixture
def cast(fast_hashing):
    return make_cast()


@pytest.fixture
def imap() -> ImapService:
    service = services.create_imap_service(ip_address="127.0.0.1", port=free_port(), start=False)
    # Ids repeat from test to test; the live state in Redis does not roll back with the database.
    redis_client().delete(sessions_key("imap", service.pk), terminate_key("imap", service.pk))
    return service


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def publish_session(service: ImapService, **info) -> str:
    session_id = "abc123def456"
    session = {
        "id": session_id,
        "protocol": "IMAP",
        "client": "192.0.2.44",
        "user": "helena@lab.example.test",
        "connected_at": time.time() - 5,
        "state": "SELECTED",
        "folder": "Archive.2026",
        "messages": 0,
        "bytes": 0,
        "tls": True,
        **info,
    }
    key = sessions_key("imap", service.pk)
    redis_client().hset(key, session_id, json.dumps(session))
    redis_client().expire(key, 30)
    return session_id


def test_the_services_view_has_an_imap_row_that_starts_pauses_and_stops_it(cast, imap):
    client = client_for(cast.alice)

    page = client.get(reverse("console:services")).content.decode()
    assert "IMAP Service" in page and f"127.0.0.1:{imap.port}" in page and 'data-testid="service-imap"' in page

    for action, desired in (("start", "running"), ("pause", "paused"), ("stop", "stopped")):
        client.post(reverse("console:service-state", args=["imap"]), {"action": action})
        imap.refresh_from_db()
        assert imap.desired_state == desired
    assert AuditEntry.objects.filter(action="pause_imap_service", actor="alice").exists()


def test_the_property_sheet_saves_settings_and_shows_refusals_next_to_their_field(cast, imap):
    client = client_for(cast.alice)
    url = reverse("console:imap", args=[imap.pk])
    assert 'data-testid="tree-imap"' in client.get(url).content.decode()
    form = {"ip_address": "127.0.0.1", "port": imap.port, "tls_port": "", "default_domain": ""}

    refused = client.post(url, {**form, "tls_port": imap.port})
    assert refused.status_code == 400
    assert 'data-field="tls_port"' in refused.content.decode() and "must differ" in refused.content.decode()

    tls_port = free_port()
    saved = client.post(
        url, {**form, "tls_port": tls_port, "plaintext_requires_tls": "on", "default_domain": "lab.test"}
    )
    assert saved.status_code == 302
    imap.refresh_from_db()
    assert (imap.tls_port, imap.plaintext_requires_tls, imap.default_domain) == (tls_port, True, "lab.test")
    assert AuditEntry.objects.filter(action="update_imap_service", actor="alice").exists()


def test_the_property_sheet_warns_while_passwords_may_travel_in_plaintext(cast, imap):
    page = client_for(cast.alice).get(reverse("console:imap", args=[imap.pk])).content.decode()
    assert "Passwords may be sent unencrypted" in page
    services.update_imap_service(imap, plaintext_requires_tls=True)
    page = client_for(cast.alice).get(reverse("console:imap", args=[imap.pk])).content.decode()
    assert "Passwords may be sent unencrypted" not in page


def test_current_sessions_lists_imap_sessions_with_their_folder_and_terminates_one(cast, imap):
    session_id = publish_session(imap)
    client = client_for(cast.alice)
    url = reverse("console:imap-sessions", args=[imap.pk])

    page = client.get(url).content.decode()
    assert "192.0.2.44" in page and "helena@lab.example.test" in page and "Archive.2026" in page
    partial = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in partial and f'hx-get="{url}"' in partial

    assert client.post(url, {"session": session_id}).status_code == 302
    assert redis_client().sismember(terminate_key("imap", imap.pk), session_id)
    assert AuditEntry.objects.filter(action="terminate_session", object_type="imapservice").exists()


@pytest.mark.parametrize("who", ["oscar", "dora", "dave"])
def test_only_an_administrator_sees_or_drives_the_imap_service(cast, imap, who):
    client = client_for(getattr(cast, who))
    session_id = publish_session(imap)

    assert client.get(reverse("console:imap", args=[imap.pk])).status_code == 404
    assert client.post(reverse("console:imap", args=[imap.pk]), {"port": 1}).status_code == 404
    assert client.get(reverse("console:imap-sessions", args=[imap.pk])).status_code == 404
    assert client.post(reverse("console:imap-sessions", args=[imap.pk]), {"session": session_id}).status_code == 404
    assert client.post(reverse("console:service-state", args=["imap"]), {"action": "stop"}).status_code == 403
    assert 'data-testid="tree-imap"' not in client.get(reverse("console:logons")).content.decode()
    imap.refresh_from_db()
    assert imap.desired_state == "stopped" and imap.config_version == 1
    assert not redis_client().sismember(terminate_key("imap", imap.pk), session_id)


def test_imap_forms_need_the_csrf_token(cast, imap):
    client = Client(enforce_csrf_checks=True)
    client.force_login(cast.alice)
    url = reverse("console:imap", args=[imap.pk])
    assert client.post(url, {"ip_address": "127.0.0.1", "port": free_port()}).status_code == 403
    assert client.post(reverse("console:service-state", args=["imap"]), {"action": "start"}).status_code == 403
    imap.refresh_from_db()
    assert imap.config_version == 1 and imap.desired_state == "stopped"
