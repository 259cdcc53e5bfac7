"""The published OpenAPI schema and the interactive docs, served without Internet access."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient


@pytest.fixture
def anonymous(db):
    return APIClient()


def test_schema_is_openapi_3_and_lists_every_resource(anonymous):
    response = anonymous.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    paths = set(schema["paths"])
    for path in [
        "/api/v1/nodes/{id}/stop/",
        "/api/v1/servers/",
        "/api/v1/servers/{id}/pause/",
        "/api/v1/domains/{id}/set-default/",
        "/api/v1/mailboxes/{id}/password/",
        "/api/v1/groups/",
        "/api/v1/logons/",
        "/api/v1/audit/",
        "/api/v1/stats/",
        "/api/v1/access-rules/{id}/",
        "/api/v1/relay-rules/",
        "/api/v1/queue/{id}/freeze/",
        "/api/v1/servers/{id}/sessions/",
    ]:
        assert path in paths
    assert schema["components"]["securitySchemes"]["tokenAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": 'Token-based authentication with required prefix "Token"',
    }


def test_read_only_fields_are_not_in_request_bodies(anonymous):
    schema = anonymous.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    components = schema["components"]["schemas"]
    update = components["PatchedVirtualServerUpdateRequest"]["properties"]
    assert "state" not in update and "pid" not in update and "desired_state" not in update
    assert "home_dir" in components["VirtualServerCreateRequest"]["properties"]


def test_docs_page_loads_swagger_ui_from_this_server(anonymous):
    response = anonymous.get("/api/v1/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger-ui" in page
    assert "cdn" not in page.lower() and "https://" not in page


def test_every_operation_documents_its_error_answers(anonymous):
    schema = anonymous.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert {"401", "403"} <= set(operation["responses"]), (method, path)
            if "{id}" in path:
                assert "404" in operation["responses"], (method, path)
            if method == "delete":
                assert {"400", "409"} <= set(operation["responses"]), (method, path)


def test_every_setting_the_services_accept_can_be_set_on_create_and_update(anonymous):
    from servers.services.virtual_servers import EDITABLE_FIELDS

    schema = anonymous.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    components = schema["components"]["schemas"]
    for component in ("VirtualServerCreateRequest", "PatchedVirtualServerUpdateRequest"):
        assert set(EDITABLE_FIELDS) <= set(components[component]["properties"]), component
    assert set(EDITABLE_FIELDS) <= set(components["VirtualServer"]["properties"])
