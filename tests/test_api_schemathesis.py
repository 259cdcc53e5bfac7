"""Property-based run over the whole published schema: no 5xx, responses as documented, and the schema and
the validators agree (a request valid by the schema is accepted, an invalid one refused).

Schemathesis generates requests (valid and invalid) for every operation in /api/v1/schema/ and sends
them in-process to the Django WSGI app, as an administrator, against a seeded installation.
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from api import patterns
from api.models import ApiToken
from servers import mailstore, services
from servers.delivery import engine
from servers.models import AuditEntry
from tests.api_factories import GOOD_PASSWORD, client_for
from tests.factories import make_server
from tests.helpers import free_port

# Whether the schema and the validators agree does not depend on the database backend, and this is the
# slowest module of the suite: it runs on SQLite only.
pytestmark = pytest.mark.backend_independent

# Per operation and mode: 122 runs of 15 examples take about 40 s of CPU.
EXAMPLES = 15

# Refusals of schema-valid input that no OpenAPI schema can foresee, by their message: the state of other
# objects (a name already taken) and rules across fields (relaying only to a remote domain; a rule's value
# read by its kind). Every other 400 to a valid request is a disagreement between schema and validators.
STATE_AND_CROSS_FIELD_REFUSALS = [
    re.compile(pattern)
    for pattern in (
        r"already (has|a) ",  # a duplicate name: the state of the server or domain
        r"still (has|have|point)",  # a domain still in use
        r"cannot be changed after creation",  # home_dir: accepted only unchanged
        r"^The default domain must stay a local domain",  # the domain's role on its server
        r"^Only a remote domain can allow relaying",  # relay_allowed with type
        r"^Only an alias domain points at another domain",  # alias_of with type
        r"^An alias domain must (name|point at) ",  # alias_of with type, and the target's type
        r"^A domain cannot be an alias of itself",  # alias_of with the domain itself
        r"has no domain",  # alias_of naming a domain of another server
        r"is not a local domain",  # the referenced domain's type
        r"is not a valid (single address|address|network|address range|domain name)",  # a rule's value, by kind
        r"^The password must (be at least|contain) ",  # letter classes in any script: no ECMA pattern says it
        r"^Must be at least spam_[a-z]+_score ",  # the Filters tab's thresholds, in their order
        r"^Only a local domain has sender lists",  # sender lists with the domain's type
    )
]


def refused_only_for_state_or_cross_field_rules(response) -> bool:
    if response.status_code != 400:
        return False
    try:
        errors = json.loads(response.content)
    except ValueError:
        return False
    messages = [m for value in errors.values() for m in (value if isinstance(value, list) else [value])]
    return bool(messages) and all(
        isinstance(m, str) and any(p.search(m) for p in STATE_AND_CROSS_FIELD_REFUSALS) for m in messages
    )


def valid_data_is_accepted(ctx, response, case):
    """schemathesis' positive_data_acceptance, except for the refusals above."""
    if refused_only_for_state_or_cross_field_rules(response):
        return None
    return positive_data_acceptance(ctx, response, case)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
    negative_data_rejection,  # invalid by the schema: refused (4xx)
    valid_data_is_accepted,  # valid by the schema: accepted (or refused only for the state, as above)
]


@pytest.fixture
def in_process_requests():
    """Keep the test's database connection open across WSGI requests, as Django's test client does."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def seeded(people, in_process_requests):
    """An administrator's token and one object of every kind, by the path prefix that names it."""
    _, key = ApiToken.issue(people.alice)
    server = make_server(domain="seed.test")
    domain = server.default_domain
    services.add_domain(server, "alias.seed.test", type="alias", alias_of=domain)
    remote = services.add_domain(server, "partner.example", type="remote", relay_allowed=True)
    # /domains/{id}/dkim/ answers 200 for the default domain, 404 for the remote one (Ed25519: made in microseconds)
    services.generate_dkim_key(domain, algorithm="ed25519-sha256")
    ann = services.add_mailbox(domain, "ann", GOOD_PASSWORD)
    mailstore.deliver(ann.maildir, [b"Subject: seed\r\n\r\nhello\r\n"])
    group = services.add_group(domain, "info", [ann])
    logon_id = services.record_logon(ann.pk, "192.0.2.7")
    access_rule = services.add_access_rule(server, "network", "192.0.2.0/24")
    relay_rule = services.add_relay_rule(server, "address", "192.0.2.1")
    queued = engine.submit(server, "ann@seed.test", ["bob@remote.example"], b"Subject: seed\r\n\r\nhi\r\n")
    imap = services.create_imap_service(ip_address="127.0.0.1", port=free_port(), start=False)
    ids = {
        "nodes": [server.node_id],
        "servers": [server.pk],
        "domains": [domain.pk, remote.pk],
        "mailboxes": [ann.pk],
        "groups": [group.pk],
        "logons": [logon_id],
        "access-rules": [access_rule.pk],
        "relay-rules": [relay_rule.pk],
        "queue": [queued.pk],
        "services": [imap.pk],  # /api/v1/services/imap/{id}/
        "audit": list(AuditEntry.objects.values_list("pk", flat=True)[:3]),
    }
    return {"key": key, "ids": ids}


def load_operations() -> dict[str, object]:
    """The operations of the schema the app publishes (generating it needs no database)."""
    from mailconsole.wsgi import application

    schema = schemathesis.openapi.from_wsgi("/api/v1/schema/?format=json", application)
    # Every operation of our own schema parses: an Err (which has no .ok()) would fail here, as it should.
    operations = (result.ok() for result in schema.get_all_operations())  # type: ignore[union-attr]
    return {operation.label: operation for operation in operations}


OPERATIONS = load_operations()


def aim_at_seeded_objects(case, ids: dict[str, list[int]]) -> None:
    """Point every other generated `{id}` at an object that exists, so the handlers' real paths run."""
    raw = (case.path_parameters or {}).get("id")
    resource = case.operation.path.split("/")[3]
    if isinstance(raw, int) and raw % 2 == 0 and ids.get(resource):
        case.path_parameters["id"] = ids[resource][raw // 2 % len(ids[resource])]


# Body fields naming other objects, by the resource they name: a generated id rarely exists, and a reference
# to a missing object is a 400 no schema can foresee, so valid requests point them at seeded objects.
BODY_REFERENCES = {
    "server": "servers",
    "domain": "domains",
    "alias_of": "domains",
    "node": "nodes",
    "members": "mailboxes",
}
USER_REFERENCES = ("administrators", "operators")


def aim_body_at_seeded_objects(case, ids: dict[str, list[int]]) -> None:
    """In a valid request, make every object reference in the body name a seeded object or user."""
    if case.meta is None or not case.meta.generation.mode.is_positive or not isinstance(case.body, dict):
        return
    for field, resource in BODY_REFERENCES.items():
        value = case.body.get(field)
        if isinstance(value, int) and not isinstance(value, bool):
            case.body[field] = ids[resource][value % len(ids[resource])]
        elif isinstance(value, list):
            case.body[field] = [ids[resource][v % len(ids[resource])] for v in value if isinstance(v, int)]
    for field in USER_REFERENCES:
        if isinstance(case.body.get(field), list):
            case.body[field] = ["carol"] if case.body[field] else []  # a user who may hold a role


def keep_home_dirs_inside_the_test_directory(case) -> None:
    """Generated home directories are created on disk: keep them under the test's var dir."""
    if isinstance(case.body, dict) and isinstance(case.body.get("home_dir"), str):
        digest = hashlib.sha256(case.body["home_dir"].encode("utf-8", "surrogatepass")).hexdigest()[:12]
        case.body["home_dir"] = f"fuzz/{digest}"


def test_the_schema_publishes_every_resource():
    assert len(OPERATIONS) > 40


# schemathesis' own pytest loader does not run under this pytest, so each operation is one plain test
# driving Hypothesis with the operation's strategies: valid requests, then invalid ones.
def takes_input(operation) -> bool:
    """Whether the operation has a path, query or body input that a request could get wrong."""
    return any(len(list(part)) for part in (operation.path_parameters, operation.query, operation.body))


RUNS = [
    pytest.param(label, mode, id=f"{label}-{name}")
    for label in sorted(OPERATIONS)
    for mode, name in ((GenerationMode.POSITIVE, "valid"), (GenerationMode.NEGATIVE, "invalid"))
    if mode == GenerationMode.POSITIVE or takes_input(OPERATIONS[label])
]


@pytest.mark.parametrize(("label", "mode"), RUNS)
def test_api_never_fails_with_5xx_and_answers_as_documented(label, mode, seeded):
    operation = OPERATIONS[label]
    headers = {"Authorization": f"Token {seeded['key']}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
    )
    def run(case):
        aim_at_seeded_objects(case, seeded["ids"])
        aim_body_at_seeded_objects(case, seeded["ids"])
        keep_home_dirs_inside_the_test_directory(case)
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()


# The disagreements the run above found on the old code, each pinned by one fast request.
@pytest.fixture
def admin_api(people):
    return client_for(people.alice)


def request_schema(name: str) -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)["components"]["schemas"][name]


def test_the_schema_publishes_the_patterns_the_validators_check(admin_api):
    assert request_schema("DomainCreateRequest")["properties"]["name"]["pattern"] == patterns.DOMAIN_NAME
    assert request_schema("PasswordRequest")["properties"]["password"]["pattern"] == patterns.PASSWORD
    server = make_server()
    refused = admin_api.post("/api/v1/domains/", {"server": server.pk, "name": "web/mail.example"}, format="json")
    assert refused.status_code == 400 and "name" in refused.json()
    taken = admin_api.post("/api/v1/domains/", {"server": server.pk, "name": "Mail.Example."}, format="json")
    assert taken.status_code == 201 and taken.json()["name"] == "mail.example"


def test_a_password_the_schema_accepts_is_accepted_and_one_it_refuses_is_refused(admin_api):
    domain = make_server(domain="pw.example.test").default_domain
    mailbox = services.add_mailbox(domain, "pat", GOOD_PASSWORD)
    path = f"/api/v1/mailboxes/{mailbox.pk}/password/"
    assert admin_api.post(path, {"password": "no digits Here"}, format="json").status_code == 400
    assert admin_api.post(path, {"password": "Seven7up"}, format="json").status_code in (200, 204)


def test_a_reference_list_given_as_an_object_is_refused(admin_api):
    domain = make_server(domain="grp.example.test").default_domain
    group = services.add_group(domain, "team", [])
    response = admin_api.patch(f"/api/v1/groups/{group.pk}/", {"members": {}}, format="json")
    assert response.status_code == 400 and "members" in response.json()
    assert admin_api.put(f"/api/v1/groups/{group.pk}/", {}, format="json").status_code == 400


def test_service_bounds_are_in_the_schema(admin_api):
    settings_schema = request_schema("PatchedVirtualServerUpdateRequest")["properties"]
    assert settings_schema["max_message_size_kb"]["minimum"] == 1
    assert settings_schema["worker_processes"]["maximum"] >= 1
    server = make_server()
    response = admin_api.patch(f"/api/v1/servers/{server.pk}/", {"idle_timeout_s": 0}, format="json")
    assert response.status_code == 400 and "idle_timeout_s" in response.json()


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Typed", "default_domain": "typed.example.test", "home_dir": 0},
        {"name": "Typed", "default_domain": "typed.example.test", "port": "2525"},
        {"name": "Typed", "default_domain": "typed.example.test", "start": "yes"},
        {"name": 7, "default_domain": "typed.example.test"},
    ],
    ids=["number-for-text", "text-for-integer", "text-for-boolean", "number-for-name"],
)
def test_a_value_of_another_json_type_than_documented_is_refused(admin_api, body):
    response = admin_api.post("/api/v1/servers/", {**body, "start": body.get("start", False)}, format="json")
    assert response.status_code == 400
    assert set(response.json()) & {"home_dir", "port", "start", "name"}


def test_a_reference_given_as_text_is_refused(admin_api):
    server = make_server()
    response = admin_api.post("/api/v1/domains/", {"server": str(server.pk), "name": "t.example"}, format="json")
    assert response.status_code == 400 and "server" in response.json()


def test_every_operation_documents_gunicorns_414_and_every_write_its_409():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert "text/html" in operation["responses"]["414"]["content"], (method, path)
            if method in ("post", "put", "patch", "delete"):
                assert "409" in operation["responses"], (method, path)
