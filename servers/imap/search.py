"""SEARCH (RFC 3501 6.4.4, RFC 9051 6.4.4, ESEARCH RFC 4731): search keys as predicates over messages.

Text keys match case-insensitively against decoded text (RFC 2047 words in headers, transfer
encodings and charsets in bodies), as RFC 9051 asks. Dates without time or zone: INTERNALDATE in
UTC, the sent date in the Date field's own zone (the internal date if it has none).
\\Recent is not tracked (every session reports 0 recent), so RECENT and NEW match nothing and OLD all.
"""

from __future__ import annotations

import datetime
import email
import email.utils
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser

from servers.imap import mime, responses
from servers.imap.parser import (
    MAX_NESTING,
    CommandSyntaxError,
    Token,
    as_astring,
    as_atom,
    as_list,
    as_number,
    is_atom,
    is_sequence_set,
    parse_sequence_set,
)
from servers.imap.store_api import MessageRecord

SUPPORTED_CHARSETS = frozenset({"UTF-8", "US-ASCII"})
RETURN_OPTIONS = frozenset({"MIN", "MAX", "COUNT", "ALL", "SAVE"})
_DATE = re.compile(r"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})\Z")
_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_HEADER_KEYS = {"BCC", "CC", "FROM", "SUBJECT", "TO"}
_header_parser = BytesHeaderParser(policy=policy.default)


class UnsupportedCharsetError(Exception):
    """SEARCH CHARSET names a charset we do not search in: NO [BADCHARSET]."""


class Candidate:
    """One message as a search key sees it; the header and body are read at most once, when needed."""

    def __init__(
        self, number: int, record: MessageRecord, load_message: Callable[[], bytes], load_header: Callable[[], bytes]
    ) -> None:
        self.number = number
        self.record = record
        self._load_message = load_message
        self._load_header = load_header
        self._header: bytes | None = None
        self._parsed_header: Message | None = None
        self._body_text: str | None = None

    def header(self) -> bytes:
        if self._header is None:
            self._header = mime.crlf(self._load_header())
        return self._header

    def _fields(self) -> list[tuple[str, str]]:
        if self._parsed_header is None:
            self._parsed_header = _header_parser.parsebytes(self.header())
        return [(name.lower(), _decoded(value)) for name, value in self._parsed_header.items()]

    def header_values(self, name: str) -> list[str]:
        return [value for field_name, value in self._fields() if field_name == name]

    def header_text(self) -> str:
        return "\n".join(f"{name}: {value}" for name, value in self._fields())

    def body_text(self) -> str:
        if self._body_text is None:
            self._body_text = _decoded_body(self._load_message())
        return self._body_text


def _decoded(value: object) -> str:
    try:
        return str(value)  # policy.default decodes RFC 2047 words here
    except Exception:  # a malformed encoded word: search what is there
        return repr(value)


def _decoded_body(raw: bytes) -> str:
    message = email.message_from_bytes(raw, policy=policy.default)
    texts = []
    for part in message.walk():
        if part.get_content_maintype() != "text":
            continue
        try:
            texts.append(part.get_content())  # type: ignore[attr-defined]
        except Exception:  # an unknown charset or broken encoding: the raw octets as UTF-8
            payload = part.get_payload(decode=True)
            texts.append(payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload))
    return "\n".join(texts)


Predicate = Callable[[Candidate], bool]


@dataclass(frozen=True)
class SearchRequest:
    predicate: Predicate
    return_options: frozenset[str] | None  # None: a plain SEARCH response; else ESEARCH (empty set: ALL)


def parse_date(token: Token) -> datetime.date:
    match = _DATE.match(as_astring(token))
    if match is None or match.group(2).lower() not in responses.MONTH_NUMBERS:
        raise CommandSyntaxError("Invalid date")
    try:
        return datetime.date(int(match.group(3)), responses.MONTH_NUMBERS[match.group(2).lower()], int(match.group(1)))
    except ValueError:
        raise CommandSyntaxError("Invalid date") from None


def _internal_date(candidate: Candidate) -> datetime.date:
    return datetime.datetime.fromtimestamp(candidate.record.internal_date, datetime.UTC).date()


def _sent_date(candidate: Candidate) -> datetime.date:
    value = mime.field_value(candidate.header(), "date")
    if value:
        try:
            return email.utils.parsedate_to_datetime(value).date()
        except (TypeError, ValueError, IndexError):
            pass
    return _internal_date(candidate)


def _contains(haystack: str, needle: str) -> bool:
    return needle.casefold() in haystack.casefold()


class _KeyParser:
    def __init__(
        self, tokens: Sequence[Token], *, message_count: int, largest_uid: int, saved_uids: frozenset[int]
    ) -> None:
        self.tokens = list(tokens)
        self.position = 0
        self.message_count = message_count
        self.largest_uid = largest_uid
        self.saved_uids = saved_uids

    def take(self) -> Token:
        if self.position >= len(self.tokens):
            raise CommandSyntaxError("Missing search key argument")
        token = self.tokens[self.position]
        self.position += 1
        return token

    def keys(self, depth: int = 0) -> Predicate:
        predicates = []
        while self.position < len(self.tokens):
            predicates.append(self.key(depth))
        if not predicates:
            raise CommandSyntaxError("Missing search key")
        return predicates[0] if len(predicates) == 1 else (lambda c: all(p(c) for p in predicates))

    def key(self, depth: int = 0) -> Predicate:
        if depth > MAX_NESTING:
            raise CommandSyntaxError("Search keys nested too deeply")
        token = self.take()
        if isinstance(token, list):
            inner = _KeyParser(
                token, message_count=self.message_count, largest_uid=self.largest_uid, saved_uids=self.saved_uids
            )
            return inner.keys(depth + 1)
        if is_sequence_set(token):
            numbers = parse_sequence_set(token)
            if numbers.saved:
                saved = self.saved_uids
                return lambda c: c.record.uid in saved
            count = self.message_count
            return lambda c: bool(numbers.select([c.number], count))
        name = as_atom(token).upper()
        if name == "ALL" or name == "OLD":
            return lambda c: True
        if name in ("NEW", "RECENT"):
            return lambda c: False
        if name in _FLAG_KEYS:
            flag, wanted = _FLAG_KEYS[name]
            return lambda c: (flag in c.record.flags) == wanted
        if name in ("KEYWORD", "UNKEYWORD"):
            keyword = as_atom(self.take())
            wanted = name == "KEYWORD"
            return lambda c: any(f.lower() == keyword.lower() for f in c.record.flags) == wanted
        if name == "NOT":
            inner_predicate = self.key(depth + 1)
            return lambda c: not inner_predicate(c)
        if name == "OR":
            left, right = self.key(depth + 1), self.key(depth + 1)
            return lambda c: left(c) or right(c)
        if name == "UID":
            uids = parse_sequence_set(self.take())
            if uids.saved:
                saved = self.saved_uids
                return lambda c: c.record.uid in saved
            largest = self.largest_uid
            return lambda c: bool(uids.select([c.record.uid], largest))
        if name in ("LARGER", "SMALLER"):
            size = as_number(self.take())
            if name == "LARGER":
                return lambda c: c.record.size_octets > size
            return lambda c: c.record.size_octets < size
        if name in ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"):
            return self._date_key(name, parse_date(self.take()))
        if name in _HEADER_KEYS:
            return self._header_key(name.lower(), as_astring(self.take()))
        if name == "HEADER":
            field_name = as_astring(self.take())
            return self._header_key(field_name.lower(), as_astring(self.take()))
        if name in ("BODY", "TEXT"):
            needle = as_astring(self.take())
            if name == "BODY":
                return lambda c: _contains(c.body_text(), needle)
            return lambda c: _contains(c.header_text(), needle) or _contains(c.body_text(), needle)
        raise CommandSyntaxError(f"Unknown search key {name[:40]}")

    def _header_key(self, field_name: str, needle: str) -> Predicate:
        # RFC 9051 6.4.4: HEADER with an empty string matches every message that has the field.
        return lambda c: any(_contains(value, needle) for value in c.header_values(field_name))

    def _date_key(self, name: str, date: datetime.date) -> Predicate:
        date_of = _sent_date if name.startswith("SENT") else _internal_date
        test = name.removeprefix("SENT")
        if test == "BEFORE":
            return lambda c: date_of(c) < date
        if test == "ON":
            return lambda c: date_of(c) == date
        return lambda c: date_of(c) >= date


def parse_search(
    args: Sequence[Token], *, message_count: int, largest_uid: int, saved_uids: frozenset[int] = frozenset()
) -> SearchRequest:
    """SEARCH's arguments: [RETURN (options)] [CHARSET name] keys."""
    tokens = list(args)
    return_options: frozenset[str] | None = None
    if tokens and is_atom(tokens[0], "RETURN"):
        if len(tokens) < 2:
            raise CommandSyntaxError("RETURN needs a list")
        options = [as_atom(option).upper() for option in as_list(tokens[1])]
        if not set(options) <= RETURN_OPTIONS:
            raise CommandSyntaxError("Unsupported RETURN option")
        return_options = frozenset(options)
        tokens = tokens[2:]
    if tokens and is_atom(tokens[0], "CHARSET"):
        if len(tokens) < 2:
            raise CommandSyntaxError("CHARSET needs a name")
        if as_astring(tokens[1]).upper() not in SUPPORTED_CHARSETS:
            raise UnsupportedCharsetError(as_astring(tokens[1]))
        tokens = tokens[2:]
    parser = _KeyParser(tokens, message_count=message_count, largest_uid=largest_uid, saved_uids=saved_uids)
    predicate = parser.keys()
    return SearchRequest(predicate, return_options)


def compact_sequence_set(numbers: Sequence[int]) -> str:
    """1,2,3,5 -> "1:3,5" (numbers ascending)."""
    ranges: list[str] = []
    start = previous = None
    for number in numbers:
        if previous is not None and number == previous + 1:
            previous = number
            continue
        if start is not None:
            ranges.append(str(start) if start == previous else f"{start}:{previous}")
        start = previous = number
    if start is not None:
        ranges.append(str(start) if start == previous else f"{start}:{previous}")
    return ",".join(ranges)


def esearch_response(tag: str, found: Sequence[int], options: frozenset[str], *, uid: bool) -> str:
    """RFC 4731 `* ESEARCH (TAG "a") [UID] MIN n MAX n COUNT n ALL set` (without "* ")."""
    options = (options - {"SAVE"}) or frozenset({"ALL"})
    text = f'ESEARCH (TAG "{tag}")' + (" UID" if uid else "")
    if found and "MIN" in options:
        text += f" MIN {found[0]}"
    if found and "MAX" in options:
        text += f" MAX {found[-1]}"
    if "COUNT" in options:
        text += f" COUNT {len(found)}"
    if found and "ALL" in options:
        text += f" ALL {compact_sequence_set(found)}"
    return text
