"""How failures the views do not catch become answers: the API's exception handler."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from django.db import IntegrityError
from django.db.models import ProtectedError

from api.errors import exception_handler
from api.models import ApiToken
from api.parsers import MAX_JSON_DEPTH, json_depth
from api.views import StatsView
from servers.services import RefusedError
from tests.api_factories import client_for
from tests.factories import make_server


class Sent:
    """A request as the handler sees it: only its parsed body matters."""

    def __init__(self, data) -> None:
        self.data = data


def test_a_refusal_about_a_field_sent_becomes_400_with_the_message_under_it():
    error = RefusedError("The TCP port must be between 1 and 65535.", field="port")
    response = exception_handler(error, {"request": Sent({"port": 0})})
    assert response.status_code == 400
    assert response.data == {"port": ["The TCP port must be between 1 and 65535."]}


def test_a_refusal_without_a_field_about_a_body_goes_under_non_field_errors():
    response = exception_handler(RefusedError("No."), {"request": Sent({"name": "x"})})
    assert (response.status_code, response.data) == (400, {"non_field_errors": ["No."]})


def test_a_refusal_about_the_objects_state_is_a_409_with_the_same_body():
    error = RefusedError("The default domain cannot be deleted.", field="name")
    for request in (Sent({}), Sent({"relay_allowed": True})):
        response = exception_handler(error, {"request": request})
        assert (response.status_code, response.data) == (409, {"name": ["The default domain cannot be deleted."]})


def test_a_delete_blocked_by_protected_rows_becomes_409():
    response = exception_handler(ProtectedError("in use", set()), {})
    assert response.status_code == 409 and "detail" in response.data


def test_a_lost_race_on_a_unique_constraint_becomes_409():
    response = exception_handler(IntegrityError("UNIQUE constraint failed"), {})
    assert response.status_code == 409


def test_anything_else_is_left_to_drf_and_django():
    assert exception_handler(ValueError("bug"), {}) is None


# Finding 9 of issue 13: a body nested deeper than the JSON decoder's recursion limit was an HTML 500.
DEEP_ARRAY = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000


@pytest.fixture
def api(people):
    """An administrator's client that shows an unhandled exception as the 500 a real client would get."""
    client = client_for(people.alice)
    client.raise_request_exception = False
    return client


@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_OBJECT], ids=["array", "object"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/v1/servers/"),
        ("post", "/api/v1/domains/"),
        ("post", "/api/v1/mailboxes/"),
        ("post", "/api/v1/access-rules/"),
        ("patch", "/api/v1/servers/{server}/"),
    ],
)
def test_a_body_nested_100000_levels_deep_is_refused_with_400_in_json(api, method, path, body):
    server = make_server()
    response = getattr(api, method)(path.format(server=server.pk), body, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert response["Content-Type"] == "application/json"
    assert "nests" in response.json()["detail"]


def test_a_body_nested_more_than_the_limit_is_refused_and_one_within_it_reaches_the_validators(api):
    too_deep = "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
    response = api.post("/api/v1/servers/", f'{{"name": {too_deep}}}', content_type="application/json")
    assert response.status_code == 400 and "nests" in response.json()["detail"]
    within = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    response = api.post("/api/v1/servers/", f'{{"name": {within}}}', content_type="application/json")
    assert response.status_code == 400 and "name" in response.json()


def test_a_body_over_the_upload_limit_is_a_json_413_and_one_under_it_reaches_the_validators(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    padding = " " * 10_000
    response = api.post("/api/v1/servers/", '{"name": "x"}' + padding, content_type="application/json")
    assert response.status_code == 413 and response["Content-Type"] == "application/json"
    assert "larger than" in response.json()["detail"]
    response = api.post("/api/v1/servers/", '{"name": ""}' + padding[:9_000], content_type="application/json")
    assert response.status_code == 400 and "name" in response.json()


def test_json_depth_counts_levels_without_recursion():
    assert [json_depth(v) for v in (1, [], {"a": [1, {"b": []}]})] == [0, 1, 4]


def test_an_unhandled_exception_under_the_api_is_a_json_500_not_an_html_page(api, monkeypatch):
    def crash(self, request, *args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(StatsView, "get", crash)
    response = api.get("/api/v1/stats/")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "A server error occurred; it has been logged."}


def test_django_errors_outside_drf_are_json_under_the_api_and_html_elsewhere(api):
    bad_host = api.get("/api/v1/stats/", HTTP_HOST="bad host")  # DisallowedHost: Django's 400
    assert bad_host.status_code == 400 and bad_host.json() == {"detail": "Bad request."}
    outside_v1 = api.get("/api/v2/")
    assert outside_v1.status_code == 404 and outside_v1.json() == {"detail": "Not found."}
    page = api.get("/no-such-page/")
    assert page.status_code == 404 and not page["Content-Type"].startswith("application/json")


def test_over_a_socket_a_deeply_nested_body_gets_a_json_400(live_server, transactional_db, people):
    _, key = ApiToken.issue(people.alice)
    request = urllib.request.Request(
        f"{live_server.url}/api/v1/servers/",
        data=DEEP_ARRAY,
        method="POST",
        headers={"Authorization": f"Token {key}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    assert refused.value.headers["Content-Type"] == "application/json"
    assert "nests" in json.loads(refused.value.read())["detail"]


# Finding 12 of issue 13: query parameters the schema calls invalid were accepted (an empty choice, a page size
# of "false", a parameter given twice); they are refused now, as documented.
@pytest.mark.parametrize(
    "query",
    [
        "type=",
        "server=",
        "page_size=",
        "page_size=false",
        "page_size=0",
        "page=",
        "page=0",
        "page=1&page=2",
        "type=local&type=remote",
        "ordering=name&ordering=id",
    ],
)
def test_a_query_parameter_the_schema_calls_invalid_is_refused_with_400(api, query):
    response = api.get(f"/api/v1/domains/?{query}")
    assert response.status_code == 400, response.content
    assert set(response.json()) <= {"type", "server", "page", "page_size", "ordering"}


def test_valid_query_parameters_still_filter_and_a_large_page_size_is_capped(api):
    make_server(domain="listed.example.test")
    response = api.get("/api/v1/domains/?type=local&page=1&page_size=100000&audit_actor=")
    assert response.status_code == 200 and response.json()["count"] >= 1


def test_a_yes_no_parameter_takes_1_or_0_as_documented(api):
    mailbox_path = "/api/v1/mailboxes/999999/?remove_mail="
    assert api.delete(mailbox_path + "true").status_code == 400
    assert api.delete(mailbox_path + "1").status_code == 404  # valid: only the mailbox is missing
