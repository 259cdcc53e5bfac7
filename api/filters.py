"""Query-string filters (`?server=3&type=local`) declared on the view, documented in the schema."""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.filters import BaseFilterBackend

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


def query_flag(request, name: str) -> bool:
    raw = request.query_params.get(name, "").lower()
    if raw in TRUE_WORDS:
        return True
    if raw in FALSE_WORDS:
        return False
    raise ValidationError({name: ["Use 1 or 0."]})


class Param:
    """One filter: the query parameter, the lookup it drives, and its type (int, or a list of choices)."""

    def __init__(self, lookup: str, *, kind: type | list[str] = int, description: str = "") -> None:
        self.lookup = lookup
        self.kind = kind
        self.description = description

    def parse(self, name: str, raw: str):
        if self.kind is str:
            if "\x00" in raw:  # PostgreSQL cannot compare against a NUL character
                raise ValidationError({name: ["Null characters are not allowed."]})
            return raw
        if isinstance(self.kind, list):
            if raw not in self.kind:
                raise ValidationError({name: [f"Choose one of: {', '.join(self.kind)}."]})
            return raw
        try:
            value = int(raw)
        except ValueError:
            raise ValidationError({name: ["Enter a whole number."]}) from None
        if not 1 <= value <= 2**63 - 1:
            raise ValidationError({name: ["Enter an id."]})
        return value

    def schema(self) -> dict:
        if self.kind is str:
            return {"type": "string"}
        if isinstance(self.kind, list):
            return {"type": "string", "enum": self.kind}
        return {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}


class ParamFilter(BaseFilterBackend):
    """Applies the view's `filter_params = {"server": Param("server_id"), ...}`."""

    def filter_queryset(self, request, queryset, view):
        for name, param in getattr(view, "filter_params", {}).items():
            raw = request.query_params.get(name)
            if raw is not None and raw != "":
                queryset = queryset.filter(**{param.lookup: param.parse(name, raw)})
        return queryset

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return [
            {"name": name, "required": False, "in": "query", "description": param.description,
             "schema": param.schema()}
            for name, param in getattr(view, "filter_params", {}).items()
        ]
