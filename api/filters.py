"""Query-string filters (`?server=3&type=local`) declared on the view, documented in the schema."""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.filters import BaseFilterBackend

# A string parameter may hold anything but NUL (PostgreSQL cannot compare against it): the schema says so too.
NO_NUL_PATTERN = "^[^\\u0000]*$"


def single_query_value(request, name: str) -> str | None:
    """The one value of query parameter `name`, or None; given twice, it is refused (the schema says one)."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise ValidationError({name: ["Give this parameter once."]})
    return values[0] if values else None


def query_flag(request, name: str) -> bool:
    """A yes/no query parameter: 1 or 0 as the schema documents it (`integer`, enum [0, 1]); absent is 0."""
    raw = single_query_value(request, name)
    if raw is None:
        return False
    if raw not in ("0", "1"):
        raise ValidationError({name: ["Use 1 or 0."]})
    return raw == "1"


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
            return {"type": "string", "pattern": NO_NUL_PATTERN}
        if isinstance(self.kind, list):
            return {"type": "string", "enum": self.kind}
        return {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}


class ParamFilter(BaseFilterBackend):
    """Applies the view's `filter_params = {"server": Param("server_id"), ...}`."""

    def filter_queryset(self, request, queryset, view):
        for name in ("ordering", "search"):  # the other backends' parameters are given once too
            single_query_value(request, name)
        for name, param in getattr(view, "filter_params", {}).items():
            raw = single_query_value(request, name)
            # An empty text filter means "no filter"; an empty id or choice is not one, and is refused.
            if raw is not None and (raw != "" or param.kind is not str):
                queryset = queryset.filter(**{param.lookup: param.parse(name, raw)})
        return queryset

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return [
            {"name": name, "required": False, "in": "query", "description": param.description, "schema": param.schema()}
            for name, param in getattr(view, "filter_params", {}).items()
        ]
