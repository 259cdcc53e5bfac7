"""FETCH (RFC 3501 6.4.5, 7.4.2): which data items were asked for, and how each message answers them."""

from __future__ import annotations

import base64
import operator
import quopri
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from servers.imap import mime, responses
from servers.imap.fetch_cache import FetchCache
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


@dataclass(frozen=True)
class Derived:
    """Where a folder keeps what FETCH renders from its messages' bytes (see `fetch_cache`)."""

    envelopes: FetchCache
    structures: FetchCache  # BODYSTRUCTURE; BODY is derived again each time (rarely asked for)


class _Loaded:
    """A message's bytes, header and MIME tree, each read or parsed at most once, when first needed."""

    def __init__(self, load_message: Callable[[], bytes], load_header: Callable[[], bytes]) -> None:
        self._load_message = load_message
        self._load_header = load_header
        self._message: bytes | None = None
        self._header: bytes | None = None
        self._root: mime.MimePart | None = None

    def message(self) -> bytes:
        if self._message is None:
            self._message = self._load_message()
            self._header = mime.split_header(self._message)[0]
        return self._message

    def header(self) -> bytes:
        if self._header is None:
            self._header = mime.crlf(self._load_header())
        return self._header

    def root(self) -> mime.MimePart:
        if self._root is None:
            self._root = mime.parse(self.message())
        return self._root


def _remembered(cache: FetchCache | None, uid: int, compute: Callable[[], bytes]) -> bytes:
    if cache is None:
        return compute()
    value = cache.get(uid)
    if value is None:
        value = compute()
        cache.put(uid, value)
    return value


def render(
    items: list[FetchItem],
    record: MessageRecord,
    load_message: Callable[[], bytes],
    load_header: Callable[[], bytes],
    derived: Derived | None = None,
) -> bytes:
    """The parenthesised FETCH data of one message (load_* raise KeyError if it vanished)."""
    loaded = _Loaded(load_message, load_header)
    if any(item.needs_message and item.name != "BODYSTRUCTURE" for item in items):
        loaded.message()  # one read serves the header too
    uid = record.uid
    parts: list[bytes] = []
    for item in items:
        name = item.name
        if name == "FLAGS":
            value = flags_bytes(record.flags)
        elif name == "UID":
            value = str(uid).encode("ascii")
        elif name == "INTERNALDATE":
            value = responses.date_time(record.internal_date).encode("ascii")
        elif name == "RFC822.SIZE":
            value = str(record.size_octets).encode("ascii")
        elif name == "ENVELOPE":
            value = _remembered(
                derived.envelopes if derived else None, uid, lambda: mime.envelope(loaded.header()).encode("utf-8")
            )
        elif name == "BODYSTRUCTURE":
            value = _remembered(
                derived.structures if derived else None,
                uid,
                lambda: mime.body_structure(loaded.root(), extensible=True).encode("utf-8"),
            )
        elif name == "BODY":
            value = mime.body_structure(loaded.root(), extensible=False).encode("utf-8")
        elif name == "RFC822":
            value = responses.string(loaded.message())
        elif name == "RFC822.HEADER":
            value = responses.string(loaded.header())
        elif name == "RFC822.TEXT":
            value = responses.string(mime.split_header(loaded.message())[1])
        elif name == "BINARY.SIZE":
            value = str(len(binary_bytes(item.part, loaded.message(), loaded.root()))).encode("ascii")
            parts.append(item.label.encode("ascii") + b" " + value)
            continue
        elif name == "BINARY":
            data = _partial(binary_bytes(item.part, loaded.message(), loaded.root()), item.partial)
            parts.append(item.label.encode("ascii") + b" ~{%d}\r\n" % len(data) + data)  # literal8
            continue
        else:
            if item.needs_header_only:
                data = section_bytes(item, None, loaded.header(), None)
            elif not item.part and item.specifier in ("", "TEXT"):
                # BODY[] and BODY[TEXT], what clients download most: no MIME tree needed.
                whole = loaded.message()
                data = whole if not item.specifier else mime.split_header(whole)[1]
            else:
                data = section_bytes(item, loaded.message(), loaded.header(), loaded.root())
            data = _partial(data, item.partial)
            parts.append(item.label.encode("utf-8") + b" " + b"{%d}\r\n" % len(data) + data)
            continue
        parts.append(name.encode("ascii") + b" " + value)
    return b"(" + b" ".join(parts) + b")"


_flags_bytes: dict[frozenset[str], bytes] = {}


def flags_bytes(flags: frozenset[str]) -> bytes:
    """A flag list as FETCH sends it; the few sets a folder uses are rendered once per process."""
    value = _flags_bytes.get(flags)
    if value is None:
        value = responses.parenthesised(sorted(flags)).encode("ascii")
        if len(_flags_bytes) < 4096:  # keywords make many sets possible, a process keeps a few
            _flags_bytes[flags] = value
    return value


# The items a client syncing a folder asks for (Thunderbird, Apple Mail, mbsync, the benchmark): all
# from the message's record, and the ENVELOPE from the folder's cache.
_FAST_ITEMS = frozenset({"UID", "FLAGS", "RFC822.SIZE", "INTERNALDATE", "ENVELOPE"})


def is_fast(items: list[FetchItem]) -> bool:
    """Whether `render_many` can answer these items (no item that reads a message's body)."""
    return all(item.name in _FAST_ITEMS for item in items)


# Each item's value in `render_many`'s template, and where it is in the values made for every message:
# (number, uid, flags, size, date, envelope). Positional formatting is twice as fast as by name.
_FAST_FORMATS = {
    "UID": (b"UID %d", 1),
    "FLAGS": (b"FLAGS %s", 2),
    "RFC822.SIZE": (b"RFC822.SIZE %d", 3),
    "INTERNALDATE": (b"INTERNALDATE %s", 4),
    "ENVELOPE": (b"ENVELOPE %s", 5),
}


def render_many(
    items: list[FetchItem],
    targets: Iterable[tuple[int, MessageRecord]],
    envelope_of: Callable[[MessageRecord], bytes],
) -> bytes:
    """The whole FETCH response of items that `is_fast`: one formatting per message, one join.

    A message whose ENVELOPE cannot be had (it vanished meanwhile: KeyError) is left out, as
    `render` callers do (RFC 9051 7.5.1 allows it).
    """
    names = [item.name for item in items]
    template = b"* %d FETCH (" + b" ".join(_FAST_FORMATS[name][0] for name in names) + b")\r\n"
    pick = operator.itemgetter(0, *(_FAST_FORMATS[name][1] for name in names))
    want_envelope, want_date = "ENVELOPE" in names, "INTERNALDATE" in names
    known_flags = _flags_bytes
    lines: list[bytes] = []
    append = lines.append
    envelope = date = b""
    for number, record in targets:
        flags = known_flags.get(record.flags) or flags_bytes(record.flags)
        if want_envelope:
            try:
                envelope = envelope_of(record)
            except KeyError:
                continue
        if want_date:
            date = responses.date_time(record.internal_date).encode("ascii")
        append(template % pick((number, record.uid, flags, record.size_octets, date, envelope)))
    return b"".join(lines)
