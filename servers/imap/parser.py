"""An incremental IMAP command parser: bytes in (any chunking), whole commands out (RFC 3501/9051 section 9).

Framing and tokens, no meaning: a command is its tag, its name and a list of tokens (atoms, strings,
literals, parenthesised lists). The session gives the tokens meaning with the `as_*` helpers, which
raise CommandSyntaxError for a tagged BAD.

Literals (RFC 9051 4.3, RFC 7888): a line ending in `{N}` waits for the session to send a
continuation request (`ContinuationNeeded`), `{N+}` is sent straight away (LITERAL+). A literal
larger than `max_literal_octets` is refused before one octet of it is read. Nothing is buffered
without a bound: a line longer than `max_line_octets` is refused and its rest skipped up to the next
line end, and a whole command may not exceed one literal plus `max_line_octets` of other text.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

MAX_LINE_OCTETS = 64 * 1024
MAX_LITERAL_OCTETS = 50 * 1024 * 1024
# Parenthesised lists (and SEARCH's NOT/OR) nest at most this deep: no real client comes close, and
# deeper input would be a way to exhaust the stack.
MAX_NESTING = 64
# RFC 4466 2.1 tag: any ASTRING-CHAR except "+".
_TAG = re.compile(rb"[\x21\x23\x24\x26\x27\x2c-\x5b\x5d-\x7a\x7c-\x7e]+")
_COMMAND_NAME = re.compile(r"[A-Za-z][A-Za-z0-9.-]*\Z")
_LITERAL_ANNOUNCED = re.compile(rb"\{(\d{1,20})(\+?)\}\Z")
# An atom here is wider than RFC 3501's: "%" and "*" (LIST patterns), "\" (flags) and "]" are allowed;
# "[" starts a bracketed section whose spaces and parentheses belong to the atom (BODY[HEADER.FIELDS (A B)]).
_ATOM_STOP = frozenset(b' ()"{')
_NUMBER = re.compile(r"(0|[1-9][0-9]{0,9})\Z")
_NZ_NUMBER_MAX = 4294967295


class _LineTooLong:
    pass


LINE_TOO_LONG = _LineTooLong()


class Atom(str):
    """An unquoted token: a keyword, number, flag, sequence set or mailbox name."""


class String(str):
    """A quoted string, its escapes undone."""


class Literal(bytes):
    """A literal's octets, exactly as sent."""


Token = Any  # Atom | String | Literal | list[Token]: mypy has no recursive aliases we can rely on here.


@dataclass(frozen=True)
class Command:
    tag: str
    name: str  # upper case
    args: list[Token]


@dataclass(frozen=True)
class ContinuationNeeded:
    """A synchronising literal was announced and accepted: answer `+` before the client sends it."""

    tag: str


@dataclass(frozen=True)
class Rejected:
    """The input could not become a command: answer `tag BAD/NO text` (tag "*" if none was read)."""

    tag: str
    status: str  # "BAD" or "NO"
    text: str
    close: bool = False

    def response(self) -> bytes:
        return f"{self.tag} {self.status} {self.text}\r\n".encode("ascii")


ParserEvent = Command | ContinuationNeeded | Rejected


class CommandSyntaxError(ValueError):
    """The command's arguments do not follow the grammar: a tagged BAD with this text."""


class CommandParser:
    """Holds what the client sent until it makes a command; never more than the limits allow."""

    def __init__(self, *, max_line_octets: int = MAX_LINE_OCTETS, max_literal_octets: int = MAX_LITERAL_OCTETS) -> None:
        self.max_line_octets = max_line_octets
        self.max_literal_octets = max_literal_octets
        self._buffer = bytearray()
        self._parts: list[bytes] = []  # line, literal, line, literal, ..., line: one command
        self._command_octets = 0
        self._literal_octets_needed: int | None = None
        self._skipping_line = False

    def feed(self, data: bytes) -> None:
        """Take received bytes; call `next_command()` or `next_line()` until they return None."""
        if self._skipping_line:
            end = data.find(b"\n")
            if end == -1:
                return
            data = data[end + 1 :]
            self._skipping_line = False
        self._buffer += data

    def clear(self) -> None:
        """Forget everything held: unparsed bytes and a command half-read (STARTTLS, RFC 9051 11.1)."""
        self._buffer.clear()
        self._reset_command()
        self._skipping_line = False

    @property
    def buffered_octets(self) -> int:
        """What is held: unparsed input plus the lines and literals of a command not yet complete."""
        return len(self._buffer) + sum(len(part) for part in self._parts)

    def next_line(self) -> bytes | Rejected | None:
        """One line without its line end (AUTHENTICATE responses, IDLE's DONE), or None if incomplete."""
        line = self._take_line()
        if isinstance(line, _LineTooLong):
            return Rejected("*", "BAD", "Line too long")
        return line

    def next_command(self) -> ParserEvent | None:
        """The next complete command, a continuation to send, a refusal, or None if more input is needed."""
        while True:
            if self._literal_octets_needed is not None:
                needed = self._literal_octets_needed
                if len(self._buffer) < needed:
                    return None
                self._parts.append(bytes(self._buffer[:needed]))
                del self._buffer[:needed]
                self._literal_octets_needed = None
                continue
            tag = self._tag_so_far()
            line = self._take_line()
            if line is None:
                return None
            if isinstance(line, _LineTooLong):
                self._reset_command()
                return Rejected(tag, "BAD", "Line too long")
            self._command_octets += len(line)
            if self._command_octets > self.max_literal_octets + self.max_line_octets:
                self._reset_command()
                return Rejected(tag, "BAD", "Command too long")
            self._parts.append(line)
            announced = _LITERAL_ANNOUNCED.search(line)
            if announced is None:
                parts = self._parts
                self._reset_command()
                return parse_command(parts)
            size = int(announced.group(1))
            synchronising = not announced.group(2)
            if size > self.max_literal_octets or self._command_octets + size > self.max_literal_octets + (
                self.max_line_octets
            ):
                self._reset_command()
                if synchronising:
                    # RFC 9051 7.1: the client sends nothing more of this command.
                    return Rejected(tag, "NO", "[TOOBIG] Literal too large")
                # RFC 7888 4: the octets are already on their way; there is no telling where they end.
                return Rejected(tag, "BAD", "Literal too large", close=True)
            self._command_octets += size
            self._literal_octets_needed = size
            if synchronising:
                return ContinuationNeeded(tag)

    def _take_line(self) -> bytes | _LineTooLong | None:
        if self._skipping_line:
            return None
        end = self._buffer.find(b"\n")
        if end == -1:
            if len(self._buffer) > self.max_line_octets:
                # Drop what we have and what follows up to the line end (`feed` skips it).
                self._buffer.clear()
                self._skipping_line = True
                return LINE_TOO_LONG
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        line = line.removesuffix(b"\r")
        if len(line) > self.max_line_octets:
            return LINE_TOO_LONG
        return line

    def _tag_so_far(self) -> str:
        start = self._parts[0] if self._parts else bytes(self._buffer[:64])
        match = _TAG.match(start)
        if match is None or start[match.end() : match.end() + 1] not in (b" ", b"\r", b"\n", b""):
            return "*"
        return match.group(0).decode("ascii")

    def _reset_command(self) -> None:
        self._parts = []
        self._command_octets = 0
        self._literal_octets_needed = None


class _Lexer:
    """Reads tokens from a command's lines, with each announced literal standing where it was announced."""

    def __init__(self, parts: Sequence[bytes]) -> None:
        self._lines = list(parts[0::2])
        self._literals = list(parts[1::2])
        self._line_index = 0
        self._position = 0

    @property
    def _line(self) -> bytes:
        return self._lines[self._line_index]

    def at_end(self) -> bool:
        return self._line_index == len(self._lines) - 1 and self._position >= len(self._line)

    def peek(self) -> int | None:
        if self._position < len(self._line):
            return self._line[self._position]
        return None

    def skip_space(self) -> bool:
        start = self._position
        while self.peek() == 0x20:
            self._position += 1
        return self._position > start

    def word(self) -> bytes:
        start = self._position
        while (char := self.peek()) is not None and char != 0x20:
            self._position += 1
        return self._line[start : self._position]

    def rest_of_line(self) -> bytes:
        rest = self._line[self._position :]
        self._position = len(self._line)
        return rest

    def tokens(self, *, closing: bool = False, depth: int = 0) -> list[Token]:
        if depth > MAX_NESTING:
            raise CommandSyntaxError("Too deeply nested")
        found: list[Token] = []
        while True:
            if not self.skip_space() and found and self.peek() not in (None, 0x29):
                raise CommandSyntaxError("Missing space between arguments")
            char = self.peek()
            if char is None:
                if self._line_index < len(self._literals):
                    raise CommandSyntaxError("Misplaced literal")
                if closing:
                    raise CommandSyntaxError("Unbalanced parentheses")
                return found
            if char == 0x29:  # ")"
                if not closing:
                    raise CommandSyntaxError("Unbalanced parentheses")
                self._position += 1
                return found
            if char == 0x28:  # "("
                self._position += 1
                found.append(self.tokens(closing=True, depth=depth + 1))
            elif char == 0x22:  # '"'
                found.append(self._quoted())
            elif char == 0x7B:  # "{"
                found.append(self._literal())
            else:
                found.append(self._atom())

    def _quoted(self) -> String:
        self._position += 1
        text = bytearray()
        while True:
            char = self.peek()
            if char is None:
                raise CommandSyntaxError("Unterminated quoted string")
            self._position += 1
            if char == 0x22:
                break
            if char == 0x5C:  # backslash: only \\ and \" (RFC 9051 4.3)
                escaped = self.peek()
                if escaped not in (0x5C, 0x22):
                    raise CommandSyntaxError("Invalid escape in quoted string")
                self._position += 1
                text.append(escaped)
            elif char == 0 or char in (0x0D, 0x0A):
                raise CommandSyntaxError("Invalid character in quoted string")
            else:
                text.append(char)
        try:
            return String(text.decode("utf-8"))
        except UnicodeDecodeError:
            raise CommandSyntaxError("Quoted string is not UTF-8") from None

    def _literal(self) -> Literal:
        announced = _LITERAL_ANNOUNCED.match(self._line, self._position)
        if announced is None or self._line_index >= len(self._literals):
            raise CommandSyntaxError("Invalid literal")
        literal = Literal(self._literals[self._line_index])
        self._line_index += 1
        self._position = 0
        return literal

    def _atom(self) -> Atom:
        start = self._position
        line = self._line
        while self._position < len(line):
            char = line[self._position]
            if char in _ATOM_STOP:
                break
            if char < 0x20 or char >= 0x7F:
                raise CommandSyntaxError("Invalid character in atom")
            if char == 0x5B:  # "[": up to the matching "]", spaces and parentheses included
                end = line.find(b"]", self._position)
                if end == -1:
                    raise CommandSyntaxError("Unbalanced brackets")
                inner = line[self._position + 1 : end]
                if any(c < 0x20 or c >= 0x7F for c in inner) or b"[" in inner:
                    raise CommandSyntaxError("Invalid character in section")
                self._position = end
            self._position += 1
        return Atom(line[start : self._position].decode("ascii"))


def parse_command(parts: Sequence[bytes]) -> Command | Rejected:
    """Tokenise one framed command (its lines and literals); a refusal rather than an exception."""
    lexer = _Lexer(parts)
    tag = lexer.word()
    if not _TAG.fullmatch(tag):
        return Rejected("*", "BAD", "Invalid tag" if tag else "Empty command line")
    tag_text = tag.decode("ascii")
    if not lexer.skip_space():
        return Rejected(tag_text, "BAD", "Missing command")
    name = lexer.word().decode("ascii", "replace")
    if not _COMMAND_NAME.match(name):
        return Rejected(tag_text, "BAD", "Invalid command name")
    try:
        args = lexer.tokens()
    except CommandSyntaxError as error:
        return Rejected(tag_text, "BAD", str(error))
    return Command(tag_text, name.upper(), args)


# Giving tokens meaning.


def tokens_of(text: bytes) -> list[Token]:
    """The tokens of a piece of a command with no literals (a header list inside a FETCH section)."""
    return _Lexer([text]).tokens()


def is_atom(token: Token, *keywords: str) -> bool:
    """Whether `token` is an atom equal (case-insensitively) to one of `keywords`, or any atom if none given."""
    return isinstance(token, Atom) and (not keywords or token.upper() in keywords)


def as_astring(token: Token) -> str:
    """An astring (atom, quoted string or literal) as text."""
    if isinstance(token, Literal):
        try:
            return bytes(token).decode("utf-8")
        except UnicodeDecodeError:
            raise CommandSyntaxError("Literal is not UTF-8") from None
    if isinstance(token, (Atom, String)):
        return str(token)
    raise CommandSyntaxError("Expected a string")


def as_string(token: Token) -> str:
    """A string (quoted or literal), where an atom is not allowed."""
    if isinstance(token, Atom):
        raise CommandSyntaxError("Expected a quoted string or literal")
    return as_astring(token)


def as_atom(token: Token) -> str:
    if not isinstance(token, Atom):
        raise CommandSyntaxError("Expected an atom")
    return str(token)


def as_list(token: Token) -> list[Token]:
    if not isinstance(token, list):
        raise CommandSyntaxError("Expected a parenthesised list")
    return token


def as_number(token: Token, *, nonzero: bool = False) -> int:
    """RFC 3501 number (0..2^32-1) or nz-number."""
    if not isinstance(token, Atom) or not _NUMBER.match(token) or int(token) > _NZ_NUMBER_MAX:
        raise CommandSyntaxError("Expected a number")
    if nonzero and int(token) == 0:
        raise CommandSyntaxError("Expected a non-zero number")
    return int(token)


def arguments(args: list[Token], at_least: int, at_most: int) -> list[Token]:
    if not at_least <= len(args) <= at_most:
        raise CommandSyntaxError("Wrong number of arguments")
    return args


@dataclass(frozen=True)
class SequenceSet:
    """RFC 9051 sequence-set: ranges of numbers where None stands for "*" (the largest in use)."""

    ranges: tuple[tuple[int | None, int | None], ...]
    saved: bool = False  # "$" (RFC 5182 SEARCHRES): the last SEARCH RETURN (SAVE) result; the session resolves it

    def bounds(self, largest: int) -> list[tuple[int, int]]:
        resolved = []
        for first, last in self.ranges:
            low = largest if first is None else first
            high = largest if last is None else last
            resolved.append((min(low, high), max(low, high)))
        return resolved

    def _merged(self, largest: int) -> list[list[int]]:
        merged: list[list[int]] = []
        for low, high in sorted(self.bounds(largest)):
            if merged and low <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], high)
            else:
                merged.append([low, high])
        return merged

    def select_sorted(self, candidates: Sequence[int], largest: int) -> list[int]:
        """The ascending `candidates` inside the set, ascending: two bisections per merged range, so
        `FETCH 7` in a folder of 50,000 costs a few steps, not a look at every message."""
        chosen: list[int] = []
        for low, high in self._merged(largest):
            start = bisect.bisect_left(candidates, low)
            end = bisect.bisect_right(candidates, high, start)
            chosen.extend(candidates[start:end])
        return chosen

    def select_sorted_slices(self, candidates: Sequence[int], largest: int) -> list[tuple[int, int]]:
        """Like `select_sorted`, as (start, end) slices of `candidates`, ascending and disjoint."""
        slices: list[tuple[int, int]] = []
        for low, high in self._merged(largest):
            start = bisect.bisect_left(candidates, low)
            end = bisect.bisect_right(candidates, high, start)
            if end > start:
                slices.append((start, end))
        return slices

    def select(self, candidates: Iterable[int], largest: int) -> list[int]:
        """The candidates inside the set, in their order (never expands a range like 1:4294967295).

        The ranges are merged and searched by bisection: a 64 KiB set of single numbers against a large
        folder costs a log factor, not a product.
        """
        merged = self._merged(largest)
        lows = [low for low, _ in merged]
        chosen = []
        for number in candidates:
            index = bisect.bisect_right(lows, number) - 1
            if index >= 0 and number <= merged[index][1]:
                chosen.append(number)
        return chosen

    def mentions_star(self) -> bool:
        return any(first is None or last is None for first, last in self.ranges)


def _seq_number(text: str) -> int | None:
    if text == "*":
        return None
    if not _NUMBER.match(text) or text == "0" or int(text) > _NZ_NUMBER_MAX:
        raise CommandSyntaxError("Invalid sequence set")
    return int(text)


def parse_sequence_set(token: Token) -> SequenceSet:
    """Parse `2,4:7,9`, `1:*`, `*` or `$`; raise CommandSyntaxError otherwise."""
    if not isinstance(token, Atom) or not token:
        raise CommandSyntaxError("Invalid sequence set")
    if token == "$":
        return SequenceSet((), saved=True)
    ranges: list[tuple[int | None, int | None]] = []
    for item in token.split(","):
        first, colon, last = item.partition(":")
        start = _seq_number(first)
        ranges.append((start, _seq_number(last) if colon else start))
    return SequenceSet(tuple(ranges))


def is_sequence_set(token: Token) -> bool:
    try:
        parse_sequence_set(token)
    except CommandSyntaxError:
        return False
    return True
