"""Modified UTF-7 (RFC 3501 5.1.3): how IMAP4rev1 folder names carry non-ASCII characters.

Names stay in this form on the wire and in the store; the codec is for showing them to people and
for refusing malformed ones (which two clients could otherwise spell two ways).
"""

from __future__ import annotations

import base64
import binascii
import re

# Printable US-ASCII except "&" stands for itself; "&-" is "&"; "&...-" is modified base64 of UTF-16BE.
_SHIFTED = re.compile(r"&([A-Za-z0-9+,]*)-")
# "&AOQ-&AOQ-" must be written "&AOQA5A-" ("&-&AOQ-", an "&" and then a run, is fine).
_ENDS_WITH_SHIFTED_RUN = re.compile(r"&[A-Za-z0-9+,]+-\Z")


class MUtf7Error(ValueError):
    """The name is not valid modified UTF-7."""


def _is_direct(char: str) -> bool:
    return 0x20 <= ord(char) <= 0x7E


def encode(name: str) -> str:
    """Return `name` in modified UTF-7."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            utf16 = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(utf16).decode("ascii").rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if _is_direct(char):
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def decode(name: str) -> str:
    """Return the Unicode name; raise MUtf7Error if `name` is not canonical modified UTF-7."""
    out: list[str] = []
    position = 0
    while position < len(name):
        char = name[position]
        if not _is_direct(char):
            raise MUtf7Error("characters outside printable US-ASCII must be encoded")
        if char != "&":
            out.append(char)
            position += 1
            continue
        match = _SHIFTED.match(name, position)
        if match is None:
            raise MUtf7Error("unterminated or malformed &-sequence")
        encoded = match.group(1)
        position = match.end()
        if not encoded:
            out.append("&")
            continue
        try:
            utf16 = base64.b64decode(encoded.replace(",", "/") + "=" * (-len(encoded) % 4), validate=True)
            text = utf16.decode("utf-16-be")
        except (binascii.Error, UnicodeDecodeError):
            raise MUtf7Error("malformed modified base64") from None
        # Canonical form only: no encoded printable ASCII, and not two shifted runs back to back.
        if any(_is_direct(c) for c in text) or encode(text) != match.group(0):
            raise MUtf7Error("not the canonical encoding")
        if _ENDS_WITH_SHIFTED_RUN.search(name, 0, match.start()):
            raise MUtf7Error("two encoded runs back to back")
        out.append(text)
    return "".join(out)


def is_valid(name: str) -> bool:
    """Whether `name` is canonical modified UTF-7."""
    try:
        decode(name)
    except MUtf7Error:
        return False
    return True
