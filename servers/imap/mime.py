"""A message's MIME structure over its raw bytes: what FETCH's sections, ENVELOPE and BODYSTRUCTURE show.

Python's `email` package parses each header (RFC 5322 and RFC 2045 rules, parameters, quoting),
but its object model forgets where a part's bytes were. IMAP sections are exact octets, so the
tree here keeps each part's header and body bytes and asks `email` only about headers.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass, field
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser

from servers.imap import responses

# Deeper nesting than this is treated as an opaque body (a crafted message cannot recurse without end).
MAX_DEPTH = 20
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_header_parser = BytesHeaderParser(policy=policy.compat32)


def crlf(raw: bytes) -> bytes:
    """Every line ending as CRLF: what RFC822.SIZE counts and what FETCH sends."""
    return _BARE_LF.sub(b"\r\n", raw) if b"\n" in raw.replace(b"\r\n", b"") else raw


def split_header(raw: bytes) -> tuple[bytes, bytes]:
    """(header including its blank line, body)."""
    if raw.startswith((b"\r\n", b"\n")):
        end = 2 if raw.startswith(b"\r\n") else 1
        return raw[:end], raw[end:]
    match = _BLANK_LINE.search(raw)
    if match is None:
        return raw, b""
    return raw[: match.end()], raw[match.end() :]


def header_fields(header: bytes) -> list[tuple[str, bytes]]:
    """The header's fields in order: (lower-case name, the field's raw lines with their line ends)."""
    fields: list[tuple[str, bytes]] = []
    for raw_line in header.splitlines(keepends=True):
        if raw_line in (b"\r\n", b"\n"):
            break
        if raw_line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + raw_line)
        else:
            name = raw_line.split(b":", 1)[0].strip().decode("ascii", "replace").lower()
            fields.append((name, raw_line))
    return fields


def _unfolded(raw: bytes) -> str:
    value = raw.split(b":", 1)[1] if b":" in raw else b""
    return re.sub(r"\r?\n(?=[ \t])", "", value.decode("utf-8", "replace")).strip()


def field_value(header: bytes, name: str) -> str | None:
    """The first `name` field's value, unfolded, as text (8-bit octets read as UTF-8)."""
    for field_name, raw in header_fields(header):
        if field_name == name:
            return _unfolded(raw)
    return None


def field_values(header: bytes, names: frozenset[str]) -> dict[str, str]:
    """The first value of each of `names` the header has (as `field_value`), in one pass over it."""
    found: dict[str, str] = {}
    for field_name, raw in header_fields(header):
        if field_name in names and field_name not in found:
            found[field_name] = _unfolded(raw)
    return found


@dataclass
class MimePart:
    header: bytes
    body: bytes
    headers: Message
    children: list[MimePart] = field(default_factory=list)
    embedded: MimePart | None = None  # the message inside a message/rfc822 part

    @property
    def content_type(self) -> str:
        return self.headers.get_content_type()


def parse(raw: bytes, depth: int = 0, default_type: str = "text/plain") -> MimePart:
    """The MIME tree of a message (bytes with CRLF line ends)."""
    header, body = split_header(raw)
    headers = _header_parser.parsebytes(header)
    if default_type != "text/plain" and "content-type" not in headers:
        headers.set_default_type(default_type)
    part = MimePart(header, body, headers)
    if depth >= MAX_DEPTH:
        return part
    if headers.get_content_maintype() == "multipart":
        boundary = headers.get_boundary()
        if boundary:
            child_type = "message/rfc822" if headers.get_content_subtype() == "digest" else "text/plain"
            part.children = [parse(chunk, depth + 1, child_type) for chunk in _split_multipart(body, boundary)]
        if not part.children:
            # A multipart with no boundary or no parts: its body as one plain text part, which every
            # client can show (a childless multipart has no BODYSTRUCTURE in the grammar).
            part.children = [MimePart(b"", body, _header_parser.parsebytes(b"\r\n"))]
    elif part.content_type == "message/rfc822":
        part.embedded = parse(body, depth + 1)
    return part


def _split_multipart(body: bytes, boundary: str) -> list[bytes]:
    # RFC 2046 5.1.1: the line end before a delimiter belongs to the delimiter.
    delimiter = re.compile(
        rb"(?:\A|\r\n)--" + re.escape(boundary.encode("utf-8", "replace")) + rb"(--)?[ \t]*(?:\r\n|\Z)"
    )
    chunks: list[bytes] = []
    start: int | None = None
    for match in delimiter.finditer(body):
        if start is not None:
            chunks.append(body[start : match.start()])
        if match.group(1):
            return chunks
        start = match.end()
    if start is not None:
        chunks.append(body[start:])
    return chunks


def locate(root: MimePart, numbers: list[int]) -> MimePart | None:
    """RFC 3501 6.4.5 part numbers: part 1 of a single-part message is its body; a message/rfc822
    part's subparts are those of the message inside it. None if there is no such part."""
    part = root
    is_message = True
    for number in numbers:
        if not is_message and part.embedded is not None:
            part, is_message = part.embedded, True
        if part.children:
            if not 1 <= number <= len(part.children):
                return None
            part, is_message = part.children[number - 1], False
        elif is_message and number == 1:
            is_message = False
        else:
            return None
    return part


def _line_count(body: bytes) -> int:
    return body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)


# One plain address, `Display Name <local@domain>` or `local@domain`, with nothing that needs the full
# RFC 5322 parser (quotes, comments, groups, several addresses, runs of spaces): most From and To
# fields. `email.utils.getaddresses` reads these the same way, ten times slower.
_WORD = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]+"
_ADDRESS_PART = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]+"
_PLAIN_ADDRESS = re.compile(
    rf"(?:(?P<name>{_WORD}(?: {_WORD})*) ?<(?P<local>{_ADDRESS_PART})@(?P<host>{_ADDRESS_PART})>"
    rf"|(?P<bare_local>{_ADDRESS_PART})@(?P<bare_host>{_ADDRESS_PART}))\Z"
)


def _address_pairs(value: str) -> list[tuple[str, str]]:
    match = _PLAIN_ADDRESS.match(value)
    if match is None:
        return email.utils.getaddresses([value])
    if match.group("bare_local") is not None:
        return [("", f"{match.group('bare_local')}@{match.group('bare_host')}")]
    return [(match.group("name") or "", f"{match.group('local')}@{match.group('host')}")]


def _addresses(value: str | None) -> str:
    if not value:
        return "NIL"
    rendered = []
    for display_name, address in _address_pairs(value):
        if not address:
            continue
        mailbox, at, host = address.rpartition("@") if "@" in address else (address, "", "")
        rendered.append(
            "("
            + " ".join(
                [
                    _nstring(display_name or None),
                    "NIL",
                    _nstring(mailbox),
                    _nstring(host) if at else "NIL",
                ]
            )
            + ")"
        )
    return "(" + "".join(rendered) + ")" if rendered else "NIL"


def _nstring(value: str | None) -> str:
    return responses.string(value).decode("utf-8")


_ENVELOPE_FIELDS = frozenset(
    {"date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc", "in-reply-to", "message-id"}
)


def envelope(header: bytes) -> str:
    """RFC 3501 7.4.2 ENVELOPE from a header section alone."""
    fields = field_values(header, _ENVELOPE_FIELDS)
    from_ = _addresses(fields.get("from"))
    sender = _addresses(fields.get("sender"))
    reply_to = _addresses(fields.get("reply-to"))
    items = [
        _nstring(fields.get("date")),
        _nstring(fields.get("subject")),
        from_,
        sender if sender != "NIL" else from_,
        reply_to if reply_to != "NIL" else from_,
        _addresses(fields.get("to")),
        _addresses(fields.get("cc")),
        _addresses(fields.get("bcc")),
        _nstring(fields.get("in-reply-to")),
        _nstring(fields.get("message-id")),
    ]
    return "(" + " ".join(items) + ")"


def _parameters(pairs: list[tuple[str, str]]) -> str:
    if not pairs:
        return "NIL"
    return "(" + " ".join(f"{_nstring(key.upper())} {_nstring(value)}" for key, value in pairs) + ")"


def _content_parameters(headers: Message) -> list[tuple[str, str]]:
    params = headers.get_params() or []
    pairs = [(str(key), email.utils.collapse_rfc2231_value(value)) for key, value in params[1:]]
    return pairs


def _disposition(headers: Message) -> str:
    value = headers.get("content-disposition")
    if value is None:
        return "NIL"
    kind = str(value).split(";", 1)[0].strip() or "attachment"
    params = headers.get_params(header="content-disposition") or []
    pairs = [(str(key), email.utils.collapse_rfc2231_value(val)) for key, val in params[1:]]
    return f"({_nstring(kind.upper())} {_parameters(pairs)})"


def body_structure(part: MimePart, *, extensible: bool) -> str:
    """RFC 3501 7.4.2 BODYSTRUCTURE (extensible) or BODY."""
    headers = part.headers
    if part.children:
        inner = "".join(body_structure(child, extensible=extensible) for child in part.children)
        text = f"({inner} {_nstring(headers.get_content_subtype().upper())}"
        if extensible:
            text += f" {_parameters(_content_parameters(headers))} {_disposition(headers)} NIL NIL"
        return text + ")"
    maintype, subtype = headers.get_content_maintype(), headers.get_content_subtype()
    params = _content_parameters(headers)
    if maintype == "text" and not any(key.lower() == "charset" for key, _ in params):
        params.insert(0, ("CHARSET", "US-ASCII"))
    fields = [
        _nstring(maintype.upper()),
        _nstring(subtype.upper()),
        _parameters(params),
        _nstring(field_value(part.header, "content-id")),
        _nstring(field_value(part.header, "content-description")),
        _nstring((field_value(part.header, "content-transfer-encoding") or "7BIT").upper()),
        str(len(part.body)),
    ]
    if part.embedded is not None:
        fields += [
            envelope(part.embedded.header),
            body_structure(part.embedded, extensible=extensible),
            str(_line_count(part.body)),
        ]
    elif maintype == "text":
        fields.append(str(_line_count(part.body)))
    if extensible:
        fields += ["NIL", _disposition(headers), "NIL", "NIL"]
    return "(" + " ".join(fields) + ")"
