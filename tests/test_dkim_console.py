"""The DKIM section of a domain's console page: the record to publish, Generate and Rotate."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from servers import services
from servers.models import DkimKey, DkimKeyState
from tests.panel_helpers import Cast, make_cast

pytestmark = pytest.mark.usefixtures("fast_hashing")


@pytest.fixture
def cast(db) -> Cast:
    return make_cast()


def console_for(user, **options) -> Client:
    client = Client(**options)
    client.force_login(user)
    return client


def test_the_domains_administrator_generates_a_key_and_sees_the_record_to_publish(cast):
    dora = console_for(cast.dora, enforce_csrf_checks=True)
    page = reverse("console:domain", args=[cast.domain.pk])
    before = dora.get(page).content.decode()
    assert 'data-testid="dkim-none"' in before and "Generate key" in before
    token = dora.cookies["csrftoken"].value

    response = dora.post(
        reverse("console:domain-dkim", args=[cast.domain.pk]),
        {"algorithm": "rsa-sha256", "csrfmiddlewaretoken": token},
        follow=True,
    )

    key = DkimKey.objects.get(domain=cast.domain)
    shown = response.content.decode()
    assert f'value="{key.selector}._domainkey.dora.example.test"' in shown
    assert f"v=DKIM1; k=rsa; p={key.public_key}</textarea>" in shown
    assert "Rotate key" in shown and f"New DKIM key {key.selector}" in shown
    assert "PRIVATE KEY" not in shown and "fernet:" not in shown


def test_rotating_in_the_console_keeps_the_old_selector_listed_as_retired(cast):
    first = services.generate_dkim_key(cast.domain)
    oscar = console_for(cast.oscar)

    shown = oscar.post(
        reverse("console:domain-dkim", args=[cast.domain.pk]), {"algorithm": "ed25519-sha256"}, follow=True
    ).content.decode()

    first.refresh_from_db()
    assert first.state == DkimKeyState.RETIRED
    assert "k=ed25519" in shown and "Retired selectors" in shown and first.selector in shown


def test_the_dkim_post_needs_the_csrf_token_and_a_visible_domain(cast):
    dora = console_for(cast.dora, enforce_csrf_checks=True)
    assert dora.post(reverse("console:domain-dkim", args=[cast.domain.pk])).status_code == 403
    dave = console_for(cast.dave)
    assert dave.post(reverse("console:domain-dkim", args=[cast.domain.pk])).status_code == 404
    dora_plain = console_for(cast.dora)
    assert dora_plain.post(reverse("console:domain-dkim", args=[cast.other_domain.pk])).status_code == 404
    assert dora_plain.get(reverse("console:domain-dkim", args=[cast.domain.pk])).status_code == 405
    assert not DkimKey.objects.exists()
