"""Clients for the REST API tests; the people are `tests.factories.make_people` (the `people` fixture)."""

from __future__ import annotations

from rest_framework.test import APIClient

from api.models import ApiToken

GOOD_PASSWORD = "Secret123"


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
