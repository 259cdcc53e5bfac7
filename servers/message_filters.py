"""A message's attachments found, judged and removed, and its spam headers written: pure, no I/O.

The Filters tab's decisions on content (`servers.smtp_policy.attachment_verdict`, `spam_verdict`)
read what this module finds; the SMTP adapter runs it in a thread (parsing is CPU work).

The MIME tree is walked on the raw bytes, so that each leaf part is known by where it lies in the
message: a part removed by strip-and-notify is replaced in place and every other byte of the
message stays as it came. Each part's header fields are read with the `email` package
(policy=default), which decodes RFC 2231 parameters (`filename*=utf-8''...`) and encoded words
(`=?utf-8?b?...?=`) in file names; multipart bodies are split at their boundary lines (RFC 2046
5.1.1: the line break before a boundary belongs to the boundary), message/rfc822 parts are walked
into.
"""

from __future__ import annotations

import binascii
import quopri
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email import policy as email_policy
from email.header import Header
from email.parser import BytesHeaderParser
from typing import Any

# Executables and scripts that run when opened on Windows (and Java archives anywhere): the
# default list of the Filters tab's forbidden extensions.
DEFAULT_FORBIDDEN_EXTENSIONS = "\n".join(
    [
        "ade", "adp", "app", "bas", "bat", "chm", "cmd", "com", "cpl", "exe", "hta", "inf", "ins", "isp",
        "jar", "js", "jse", "lnk", "msc", "msi", "msp", "mst", "pif", "ps1", "reg", "scr", "sct", "shb",
        "shs", "vb", "vbe", "vbs", "wsc", "wsf", "wsh",
    ]
)  # fmt: skip
DEFAULT_FORBIDDEN_MIME_TYPES = "\n".join(
    [
        "application/x-msdownload",
        "application/x-msdos-program",
        "application/x-dosexec",
        "application/x-ms-shortcut",
        "application/hta",
        "application/x-ms-installer",
    ]
)
# How deep nested multiparts and attached messages are walked (deeper, an entity is one leaf), and
# how many leaves at most: a message with more is refused by an attachment filter (`walk_message`).
MAX_DEPTH = 20
MAX_PARTS = 1000

_HEADER_PARSER = BytesHeaderParser(policy=email_policy.default)
_HEADERS_END = re.compile(rb"\r?\n\r?\n")
# Characters that change how a name is shown, not what it is (bidi overrides, zero-width marks).
_INVISIBLE = dict.fromkeys(
    map(ord, "\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"), None
)


@dataclass(frozen=True)
class MimePart:
    """One leaf of a message's MIME tree and where it lies in the raw message: [start, end)."""

    start: int
    body_start: int
    end: int
    content_type: str
    filename: str  # decoded, as the sender wrote it ("" if none)
    size: int  # octets of its decoded body
    is_attachment: bool


@dataclass(frozen=True)
class AttachmentRules:
    """The Filters tab's attachment rules, as the worker's snapshot holds them."""

    extensions: frozenset[str] = frozenset()
    mime_types: frozenset[str] = frozenset()
    max_size_bytes: int | None = None

    @classmethod
    def from_settings(cls, extensions: str, mime_types: str, max_size_kb: int | None) -> AttachmentRules:
        return cls(
            frozenset(word.lstrip(".").lower() for word in split_words(extensions)),
            frozenset(word.lower() for word in split_words(mime_types)),
            None if max_size_kb is None else max_size_kb * 1024,
        )


@dataclass(frozen=True)
class Finding:
    """A part the rules forbid, and why (fit for a reply and for the notice left in its place)."""

    part: MimePart
    reason: str

    @property
    def name(self) -> str:
        return self.part.filename or f"(unnamed {self.part.content_type} part)"


def split_words(text: str) -> list[str]:
    """The entries of a list setting: one a line, or separated by commas or spaces."""
    return [word for word in re.split(r"[\s,]+", text or "") if word]


# -- the MIME tree -------------------------------------------------------------------------------


def mime_parts(raw: bytes) -> list[MimePart]:
    """Every leaf part of the message, in order (the first MAX_PARTS of them)."""
    return walk_message(raw)[0]


def walk_message(raw: bytes) -> tuple[list[MimePart], bool]:
    """The message's leaf parts, and whether that is all of them (not more than MAX_PARTS).

    Reading a part's header fields with policy=default costs about half a millisecond: a message
    of many tiny parts must not hold a thread for minutes, so the walk stops after MAX_PARTS.
    """
    parts: list[MimePart] = []
    complete = _walk(raw, 0, len(raw), 0, "text/plain", parts)
    return parts, complete


def _body_start(raw: bytes, start: int, end: int) -> int:
    """Where the entity's body begins: after the empty line that ends its header fields."""
    if raw.startswith(b"\r\n", start):
        return start + 2
    if raw.startswith(b"\n", start):
        return start + 1
    match = _HEADERS_END.search(raw, start, end)
    return end if match is None else match.end()


def _walk(raw: bytes, start: int, end: int, depth: int, default_type: str, parts: list[MimePart]) -> bool:
    """Add the leaves of the entity at [start, end) to `parts`; False once MAX_PARTS is passed."""
    if len(parts) >= MAX_PARTS:
        return False
    body_start = _body_start(raw, start, end)
    headers = _HEADER_PARSER.parsebytes(raw[start:body_start])
    # Each field is parsed when read: read each once (RFC 2045 5.2: a missing or broken type is text/plain).
    type_field: Any = headers["Content-Type"]  # a ContentTypeHeader (policy=default)
    content_type = default_type if type_field is None else str(type_field.content_type).lower()
    if content_type.count("/") != 1:
        content_type = "text/plain"
    type_params = dict(type_field.params) if type_field is not None else {}
    encoding_field = headers["Content-Transfer-Encoding"]
    encoding = "" if encoding_field is None else str(encoding_field).strip().lower()
    if depth < MAX_DEPTH:
        boundary = type_params.get("boundary") if content_type.startswith("multipart/") else None
        if boundary:
            children = _multipart_children(raw, body_start, end, str(boundary))
            if children:
                # RFC 2046 5.1.5: in a digest, a part without a type is a message.
                child_default = "message/rfc822" if content_type == "multipart/digest" else "text/plain"
                return all(
                    _walk(raw, child_start, child_end, depth + 1, child_default, parts)
                    for child_start, child_end in children
                )
        if content_type == "message/rfc822" and encoding not in ("base64", "quoted-printable"):
            return _walk(raw, body_start, end, depth + 1, "text/plain", parts)
    disposition_field: Any = headers["Content-Disposition"]
    disposition = "" if disposition_field is None else str(disposition_field.content_disposition or "").lower()
    filename = (dict(disposition_field.params) if disposition_field is not None else {}).get("filename")
    if not filename:
        filename = type_params.get("name") or ""
    parts.append(
        MimePart(
            start=start,
            body_start=body_start,
            end=end,
            content_type=content_type,
            filename=str(filename),
            size=_decoded_size(raw[body_start:end], encoding),
            is_attachment=disposition == "attachment" or bool(filename),
        )
    )
    return True


def _decoded_size(body: bytes, encoding: str) -> int:
    """The octets a body decodes to; a broken base64 body is judged by what it would hold."""
    if encoding == "base64":
        try:
            return len(binascii.a2b_base64(body))  # skips line breaks and other non-alphabet bytes
        except binascii.Error:
            return len(body) * 3 // 4
    if encoding == "quoted-printable":
        return len(binascii.a2b_qp(body))
    return len(body)


def _multipart_children(raw: bytes, body_start: int, end: int, boundary: str) -> list[tuple[int, int]]:
    """The [start, end) of each body part of a multipart body (its preamble and epilogue left out)."""
    delimiter = re.compile(
        rb"^--" + re.escape(boundary.encode("utf-8", "surrogateescape")) + rb"(--)?[ \t]*\r?$", re.MULTILINE
    )
    children: list[tuple[int, int]] = []
    part_start: int | None = None
    for match in delimiter.finditer(raw, body_start, end):
        if part_start is not None:
            # RFC 2046 5.1.1: the line break before the boundary line is part of the boundary.
            part_end = match.start()
            if raw[part_end - 2 : part_end] == b"\r\n":
                part_end -= 2
            elif raw[part_end - 1 : part_end] == b"\n":
                part_end -= 1
            children.append((part_start, max(part_start, part_end)))
        if match.group(1):  # the close delimiter
            return children
        newline = raw.find(b"\n", match.end(), end)
        part_start = end if newline < 0 else newline + 1
    if part_start is not None and part_start < end:
        children.append((part_start, end))  # no close delimiter: the last part runs to the end
    return children


# -- judging attachments -------------------------------------------------------------------------


def file_extensions(filename: str) -> set[str]:
    """The extensions a file name may really have once saved (lower case, without the dot).

    Windows drops trailing dots and spaces ("evil.exe. " is evil.exe); a name may be a path; some
    programs end a name at a NUL; invisible characters (a right-to-left override turning
    "photo\\u202egpj.exe" into "photoexe.jpg" on screen) do not count. Only the last extension
    runs, so "invoice.pdf.exe" is an .exe and "notes.exe.txt" a .txt.
    """
    name = filename.translate(_INVISIBLE).replace("\\", "/").rsplit("/", 1)[-1]
    candidates = {name, name.split("\x00", 1)[0]}
    extensions = set()
    for candidate in candidates:
        candidate = candidate.replace("\x00", "").rstrip(". \t\r\n")
        stem, dot, extension = candidate.rpartition(".")
        if dot and extension.strip():
            extensions.add(extension.strip().casefold())
    return extensions


def _mime_type_forbidden(content_type: str, forbidden: frozenset[str]) -> bool:
    return content_type in forbidden or f"{content_type.partition('/')[0]}/*" in forbidden


def forbidden_parts(parts: Iterable[MimePart], rules: AttachmentRules) -> list[Finding]:
    """The parts the rules forbid: by file extension, by MIME type (named or not), by size (attachments)."""
    findings = []
    for part in parts:
        extensions = sorted(file_extensions(part.filename) & rules.extensions) if part.filename else []
        if extensions:
            findings.append(Finding(part, f"is a forbidden file type (.{extensions[0]})"))
        elif _mime_type_forbidden(part.content_type, rules.mime_types):
            findings.append(Finding(part, f"is of a forbidden type ({part.content_type})"))
        elif part.is_attachment and rules.max_size_bytes is not None and part.size > rules.max_size_bytes:
            findings.append(Finding(part, f"is larger than {rules.max_size_bytes // 1024} KB"))
    return findings


# -- removing attachments ------------------------------------------------------------------------


def _header_fields(header_bytes: bytes) -> list[bytes]:
    """The header fields of an entity, each with its continuation lines and line breaks."""
    fields: list[bytes] = []
    for line in header_bytes.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def notice_part(raw: bytes, part: MimePart, notice: str) -> bytes:
    """What takes a removed part's place: its own non-Content-* fields, and a short text/plain notice."""
    newline = b"\r\n" if b"\r\n" in raw[part.start : part.body_start] or b"\r\n" in raw[:200] else b"\n"
    kept = [
        field
        for field in _header_fields(raw[part.start : part.body_start])
        if not field.lower().startswith(b"content-")
    ]
    body = quopri.encodestring(notice.encode("utf-8")).replace(b"\r\n", b"\n").replace(b"\n", newline)
    return (
        b"".join(kept)
        + b"Content-Type: text/plain; charset=utf-8"
        + newline
        + b"Content-Disposition: inline"
        + newline
        + b"Content-Transfer-Encoding: quoted-printable"
        + newline
        + newline
        + body
    )


def strip_parts(raw: bytes, replacements: Sequence[tuple[MimePart, str]]) -> bytes:
    """The message with each given part replaced by a notice (text); every other byte kept."""
    result = raw
    for part, notice in sorted(replacements, key=lambda item: item[0].start, reverse=True):
        result = result[: part.start] + notice_part(raw, part, notice) + result[part.end :]
    return result


def removal_notice(finding: Finding, hostname: str) -> str:
    """The text left where a part was removed."""
    size_kb = max(1, (finding.part.size + 1023) // 1024)
    return (
        f'The attachment "{finding.name}" ({finding.part.content_type}, {size_kb} KB) was removed by the mail '
        f"server {hostname}: it {finding.reason}.\n"
    )


# -- spam scoring headers ------------------------------------------------------------------------

SPAM_HEADER_NAMES = (b"x-spam-score", b"x-spam-status", b"x-spam-flag")


def with_spam_headers(raw: bytes, header_lines: bytes, subject_prefix: str = "") -> bytes:
    """The message with `header_lines` (CRLF-ended) first, any X-Spam-* fields it came with removed
    (a sender must not vouch for itself), and `subject_prefix` before its Subject (once)."""
    body_start = _body_start(raw, 0, len(raw))
    header_block, body = raw[:body_start], raw[body_start:]
    fields = _header_fields(header_block)
    separator = header_block[sum(len(field) for field in fields) :]
    kept = []
    # A prefix beyond ASCII goes as an encoded word (RFC 2047), which may stand before plain text.
    prefix = (
        subject_prefix.encode("ascii")
        if subject_prefix.isascii()
        else Header(subject_prefix, "utf-8").encode().encode()
    )
    subject_seen = False
    for field in fields:
        name = field.split(b":", 1)[0].strip().lower()
        if name in SPAM_HEADER_NAMES:
            continue
        if prefix and name == b"subject" and not subject_seen:
            subject_seen = True
            value = field.split(b":", 1)[1]
            if not value.lstrip().startswith(prefix):
                field = b"Subject: " + prefix + b" " + value.lstrip(b" \t")
        kept.append(field)
    if prefix and not subject_seen:
        kept.append(b"Subject: " + prefix + b"\r\n")
    return header_lines + b"".join(kept) + separator + body
