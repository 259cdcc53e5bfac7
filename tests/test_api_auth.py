"""Who gets in: token keys (with expiry), the browser session with CSRF, and nobody else."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from api.models import ApiToken, hash_key
from tests.api_factories import client_for


def test_anonymous_request_is_refused_with_401_and_a_token_challenge(people):
    response = APIClient().get("/api/v1/servers/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_a_valid_token_authenticates_its_user(people):
    response = client_for(people.alice).get("/api/v1/servers/")
    assert response.status_code == 200


def test_an_unknown_token_is_refused(people):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token mc_not-a-real-key")
    assert client.get("/api/v1/servers/").status_code == 401


def test_a_malformed_authorization_header_is_refused(people):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token two parts")
    assert client.get("/api/v1/servers/").status_code == 401


def test_an_expired_token_is_refused(people):
    token, key = ApiToken.issue(people.alice, expires_in_days=1)
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/v1/servers/").status_code == 401


def test_a_token_of_a_deactivated_user_is_refused(people):
    client = client_for(people.alice)
    people.alice.is_active = False
    people.alice.save()
    assert client.get("/api/v1/servers/").status_code == 401


def test_using_a_token_records_when_it_was_last_used(people):
    token, key = ApiToken.issue(people.alice)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    client.get("/api/v1/servers/")
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_the_key_is_stored_only_as_its_hash(people):
    token, key = ApiToken.issue(people.alice, name="backup script")
    assert key.startswith("mc_") and len(key) > 40
    assert token.key_hash == hash_key(key) and key not in token.key_hash
    assert not ApiToken.objects.filter(key_hash=key).exists()


def test_api_token_command_prints_a_working_key_once(people):
    out, err = StringIO(), StringIO()
    call_command("api_token", "alice", "--expires-in-days", "30", "--name", "ci", stdout=out, stderr=err)
    key = out.getvalue().strip()
    token = ApiToken.objects.for_key(key).get()
    assert token.name == "ci" and token.user == people.alice
    assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)
    assert "not shown again" in err.getvalue()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/v1/servers/").status_code == 200


def test_api_token_command_refuses_an_unknown_user(people):
    with pytest.raises(CommandError, match="no user"):
        call_command("api_token", "mallory", stdout=StringIO(), stderr=StringIO())


def test_api_token_command_refuses_a_non_positive_expiry(people):
    with pytest.raises(CommandError, match="at least 1"):
        call_command("api_token", "alice", "--expires-in-days", "0", stdout=StringIO(), stderr=StringIO())


def test_browser_session_reads_but_must_send_the_csrf_token_to_write(people):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(people.alice)
    assert client.get("/api/v1/servers/").status_code == 200
    response = client.post("/api/v1/servers/", {"name": "x", "default_domain": "x.test"}, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_a_signed_in_user_without_a_role_sees_nothing(people):
    dave = client_for(people.dave)
    for path in ("nodes/", "servers/", "domains/", "mailboxes/", "groups/", "logons/", "access-rules/"):
        response = dave.get(f"/api/v1/{path}")
        assert response.status_code == 200 and response.json()["results"] == [], path
    assert dave.get("/api/v1/stats/").json()["servers"] == 0
