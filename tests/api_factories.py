"""People and clients for the REST API tests: alice administers, bob operates, carol runs a domain, dave has no role."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from api.models import ApiToken

FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
GOOD_PASSWORD = "Secret123"


@dataclass
class People:
    alice: object  # administrator
    bob: object  # server operator
    carol: object  # domain administrator
    dave: object  # signed in, no role


def make_people() -> People:
    users = get_user_model().objects
    return People(
        alice=users.create_superuser("alice", "alice@example.test", "pw-alice"),
        bob=users.create_user("bob", "bob@example.test", "pw-bob"),
        carol=users.create_user("carol", "carol@example.test", "pw-carol"),
        dave=users.create_user("dave", "dave@example.test", "pw-dave"),
    )


def client_for(user=None, **token_options) -> APIClient:
    """A client sending `Authorization: Token <key>` for `user`, or an anonymous one."""
    client = APIClient()
    if user is not None:
        _, key = ApiToken.issue(user, **token_options)
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def results(response) -> list[dict]:
    assert response.status_code == 200, response.content
    return response.json()["results"]
