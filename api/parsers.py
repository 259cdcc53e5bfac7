"""The API's JSON parser: a body nested too deeply is a 400, never a RecursionError (an HTML 500)."""

from __future__ import annotations

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# No request body of this API nests beyond a few levels; deeper input is refused before any view sees it.
MAX_JSON_DEPTH = 32
TOO_DEEP = f"JSON parse error - the body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep."


def json_depth(value: object) -> int:
    """How deeply arrays and objects nest in `value` (0 for a scalar), counted without recursion."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:  # no need to walk further: it is refused anyway
            break
        pending.extend((child, depth + 1) for child in children)
    return deepest


class BoundedJSONParser(JSONParser):
    """DRF's JSONParser, refusing with a 400 what nests too deeply for the decoder or the serializers."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(TOO_DEEP) from None
        if json_depth(data) > MAX_JSON_DEPTH:
            raise ParseError(TOO_DEEP)
        return data
