"""How drf-spectacular describes what is ours: the token scheme."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object

from api.filters import NO_NUL_PATTERN


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.ApiTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Token")


ERROR_COMPONENTS = {
    "ErrorDetail": {
        "type": "object",
        "properties": {"detail": {"type": "string"}},
        "required": ["detail"],
        "description": "Why the request was refused.",
    },
    "FieldErrors": {
        "type": "object",
        "additionalProperties": {
            "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
        },
        "description": 'Messages by input field, e.g. {"port": ["The TCP port must be between 1 and 65535."]}; '
        "`non_field_errors` or `detail` when no single field is at fault.",
    },
}


URI_TOO_LONG = {
    "description": "The request line (method, path and query) is longer than the web server accepts "
    "(gunicorn's limit: 4094 bytes); it answers with its own HTML page.",
    "content": {"text/html": {"schema": {"type": "string"}}},
}


def _error(description: str, component: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{component}"}}},
    }


def document_errors(result: dict, generator, request, public) -> dict:
    """Add the error answers every operation can give, so clients (and schemathesis) know their shape."""
    result.setdefault("components", {}).setdefault("schemas", {}).update(ERROR_COMPONENTS)
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            # Every published operation needs a signed-in user (the schema and docs are not in the schema).
            responses.setdefault("401", _error("Not signed in, or the token is invalid or expired.", "ErrorDetail"))
            responses.setdefault(
                "403", _error("The role does not allow this, or the CSRF token is missing.", "ErrorDetail")
            )
            if "{" in path:
                responses.setdefault("404", _error("No such object within what the user may see.", "ErrorDetail"))
            if "requestBody" in operation or operation.get("parameters") or method in ("post", "delete"):
                responses.setdefault("400", _error("Invalid input, or a change the domain refuses.", "FieldErrors"))
            if method == "get" and any(p.get("name") == "page" for p in operation.get("parameters", [])):
                responses.setdefault("404", _error("No such page.", "ErrorDetail"))
            if "requestBody" in operation:
                responses.setdefault("415", _error("The body is not JSON.", "ErrorDetail"))
            if method == "delete":
                responses.setdefault(
                    "409",
                    _error(
                        "Other objects still depend on this one, or its state "
                        "forbids the change (e.g. the default domain).",
                        "FieldErrors",
                    ),
                )
            elif method in ("post", "put", "patch"):
                responses.setdefault(
                    "409",
                    _error(
                        "The object's current state refuses this change, or another "
                        "change won a race; no input field is at fault.",
                        "FieldErrors",
                    ),
                )
            responses.setdefault("405", _error("The method is not allowed here.", "ErrorDetail"))
            # The web server (gunicorn) refuses a request line over 4094 bytes before the app sees it.
            responses.setdefault("414", URI_TOO_LONG)
            responses.setdefault("406", _error("No acceptable representation (the API speaks JSON).", "ErrorDetail"))
    return result


def forbid_nul_in_request_text(result: dict, generator, request, public) -> dict:
    """Say what every text field of a request refuses: NUL (DRF's CharField does, PostgreSQL cannot store it)."""

    def visit(schema: dict) -> None:
        if schema.get("type") == "string" and not {"pattern", "enum", "format"} & schema.keys():
            schema["pattern"] = NO_NUL_PATTERN
        for child in (schema.get("properties") or {}).values():
            visit(child)
        if isinstance(schema.get("items"), dict):
            visit(schema["items"])

    for name, schema in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request"):
            visit(schema)
    return result
