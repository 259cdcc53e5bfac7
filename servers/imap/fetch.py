"""FETCH (RFC 3501 6.4.5, 7.4.2): which data items were asked for, and how each message answers them."""

from __future__ import annotations

import base64
import quopri
import re
from collections.abc import Callable
from dataclasses import dataclass

from servers.imap import mime, responses
from servers.imap.parser import Atom, CommandSyntaxError, Token, as_astring, tokens_of
from servers.imap.store_api import MessageRecord

_SIMPLE_ITEMS = frozenset(
    {
        "FLAGS",
        "UID",
        "INTERNALDATE",
        "RFC822.SIZE",
        "ENVELOPE",
        "BODYSTRUCTURE",
        "BODY",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.TEXT",
    }
)
_MACROS = {
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
}
_SECTION_ITEM = re.compile(
    r"(BODY(?:\.PEEK)?|BINARY(?:\.PEEK)?)\[([^\]]*)\](?:<([0-9]{1,10})\.([0-9]{1,10})>)?\Z", re.I
)
_SECTION = re.compile(
    r"((?:[1-9][0-9]{0,5})(?:\.[1-9][0-9]{0,5})*)?\.?(HEADER\.FIELDS\.NOT|HEADER\.FIELDS|HEADER|TEXT|MIME)?"
    r"(?: \((.*)\))?\Z",
    re.I,
)
# RFC 9051 6.4.5 (from RFC 3516): BINARY[part]<partial>, BINARY.PEEK[part]<partial>, BINARY.SIZE[part].
_BINARY_ITEM = re.compile(
    r"(BINARY\.PEEK|BINARY\.SIZE|BINARY)\[((?:[1-9][0-9]{0,5})(?:\.[1-9][0-9]{0,5})*)?\]"
    r"(?:<([0-9]{1,10})\.([0-9]{1,10})>)?\Z",
    re.I,
)
# Items that read the message's bytes (not just its record or its header).
_NEEDS_BODY = frozenset({"BODYSTRUCTURE", "BODY", "RFC822", "RFC822.TEXT"})


@dataclass(frozen=True)
class FetchItem:
    name: str  # FLAGS, UID, ..., or SECTION for BODY[...]
    peek: bool = True
    part: tuple[int, ...] = ()
    specifier: str = ""  # "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME
    fields: tuple[str, ...] = ()
    partial: tuple[int, int] | None = None
    label: str = ""  # how the response names it

    @property
    def sets_seen(self) -> bool:
        return (self.name in ("SECTION", "BINARY") and not self.peek) or self.name in ("RFC822", "RFC822.TEXT")

    @property
    def needs_header_only(self) -> bool:
        if self.name in ("ENVELOPE", "RFC822.HEADER"):
            return True
        return self.name == "SECTION" and not self.part and self.specifier.startswith("HEADER")

    @property
    def needs_message(self) -> bool:
        if self.name in ("BINARY", "BINARY.SIZE"):
            return True
        return self.name in _NEEDS_BODY or (self.name == "SECTION" and not self.needs_header_only)


def parse_fetch_items(token: Token, *, uid: bool) -> list[FetchItem]:
    """The data items of FETCH's second argument: a macro, one item or a parenthesised list."""
    if isinstance(token, Atom) and token.upper() in _MACROS:
        names: list[Token] = [Atom(name) for name in _MACROS[token.upper()]]
    elif isinstance(token, list):
        names = token
        if not names:
            raise CommandSyntaxError("Empty FETCH item list")
    else:
        names = [token]
    items = [_parse_item(name) for name in names]
    if uid and not any(item.name == "UID" for item in items):
        items.insert(0, FetchItem("UID"))  # RFC 3501 6.4.8: UID FETCH always answers with UIDs
    return items


def _parse_item(token: Token) -> FetchItem:
    if not isinstance(token, Atom):
        raise CommandSyntaxError("Invalid FETCH item")
    upper = token.upper()
    if upper in _SIMPLE_ITEMS:
        return FetchItem(upper)
    binary = _BINARY_ITEM.match(token)
    if binary is not None:
        return _parse_binary(binary)
    match = _SECTION_ITEM.match(token)
    if match is None or match.group(1).upper().startswith("BINARY"):
        raise CommandSyntaxError(f"Unknown FETCH item {upper[:40]}")
    section = _SECTION.match(match.group(2))
    if section is None:
        raise CommandSyntaxError("Invalid section")
    numbers, specifier, field_list = section.group(1), (section.group(2) or "").upper(), section.group(3)
    if numbers and specifier and not match.group(2)[len(numbers) :].startswith("."):
        raise CommandSyntaxError("Invalid section")
    if (field_list is not None) != specifier.startswith("HEADER.FIELDS"):
        raise CommandSyntaxError("Invalid section")
    if specifier == "MIME" and not numbers:
        raise CommandSyntaxError("MIME needs a part number")
    fields: tuple[str, ...] = ()
    if field_list is not None:
        try:
            tokens = tokens_of(field_list.encode("ascii"))
        except CommandSyntaxError:
            raise CommandSyntaxError("Invalid header list") from None
        fields = tuple(as_astring(name).lower() for name in tokens)
        if not fields:
            raise CommandSyntaxError("Empty header list")
    partial = None
    # The response names the section as asked, keywords in upper case and header names as sent.
    label_section = match.group(2).upper()
    if field_list is not None:
        label_section = label_section[: label_section.index(" (")] + f" ({field_list})"
    label = f"BODY[{label_section}]"
    if match.group(3) is not None:
        partial = (int(match.group(3)), int(match.group(4)))
        label += f"<{partial[0]}>"
    return FetchItem(
        "SECTION",
        peek=match.group(1).upper() == "BODY.PEEK",
        part=tuple(int(n) for n in numbers.split(".")) if numbers else (),
        specifier=specifier,
        fields=fields,
        partial=partial,
        label=label,
    )


def _parse_binary(match: re.Match[str]) -> FetchItem:
    kind = match.group(1).upper()
    numbers = match.group(2) or ""
    partial = None
    label = f"BINARY[{numbers}]"
    if match.group(3) is not None:
        if kind == "BINARY.SIZE":
            raise CommandSyntaxError("BINARY.SIZE takes no partial")
        partial = (int(match.group(3)), int(match.group(4)))
        label += f"<{partial[0]}>"
    return FetchItem(
        "BINARY.SIZE" if kind == "BINARY.SIZE" else "BINARY",
        peek=kind != "BINARY",
        part=tuple(int(n) for n in numbers.split(".")) if numbers else (),
        partial=partial,
        label=f"BINARY.SIZE[{numbers}]" if kind == "BINARY.SIZE" else label,
    )


class UnknownTransferEncodingError(Exception):
    """BINARY of a part whose Content-Transfer-Encoding we cannot undo: NO [UNKNOWN-CTE]."""


def binary_bytes(part_numbers: tuple[int, ...], message: bytes, root: mime.MimePart) -> bytes:
    """The decoded content of a part (RFC 9051 6.4.5 BINARY); the whole message for BINARY[]."""
    if not part_numbers:
        return message
    part = mime.locate(root, list(part_numbers))
    if part is None:
        return b""
    encoding = (mime.field_value(part.header, "content-transfer-encoding") or "7bit").lower()
    if part.children or part.embedded is not None or encoding in ("7bit", "8bit", "binary"):
        return part.body
    if encoding == "base64":
        return base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", part.body) + b"===", validate=False)
    if encoding == "quoted-printable":
        return quopri.decodestring(part.body)
    raise UnknownTransferEncodingError(encoding)


def _select_fields(header: bytes, names: tuple[str, ...], *, keep: bool) -> bytes:
    chosen = [raw for name, raw in mime.header_fields(header) if (name in names) == keep]
    return b"".join(chosen) + b"\r\n"


def section_bytes(item: FetchItem, message: bytes | None, header: bytes, root: mime.MimePart | None) -> bytes:
    """The octets of BODY[section] (before any partial); b"" for a part that does not exist."""
    if item.needs_header_only:
        target_header = header
        if item.specifier == "HEADER":
            return header
        return _select_fields(target_header, item.fields, keep=item.specifier == "HEADER.FIELDS")
    assert message is not None and root is not None
    if not item.part:
        return message if not item.specifier else root.body  # "" or TEXT
    part = mime.locate(root, list(item.part))
    if part is None:
        return b""
    if item.specifier == "":
        return part.body
    if item.specifier == "MIME":
        return part.header
    inner = part.embedded
    if inner is None:
        return b""
    if item.specifier == "TEXT":
        return inner.body
    if item.specifier == "HEADER":
        return inner.header
    return _select_fields(inner.header, item.fields, keep=item.specifier == "HEADER.FIELDS")


def _partial(data: bytes, partial: tuple[int, int] | None) -> bytes:
    if partial is None:
        return data
    start, count = partial
    return data[start : start + count]


def render(
    items: list[FetchItem],
    record: MessageRecord,
    load_message: Callable[[], bytes],
    load_header: Callable[[], bytes],
) -> bytes:
    """The parenthesised FETCH data of one message (load_* raise KeyError if it vanished)."""
    message: bytes | None = None
    header: bytes | None = None
    root: mime.MimePart | None = None  # parsed once per message, whatever number of items need it
    if any(item.needs_message for item in items):
        message = load_message()
        header = mime.split_header(message)[0]
        root = mime.parse(message)
    elif any(item.needs_header_only for item in items):
        header = mime.crlf(load_header())
    parts: list[bytes] = []
    for item in items:
        name = item.name
        if name == "FLAGS":
            value = responses.parenthesised(sorted(record.flags)).encode("ascii")
        elif name == "UID":
            value = str(record.uid).encode("ascii")
        elif name == "INTERNALDATE":
            value = responses.date_time(record.internal_date).encode("ascii")
        elif name == "RFC822.SIZE":
            value = str(record.size_octets).encode("ascii")
        elif name == "ENVELOPE":
            assert header is not None
            value = mime.envelope(header).encode("utf-8")
        elif name in ("BODYSTRUCTURE", "BODY"):
            assert message is not None
            assert root is not None
            value = mime.body_structure(root, extensible=name == "BODYSTRUCTURE").encode("utf-8")
        elif name == "RFC822":
            assert message is not None
            value = responses.string(message)
        elif name == "RFC822.HEADER":
            assert header is not None
            value = responses.string(header)
        elif name == "RFC822.TEXT":
            assert message is not None
            value = responses.string(mime.split_header(message)[1])
        elif name == "BINARY.SIZE":
            assert message is not None
            assert root is not None
            value = str(len(binary_bytes(item.part, message, root))).encode("ascii")
            parts.append(item.label.encode("ascii") + b" " + value)
            continue
        elif name == "BINARY":
            assert message is not None
            assert root is not None
            data = _partial(binary_bytes(item.part, message, root), item.partial)
            parts.append(item.label.encode("ascii") + b" ~{%d}\r\n" % len(data) + data)  # literal8
            continue
        else:
            assert header is not None
            data = _partial(section_bytes(item, message, header, root), item.partial)
            parts.append(item.label.encode("utf-8") + b" " + b"{%d}\r\n" % len(data) + data)
            continue
        parts.append(name.encode("ascii") + b" " + value)
    return b"(" + b" ".join(parts) + b")"
