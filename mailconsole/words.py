"""Words people type for yes and no: one reading for settings, the services and the CLI."""

from __future__ import annotations

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def parse_bool(raw: object) -> bool | None:
    """True or False for a bool or a word above (any case); None when it is neither, for the caller to refuse."""
    if isinstance(raw, bool):
        return raw
    word = str(raw).lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None
