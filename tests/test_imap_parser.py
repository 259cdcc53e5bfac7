"""The IMAP command parser against the RFC 3501/9051 grammar (section 9), with no session and no socket."""

from __future__ import annotations

import pytest

from servers.imap import mutf7
from servers.imap.parser import (
    Atom,
    Command,
    CommandParser,
    CommandSyntaxError,
    ContinuationNeeded,
    Literal,
    ParserEvent,
    Rejected,
    SequenceSet,
    String,
    as_astring,
    as_number,
    as_string,
    parse_sequence_set,
)

# No database here: nothing to prove on a second backend.
pytestmark = pytest.mark.backend_independent


def events(data: bytes, **limits: int) -> list[ParserEvent]:
    parser = CommandParser(**limits)
    parser.feed(data)
    found = []
    while (event := parser.next_command()) is not None:
        found.append(event)
    return found


def command(data: bytes) -> Command:
    (event,) = [e for e in events(data) if not isinstance(e, ContinuationNeeded)]
    assert isinstance(event, Command), event
    return event


# Valid commands: RFC 9051 section 9 productions.


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"a1 NOOP\r\n", Command("a1", "NOOP", [])),
        (b"a1 noop\r\n", Command("a1", "NOOP", [])),
        (b"a1 NOOP\n", Command("a1", "NOOP", [])),  # a bare LF ends a line too
        (b"A.1 CAPABILITY\r\n", Command("A.1", "CAPABILITY", [])),
        (b"a]} NOOP\r\n", Command("a]}", "NOOP", [])),  # tag: any ASTRING-CHAR but "+"
        (b"a1 LOGIN alice secret\r\n", Command("a1", "LOGIN", ["alice", "secret"])),
        (b'a1 LOGIN "alice" "se cret"\r\n', Command("a1", "LOGIN", ["alice", "se cret"])),
        (b'a1 LOGIN "" ""\r\n', Command("a1", "LOGIN", ["", ""])),
        (b'a1 LOGIN "a\\\\b" "q\\"q"\r\n', Command("a1", "LOGIN", ["a\\b", 'q"q'])),
        (b'a1 SELECT "Entw\xc3\xbcrfe"\r\n', Command("a1", "SELECT", ["Entwürfe"])),
        (b"a1 LOGIN {5}\r\nalice {3}\r\npw!\r\n", Command("a1", "LOGIN", [b"alice", b"pw!"])),
        (b"a1 LOGIN {5+}\r\nalice {0+}\r\n\r\n", Command("a1", "LOGIN", [b"alice", b""])),
        (b"a1 APPEND x {7+}\r\n(a)\r\n{}\r\n", Command("a1", "APPEND", ["x", b"(a)\r\n{}"])),
        (b"a1 X (a (b c) ())\r\n", Command("a1", "X", [["a", ["b", "c"], []]])),
        (b"a1 X ((((x))))\r\n", Command("a1", "X", [[[[["x"]]]]])),
        (
            b"a1 STORE 1 +FLAGS (\\Seen $Forwarded)\r\n",
            Command("a1", "STORE", ["1", "+FLAGS", ["\\Seen", "$Forwarded"]]),
        ),
        (b'a1 X NIL "NIL"\r\n', Command("a1", "X", ["NIL", "NIL"])),
        (b'a1 LIST "" %\r\n', Command("a1", "LIST", ["", "%"])),
        (b'a1 LIST "" *\r\n', Command("a1", "LIST", ["", "*"])),
        (b"a1 FETCH 1:* (FLAGS)\r\n", Command("a1", "FETCH", ["1:*", ["FLAGS"]])),
        (
            b"a1 UID FETCH 1,3:5 (BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100>)\r\n",
            Command("a1", "UID", ["FETCH", "1,3:5", ["BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100>"]]),
        ),
        (b"a1 FETCH 1 BODY[]\r\n", Command("a1", "FETCH", ["1", "BODY[]"])),
        (
            b"a1 FETCH 1 (BODY[1.2.MIME] RFC822.SIZE)\r\n",
            Command("a1", "FETCH", ["1", ["BODY[1.2.MIME]", "RFC822.SIZE"]]),
        ),
    ],
)
def test_valid_commands_parse(raw, expected):
    assert command(raw) == expected


def test_runs_of_spaces_between_arguments_are_accepted():
    assert command(b"a1 LOGIN  alice   pw \r\n") == Command("a1", "LOGIN", ["alice", "pw"])


def test_token_kinds_are_kept_apart():
    parsed = command(b'a1 X atom "quoted" {3+}\r\nlit (l)\r\n')
    kinds = [type(token) for token in parsed.args]
    assert kinds == [Atom, String, Literal, list]


# Invalid input: a BAD (with the tag when one was read), never an exception.


@pytest.mark.parametrize(
    ("raw", "tag", "text"),
    [
        (b"\r\n", "*", "Empty command line"),
        (b"a1\r\n", "a1", "Missing command"),
        (b"a1 \r\n", "a1", "Invalid command name"),
        (b"(a1 NOOP\r\n", "*", "Invalid tag"),
        (b"a+1 NOOP\r\n", "*", "Invalid tag"),
        (b"a*1 NOOP\r\n", "*", "Invalid tag"),
        (b'a"1 NOOP\r\n', "*", "Invalid tag"),
        (b"a1 1NOOP\r\n", "a1", "Invalid command name"),
        (b"a1 X (\r\n", "a1", "Unbalanced parentheses"),
        (b"a1 X )\r\n", "a1", "Unbalanced parentheses"),
        (b"a1 X ((a)\r\n", "a1", "Unbalanced parentheses"),
        (b"a1 X (a))\r\n", "a1", "Unbalanced parentheses"),
        (b'a1 X "open\r\n', "a1", "Unterminated quoted string"),
        (b'a1 X "bad\\escape"\r\n', "a1", "Invalid escape in quoted string"),
        (b'a1 X "\xff"\r\n', "a1", "Quoted string is not UTF-8"),
        (b"a1 X a\x01b\r\n", "a1", "Invalid character in atom"),
        (b"a1 X \xc3\xa4\r\n", "a1", "Invalid character in atom"),
        (b"a1 X {3}x\r\n", "a1", "Invalid literal"),
        (b"a1 X {x}\r\n", "a1", "Invalid literal"),
        (b"a1 FETCH 1 BODY[HEADER\r\n", "a1", "Unbalanced brackets"),
        (b"a1 X a(b)\r\n", "a1", "Missing space between arguments"),
        (b'a1 X "a""b"\r\n', "a1", "Missing space between arguments"),
    ],
)
def test_malformed_commands_are_bad_with_their_tag(raw, tag, text):
    assert events(raw) == [Rejected(tag, "BAD", text)]


def test_deep_nesting_is_bad_not_a_crash():
    assert events(b"a1 X " + b"(" * 30_000 + b")" * 30_000 + b"\r\n") == [Rejected("a1", "BAD", "Too deeply nested")]
    nested: list = []
    for _ in range(59):
        nested = [nested]
    assert events(b"a1 X " + b"(" * 60 + b")" * 60 + b"\r\n") == [Command("a1", "X", [nested])]


def test_a_bad_command_does_not_disturb_the_next_one():
    found = events(b"a1 X (\r\na2 NOOP\r\n")
    assert found == [Rejected("a1", "BAD", "Unbalanced parentheses"), Command("a2", "NOOP", [])]


# Chunking: the same commands whatever the packets.

PIPELINE = (
    b"a1 LOGIN {5}\r\nalice {3}\r\npw!\r\n"
    b'a2 SELECT "INBOX"\r\n'
    b"a3 APPEND x (\\Seen) {12+}\r\nhello\r\nworld\r\n"
    b"a4 UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (FROM)])\r\n"
)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64, len(PIPELINE)])
def test_commands_come_out_the_same_however_the_bytes_are_chunked(chunk_size):
    parser = CommandParser()
    found = []
    for start in range(0, len(PIPELINE), chunk_size):
        parser.feed(PIPELINE[start : start + chunk_size])
        while (event := parser.next_command()) is not None:
            found.append(event)
    assert found == events(PIPELINE)
    assert [type(e) for e in found] == [ContinuationNeeded, ContinuationNeeded, Command, Command, Command, Command]
    assert found[4] == Command("a3", "APPEND", ["x", ["\\Seen"], b"hello\r\nworld"])


def test_a_synchronising_literal_asks_for_continuation_before_its_octets_arrive():
    parser = CommandParser()
    parser.feed(b"a1 LOGIN {5}\r\n")
    assert parser.next_command() == ContinuationNeeded("a1")
    assert parser.next_command() is None
    parser.feed(b"ali")
    assert parser.next_command() is None
    parser.feed(b"ce pw\r\n")
    assert parser.next_command() == Command("a1", "LOGIN", [b"alice", "pw"])


def test_a_non_synchronising_literal_needs_no_continuation():
    assert events(b"a1 LOGIN {5+}\r\nalice pw\r\n") == [Command("a1", "LOGIN", [b"alice", "pw"])]


# Limits: nothing unbounded is held.


def test_a_line_longer_than_the_limit_is_refused_and_skipped_to_its_end():
    parser = CommandParser(max_line_octets=100)
    parser.feed(b"a1 NOOP " + b"x" * 150)
    assert parser.next_command() == Rejected("a1", "BAD", "Line too long")
    parser.feed(b"y" * 10_000)
    assert parser.buffered_octets == 0
    parser.feed(b"zzz\r\na2 NOOP\r\n")
    assert parser.next_command() == Command("a2", "NOOP", [])


def test_a_whole_overlong_line_in_one_packet_is_refused_and_the_next_command_runs():
    found = events(b"a1 X " + b"x" * 200 + b"\r\na2 NOOP\r\n", max_line_octets=100)
    assert found == [Rejected("a1", "BAD", "Line too long"), Command("a2", "NOOP", [])]


def test_the_default_line_limit_is_64_kib():
    assert events(b"a1 X " + b"x" * (64 * 1024 - 5) + b"\r\n")[0] == Command("a1", "X", ["x" * (64 * 1024 - 5)])
    assert events(b"a1 X " + b"x" * (64 * 1024) + b"\r\n") == [Rejected("a1", "BAD", "Line too long")]


def test_a_too_large_synchronising_literal_is_refused_before_it_is_sent():
    parser = CommandParser(max_literal_octets=10)
    parser.feed(b"a1 APPEND INBOX {11}\r\n")
    assert parser.next_command() == Rejected("a1", "NO", "[TOOBIG] Literal too large")
    assert parser.next_command() is None
    parser.feed(b"a2 NOOP\r\n")  # the client sends no literal: the next line is a new command
    assert parser.next_command() == Command("a2", "NOOP", [])


def test_a_literal_at_the_limit_is_accepted():
    assert events(b"a1 APPEND INBOX {10+}\r\n0123456789\r\n", max_literal_octets=10) == [
        Command("a1", "APPEND", ["INBOX", b"0123456789"])
    ]


def test_a_too_large_non_synchronising_literal_closes_the_connection():
    # The session closes on this event; its octets are never read as commands.
    found = events(b"a1 APPEND INBOX {11+}\r\n01234567890\r\n", max_literal_octets=10)
    assert found[0] == Rejected("a1", "BAD", "Literal too large", close=True)


def test_many_literals_cannot_add_up_past_the_limit():
    # One command holds at most one literal's worth plus one line's worth of octets.
    parser = CommandParser(max_line_octets=100, max_literal_octets=50)
    parser.feed(b"a1 X" + (b" {40+}\r\n" + b"y" * 40) * 4)
    found = []
    while (event := parser.next_command()) is not None:
        found.append(event)
        if isinstance(event, Rejected):
            break
    assert found == [Rejected("a1", "BAD", "Literal too large", close=True)]
    assert parser.buffered_octets < 150


def test_clear_forgets_unparsed_input_and_a_half_read_command():
    parser = CommandParser()
    parser.feed(b"a1 LOGIN {5}\r\nal")
    assert parser.next_command() == ContinuationNeeded("a1")
    parser.clear()
    assert parser.buffered_octets == 0
    parser.feed(b"a2 NOOP\r\n")
    assert parser.next_command() == Command("a2", "NOOP", [])


def test_next_line_reads_raw_lines_for_idle_and_authenticate():
    parser = CommandParser(max_line_octets=10)
    parser.feed(b"DONE\r\nAAAA")
    assert parser.next_line() == b"DONE"
    assert parser.next_line() is None
    parser.feed(b"B" * 20)
    assert parser.next_line() == Rejected("*", "BAD", "Line too long")


# Sequence sets (RFC 9051 9: sequence-set).


@pytest.mark.parametrize(
    ("text", "ranges"),
    [
        ("1", ((1, 1),)),
        ("*", ((None, None),)),
        ("1:*", ((1, None),)),
        ("*:4", ((None, 4),)),
        ("2,4:7,9", ((2, 2), (4, 7), (9, 9))),
        ("7:4", ((7, 4),)),
        ("4294967295", ((4294967295, 4294967295),)),
    ],
)
def test_valid_sequence_sets_parse(text, ranges):
    assert parse_sequence_set(Atom(text)) == SequenceSet(ranges)


@pytest.mark.parametrize(
    "text", ["0", "1:0", "01", "1:", ":1", "1,,2", ",1", "1,", "a", "-1", "4294967296", "$1", "1:$", "$,1", "1:2:3"]
)
def test_invalid_sequence_sets_are_syntax_errors(text):
    with pytest.raises(CommandSyntaxError):
        parse_sequence_set(Atom(text))


def test_dollar_is_the_saved_search_result():
    assert parse_sequence_set(Atom("$")) == SequenceSet((), saved=True)


def test_selecting_from_a_long_sequence_set_is_fast():
    # 5,000 ranges against 20,000 messages: 10^8 comparisons if done naively.
    many = parse_sequence_set(Atom(",".join(str(n) for n in range(1, 10_000, 2))))
    selected = many.select(range(1, 20_001), 20_000)
    assert selected[:3] == [1, 3, 5] and len(selected) == 5_000


def test_a_quoted_sequence_set_is_a_syntax_error():
    with pytest.raises(CommandSyntaxError):
        parse_sequence_set(String("1:2"))


@pytest.mark.parametrize(
    ("text", "largest", "expected"),
    [
        ("1:*", 5, [1, 2, 3, 4, 5]),
        ("*", 5, [5]),
        ("4:2", 5, [2, 3, 4]),
        ("2,4:*", 5, [2, 4, 5]),
        ("9:*", 5, [5]),  # RFC 9051: n:* where n is beyond the last still names the last
        ("1:4294967295", 3, [1, 2, 3]),
    ],
)
def test_sequence_sets_select_from_candidates_without_expanding_ranges(text, largest, expected):
    assert parse_sequence_set(Atom(text)).select(range(1, largest + 1), largest) == expected
    assert parse_sequence_set(Atom(text)).select_sorted(range(1, largest + 1), largest) == expected


@pytest.mark.parametrize("text", ["3", "1,7:9,20:*", "5:2,4:6,30", "*", "8:*", "1:4294967295", "25,2,2"])
def test_selecting_from_sorted_candidates_by_bisection_picks_what_a_look_at_each_picks(text):
    uids = [2, 3, 5, 8, 9, 13, 21, 34]  # a folder's UIDs after expunges: gaps
    sequence_set = parse_sequence_set(Atom(text))

    assert sequence_set.select_sorted(uids, uids[-1]) == sequence_set.select(uids, uids[-1])


# Token helpers.


def test_astring_accepts_atoms_strings_and_utf8_literals():
    assert as_astring(Atom("a")) == as_astring(String("a")) == as_astring(Literal(b"a")) == "a"
    with pytest.raises(CommandSyntaxError):
        as_astring(Literal(b"\xff"))
    with pytest.raises(CommandSyntaxError):
        as_astring(["list"])


def test_string_refuses_atoms():
    with pytest.raises(CommandSyntaxError):
        as_string(Atom("a"))


@pytest.mark.parametrize("text", ["-1", "1.5", "4294967296", "01", "", "\u0663"])
def test_numbers_are_ascii_digits_within_32_bits(text):
    with pytest.raises(CommandSyntaxError):
        as_number(Atom(text))


def test_nz_number_refuses_zero():
    assert as_number(Atom("0")) == 0
    with pytest.raises(CommandSyntaxError):
        as_number(Atom("0"), nonzero=True)


# Modified UTF-7 (RFC 3501 5.1.3).


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("INBOX", "INBOX"),
        ("Entwürfe", "Entw&APw-rfe"),
        ("a&b", "a&-b"),
        ("&", "&-"),
        ("日本語", "&ZeVnLIqe-"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
        ("😀", "&2D3eAA-"),
    ],
)
def test_modified_utf7_round_trips(text, encoded):
    assert mutf7.encode(text) == encoded
    assert mutf7.decode(encoded) == text


@pytest.mark.parametrize(
    "name",
    [
        "ä",  # 8-bit must be encoded
        "a&b",  # a bare "&"
        "&ZeVnLIqe",  # unterminated
        "&AGE-",  # encodes "a", which stands for itself
        "&AOQ-&AOQ-",  # two runs back to back
        "&U,BTFw-&ZeVnLIqe-",
        "&Jjo!",
        "&2D0-",  # a lone surrogate
        "tab\there",
    ],
)
def test_non_canonical_modified_utf7_is_refused(name):
    assert not mutf7.is_valid(name)
    with pytest.raises(mutf7.MUtf7Error):
        mutf7.decode(name)
