"""The IMAP session's message commands (FETCH, STORE, COPY, MOVE, EXPUNGE, SEARCH) over the in-memory store."""

from __future__ import annotations

import re

import pytest

from tests.imap_session_helpers import (
    MULTIPART,
    PLAIN,
    fetch,
    last_line,
    send,
    untagged_lines,
)

# No database here: nothing to prove on a second backend.
pytestmark = pytest.mark.backend_independent

# FETCH.


def test_fetch_flags_uid_internaldate_and_size(selected):
    assert fetch(selected, "f1 FETCH 1:2 (FLAGS UID INTERNALDATE RFC822.SIZE)") == (
        b'* 1 FETCH (FLAGS (\\Seen) UID 1 INTERNALDATE "15-Jan-2026 10:00:00 +0000" RFC822.SIZE %d)\r\n'
        b'* 2 FETCH (FLAGS (\\Flagged) UID 2 INTERNALDATE "20-Feb-2026 23:30:00 +0000" RFC822.SIZE %d)\r\n'
        % (len(PLAIN), len(MULTIPART))
    )


def test_fetch_envelope(selected):
    assert fetch(selected, "f1 FETCH 1 ENVELOPE") == (
        b'* 1 FETCH (ENVELOPE ("Mon, 7 Feb 1994 21:52:25 -0800" "Hello Alice" '
        b'(("Bob Example" NIL "bob" "example.com")) (("Bob Example" NIL "bob" "example.com")) '
        b'(("Bob Example" NIL "bob" "example.com")) ((NIL NIL "alice" "example.com")) NIL NIL NIL '
        b'"<1@example.com>"))\r\n'
    )


def test_fetch_bodystructure_of_a_multipart_message(selected):
    assert fetch(selected, "f1 FETCH 2 BODYSTRUCTURE") == (
        b'* 2 FETCH (BODYSTRUCTURE (("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 27 1 '
        b"NIL NIL NIL NIL)"
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 56 (NIL "forwarded" ((NIL NIL "dave" "example.com")) '
        b'((NIL NIL "dave" "example.com")) ((NIL NIL "dave" "example.com")) NIL NIL NIL NIL NIL) '
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 10 1 NIL NIL NIL NIL) 4 '
        b'NIL ("ATTACHMENT" NIL) NIL NIL) '
        b'"MIXED" ("BOUNDARY" "outer") NIL NIL NIL))\r\n'
    )


def test_a_multipart_without_parts_shows_its_body_as_one_text_part(selected, store):
    store.deliver(b"Content-Type: multipart/mixed\r\n\r\nno boundary here\r\n")
    send(selected, "n1 NOOP")
    assert fetch(selected, "f1 FETCH 4 (BODY BODY.PEEK[1])") == (
        b'* 4 FETCH (BODY (("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 18 1) "MIXED") '
        b"BODY[1] {18}\r\nno boundary here\r\n)\r\n"
    )


def test_fetch_body_is_the_non_extensible_structure(selected):
    assert fetch(selected, "f1 FETCH 1 BODY") == (
        b'* 1 FETCH (BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 18 1))\r\n'
    )


def test_fetch_body_sets_seen_and_shows_the_new_flags(selected, store):
    data = fetch(selected, "f1 FETCH 2 BODY[]")
    assert data == b"* 2 FETCH (BODY[] {%d}\r\n%s FLAGS (\\Flagged \\Seen))\r\n" % (len(MULTIPART), MULTIPART)
    assert "\\Seen" in store.folders["INBOX"].find(2).flags


def test_fetch_body_peek_leaves_flags_alone(selected, store):
    fetch(selected, "f1 FETCH 2 (BODY.PEEK[] RFC822.HEADER)")
    assert store.folders["INBOX"].find(2).flags == {"\\Flagged"}


def test_fetch_in_a_read_only_folder_never_sets_seen(logged_in, store):
    send(logged_in, "s1 EXAMINE INBOX")
    fetch(logged_in, "f1 FETCH 2 RFC822")
    assert store.folders["INBOX"].find(2).flags == {"\\Flagged"}


@pytest.mark.parametrize(
    ("item", "response"),
    [
        ("BODY.PEEK[HEADER]", b"BODY[HEADER] {%d}\r\n%s" % (len(PLAIN) - 18, PLAIN[:-18])),
        (
            "BODY.PEEK[HEADER.FIELDS (subject FROM)]",
            b"BODY[HEADER.FIELDS (subject FROM)] {61}\r\n"
            b"From: Bob Example <bob@example.com>\r\nSubject: Hello Alice\r\n\r\n",
        ),
        (
            "BODY.PEEK[HEADER.FIELDS.NOT (From To Date Message-ID)]",
            b"BODY[HEADER.FIELDS.NOT (From To Date Message-ID)] {24}\r\nSubject: Hello Alice\r\n\r\n",
        ),
        ("BODY.PEEK[TEXT]", b"BODY[TEXT] {18}\r\nLunch on Friday?\r\n"),
        ("BODY.PEEK[1]", b"BODY[1] {18}\r\nLunch on Friday?\r\n"),
        (
            "body.peek[header.fields (Message-ID)]",
            b"BODY[HEADER.FIELDS (Message-ID)] {31}\r\nMessage-ID: <1@example.com>\r\n\r\n",
        ),
        ("BODY.PEEK[]<0.4>", b"BODY[]<0> {4}\r\nFrom"),
        ("BODY.PEEK[TEXT]<6.100>", b"BODY[TEXT]<6> {12}\r\non Friday?\r\n"),
        ("BODY.PEEK[TEXT]<500.10>", b"BODY[TEXT]<500> {0}\r\n"),
        ("RFC822.HEADER", b"RFC822.HEADER {%d}\r\n%s" % (len(PLAIN) - 18, PLAIN[:-18])),
        ("BODY.PEEK[2]", b"BODY[2] {0}\r\n"),
    ],
)
def test_fetch_sections_of_a_simple_message(selected, item, response):
    assert fetch(selected, f"f1 FETCH 1 ({item})") == b"* 1 FETCH (" + response + b")\r\n"


@pytest.mark.parametrize(
    ("section", "content"),
    [
        ("1", b"Sch=C3=B6ne Gr=C3=BC=C3=9Fe"),
        ("1.MIME", b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"),
        ("2", b"Subject: forwarded\r\nFrom: dave@example.com\r\n\r\ninner body"),
        ("2.HEADER", b"Subject: forwarded\r\nFrom: dave@example.com\r\n\r\n"),
        ("2.HEADER.FIELDS (SUBJECT)", b"Subject: forwarded\r\n\r\n"),
        ("2.TEXT", b"inner body"),
        ("2.1", b"inner body"),
        ("2.MIME", b"Content-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n"),
        ("3", b""),
        ("1.1", b""),
    ],
)
def test_fetch_sections_by_part_number(selected, section, content):
    data = fetch(selected, f"f1 FETCH 2 BODY.PEEK[{section}]")
    assert data == b"* 2 FETCH (BODY[%s] {%d}\r\n%s)\r\n" % (section.encode(), len(content), content)


def test_fetch_rfc822_and_rfc822_text_set_seen(selected, store):
    data = fetch(selected, "f1 FETCH 3 (RFC822.TEXT)")
    assert data == b"* 3 FETCH (RFC822.TEXT {21}\r\nThe numbers are in.\r\n FLAGS ($Work \\Answered \\Seen))\r\n"
    assert "\\Seen" in store.folders["INBOX"].find(3).flags


@pytest.mark.parametrize(
    ("macro", "items"),
    [
        ("FAST", [b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE"]),
        ("ALL", [b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE"]),
        ("FULL", [b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE", b"BODY"]),
    ],
)
def test_fetch_macros(selected, macro, items):
    data = fetch(selected, f"f1 FETCH 1 {macro}")
    assert re.findall(rb"(?:\(| )(FLAGS|INTERNALDATE|RFC822\.SIZE|ENVELOPE|BODY) [(\"0-9]", data) == items


def test_uid_fetch_names_messages_by_uid_and_always_says_the_uid(selected, store):
    send(selected, "s1 STORE 1 +FLAGS.SILENT (\\Deleted)")
    send(selected, "s2 EXPUNGE")
    assert fetch(selected, "f1 UID FETCH 3 FLAGS") == b"* 2 FETCH (UID 3 FLAGS ($Work \\Answered))\r\n"
    assert fetch(selected, "f2 UID FETCH 1 FLAGS") == b""  # gone: nothing, and OK
    assert fetch(selected, "f3 UID FETCH 9:* UID") == b"* 2 FETCH (UID 3)\r\n"  # n:* always names the last


def test_fetch_skips_a_message_that_vanished_meanwhile(selected, store):
    del store.folders["INBOX"].messages[0]
    data = send(selected, "f1 FETCH 1:2 (UID BODY.PEEK[TEXT]<0.5>)")
    assert data == b"* 2 FETCH (UID 2 BODY[TEXT]<0> {5}\r\npream)\r\nf1 OK FETCH completed\r\n"


def test_a_read_that_fails_unexpectedly_is_a_serverbug_and_the_session_goes_on(selected, store, caplog, monkeypatch):
    folder = store.accounts[0].opened[0]

    def broken_read(uid: int) -> bytes:
        raise OSError("I/O error")

    monkeypatch.setattr(folder, "read", broken_read)
    assert send(selected, "f1 FETCH 1 BODY.PEEK[]") == b"f1 NO [SERVERBUG] Internal error, try again\r\n"
    assert "I/O error" in caplog.text
    assert fetch(selected, "f2 FETCH 1 UID") == b"* 1 FETCH (UID 1)\r\n"


@pytest.mark.parametrize(
    "item",
    [
        "BODY[HEADER.FIELDS]",
        "BODY[HEADER.FIELDS ()]",
        "BODY[MIME]",
        "BODY[0]",
        "BODY[1.TEXT.HEADER]",
        "BODY[]<1>",
        "BINARY[1.TEXT]",
        "BINARY.SIZE[1]<0.5>",
        "(FLAGS",
        "()",
    ],
)
def test_malformed_fetch_items_are_bad(selected, item):
    assert last_line(send(selected, f"f1 FETCH 1 {item}")).startswith(b"f1 BAD")


def test_fetch_binary_undoes_the_transfer_encoding(selected, store):
    store.deliver(
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        b"AAEC/w==\r\n--b\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n--b--\r\n"
    )
    send(selected, "n1 NOOP")
    assert fetch(selected, "f1 FETCH 4 (BINARY.SIZE[1] BINARY.PEEK[1])") == (
        b"* 4 FETCH (BINARY.SIZE[1] 4 BINARY[1] ~{4}\r\n\x00\x01\x02\xff)\r\n"
    )
    assert fetch(selected, "f2 FETCH 2 BINARY.PEEK[1]<0.7>") == "* 2 FETCH (BINARY[1]<0> ~{7}\r\nSchöne)\r\n".encode()
    assert send(selected, "f3 FETCH 4 BINARY.PEEK[2]") == (
        b"f3 NO [UNKNOWN-CTE] Cannot decode this part's transfer encoding\r\n"
    )


def test_fetch_binary_without_peek_sets_seen(selected, store):
    fetch(selected, "f1 FETCH 2 BINARY[]")
    assert "\\Seen" in store.folders["INBOX"].find(2).flags


# STORE.


def test_store_adds_removes_and_replaces_flags(selected, store):
    assert send(selected, "s1 STORE 1:2 +FLAGS (\\Deleted $Junk)") == (
        b"* 1 FETCH (FLAGS ($Junk \\Deleted \\Seen))\r\n* 2 FETCH (FLAGS ($Junk \\Deleted \\Flagged))\r\n"
        b"s1 OK STORE completed\r\n"
    )
    assert (
        send(selected, "s2 STORE 2 -FLAGS \\Deleted")
        == b"* 2 FETCH (FLAGS ($Junk \\Flagged))\r\ns2 OK STORE completed\r\n"
    )
    assert send(selected, "s3 UID STORE 3 FLAGS (\\seen)") == (
        b"* 3 FETCH (UID 3 FLAGS (\\Seen))\r\ns3 OK UID STORE completed\r\n"
    )
    assert store.folders["INBOX"].find(3).flags == {"\\Seen"}


def test_store_silent_sends_no_fetch(selected, store):
    assert send(selected, "s1 STORE 1 +FLAGS.SILENT (\\Flagged)") == b"s1 OK STORE completed\r\n"
    assert store.folders["INBOX"].find(1).flags == {"\\Seen", "\\Flagged"}


@pytest.mark.parametrize("command", ["STORE 1 FLAGZ (\\Seen)", "STORE 1 +FLAGS (\\Bogus)", "STORE 1 +FLAGS (\\Recent)"])
def test_malformed_store_is_bad(selected, command):
    assert last_line(send(selected, f"s1 {command}")).startswith(b"s1 BAD")


# COPY, MOVE, EXPUNGE.


def test_copy_says_the_new_uids(selected, store):
    data = send(selected, "c1 COPY 2:3 Archive")
    assert data == b"c1 OK [COPYUID %d 2:3 1:2] COPY completed\r\n" % store.folders["Archive"].uidvalidity
    assert len(store.folders["Archive"].messages) == 2
    assert len(store.folders["INBOX"].messages) == 3


def test_copy_into_the_selected_folder_reports_the_copies_as_existing(selected):
    assert send(selected, "c1 COPY 1 INBOX").startswith(b"* 4 EXISTS\r\nc1 OK [COPYUID ")


def test_copy_to_a_missing_folder_asks_to_create_it(selected):
    assert send(selected, "c1 COPY 1 Nowhere") == b"c1 NO [TRYCREATE] No such folder\r\n"


def test_copy_over_quota_is_refused(selected, store):
    store.limit_octets = store.used_octets() + 10
    assert send(selected, "c1 UID COPY 1:* Archive") == b"c1 NO [OVERQUOTA] Mailbox is full\r\n"
    assert store.folders["Archive"].messages == []


def test_move_reports_copyuid_then_expunges(selected, store):
    data = send(selected, "m1 MOVE 1,3 Trash")
    uidvalidity = store.folders["Trash"].uidvalidity
    assert data == (
        b"* OK [COPYUID %d 1,3 1:2] Moved\r\n* 3 EXPUNGE\r\n* 1 EXPUNGE\r\nm1 OK MOVE completed\r\n" % uidvalidity
    )
    assert [m.uid for m in store.folders["INBOX"].messages] == [2]
    assert fetch(selected, "f1 FETCH 1 UID") == b"* 1 FETCH (UID 2)\r\n"


def test_uid_move_in_a_read_only_folder_is_refused(logged_in):
    send(logged_in, "s1 EXAMINE INBOX")
    assert last_line(send(logged_in, "m1 UID MOVE 1 Trash")).startswith(b"m1 NO [READ-ONLY]")


def test_expunge_removes_deleted_messages_highest_number_first(selected, store):
    send(selected, "s1 STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    send(selected, "s2 STORE 2 -FLAGS.SILENT (\\Deleted)")
    assert send(selected, "e1 EXPUNGE") == b"* 3 EXPUNGE\r\n* 1 EXPUNGE\r\ne1 OK EXPUNGE completed\r\n"
    assert [m.uid for m in store.folders["INBOX"].messages] == [2]


def test_uid_expunge_removes_only_the_named_messages(selected, store):
    send(selected, "s1 STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    assert send(selected, "e1 UID EXPUNGE 2:3") == b"* 3 EXPUNGE\r\n* 2 EXPUNGE\r\ne1 OK UID EXPUNGE completed\r\n"
    assert [m.uid for m in store.folders["INBOX"].messages] == [1]


# SEARCH.


@pytest.mark.parametrize(
    ("criteria", "numbers"),
    [
        ("ALL", "1 2 3"),
        ("SEEN", "1"),
        ("UNSEEN", "2 3"),
        ("FLAGGED", "2"),
        ("UNFLAGGED", "1 3"),
        ("ANSWERED", "3"),
        ("UNANSWERED", "1 2"),
        ("DELETED", ""),
        ("UNDELETED", "1 2 3"),
        ("DRAFT", ""),
        ("UNDRAFT", "1 2 3"),
        ("NEW", ""),
        ("OLD", "1 2 3"),
        ("RECENT", ""),
        ("KEYWORD $work", "3"),
        ("UNKEYWORD $Work", "1 2"),
        ("FROM bob", "1"),
        ("FROM EXAMPLE.COM", "1 2 3"),
        ("TO alice", "1 2 3"),
        ("CC carol", "3"),
        ("BCC anyone", ""),
        ("SUBJECT hello", "1"),
        ('SUBJECT "grüße"', "2"),
        ("SUBJECT {6+}\r\ngrüß", "2"),
        ("HEADER X-Priority 1", "3"),
        ('HEADER X-Priority ""', "3"),
        ("HEADER Message-ID example", "1"),
        ("BODY friday", "1"),
        ('BODY "schöne"', "2"),
        ("BODY forwarded", ""),
        ("TEXT forwarded", ""),
        ("TEXT budget", "3"),
        ('TEXT "inner body"', "2"),
        ("BEFORE 1-Feb-2026", "1"),
        ("ON 15-Jan-2026", "1"),
        ("ON 20-feb-2026", "2 3"),
        ("SINCE 16-Jan-2026", "2 3"),
        ('SINCE "20-Feb-2026"', "2 3"),
        ("SENTBEFORE 1-Jan-2000", "1"),
        ("SENTON 8-Feb-1994", ""),
        ("SENTON 7-Feb-1994", "1"),
        ("SENTSINCE 10-Feb-2026", "2 3"),
        ("LARGER 169", "2"),
        ("SMALLER 169", "3"),
        ("2:*", "2 3"),
        ("1,3", "1 3"),
        ("*", "3"),
        ("UID 2", "2"),
        ("UID 1:*", "1 2 3"),
        ("NOT SEEN", "2 3"),
        ("OR FLAGGED ANSWERED", "2 3"),
        ("OR (SEEN FROM bob) KEYWORD $Work", "1 3"),
        ("(UNSEEN TO alice) NOT FLAGGED", "3"),
        ("NOT (OR SEEN FLAGGED)", "3"),
        ("CHARSET UTF-8 SUBJECT gr", "2"),
        ("CHARSET us-ascii ALL", "1 2 3"),
    ],
)
def test_search_keys(selected, criteria, numbers):
    data = send(selected, b"q1 SEARCH " + criteria.encode() + b"\r\n")
    expected = b"* SEARCH" + (b" " + numbers.encode() if numbers else b"")
    assert data == expected + b"\r\nq1 OK SEARCH completed\r\n"


def test_uid_search_answers_with_uids(selected):
    send(selected, "s1 STORE 1 +FLAGS.SILENT (\\Deleted)")
    send(selected, "e1 EXPUNGE")
    assert send(selected, "q1 UID SEARCH UNSEEN") == b"* SEARCH 2 3\r\nq1 OK UID SEARCH completed\r\n"


def test_esearch_returns_min_max_count_and_all(selected):
    assert untagged_lines(send(selected, "q1 SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN")) == [
        b'* ESEARCH (TAG "q1") MIN 2 MAX 3 COUNT 2 ALL 2:3'
    ]
    assert untagged_lines(send(selected, "q2 UID SEARCH RETURN () ALL")) == [b'* ESEARCH (TAG "q2") UID ALL 1:3']
    assert untagged_lines(send(selected, "q3 SEARCH RETURN (COUNT MIN) DRAFT")) == [b'* ESEARCH (TAG "q3") COUNT 0']


def test_search_in_an_unknown_charset_is_refused(selected):
    assert (
        send(selected, "q1 SEARCH CHARSET KOI8-R ALL") == b"q1 NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset\r\n"
    )


@pytest.mark.parametrize(
    "criteria", ["NOT " * 10_000 + "ALL", "OR ALL " * 8_000 + "ALL", "(NOT " * 60 + "ALL" + ")" * 60]
)
def test_deeply_nested_search_keys_are_bad_not_a_crash(selected, criteria):
    assert send(selected, f"q1 SEARCH {criteria}") == b"q1 BAD Search keys nested too deeply\r\n"


@pytest.mark.parametrize(
    "criteria",
    ["", "BOGUS", "FROM", "OR SEEN", "BEFORE 32-Jan-2026", "BEFORE 1-Foo-2026", "LARGER x", "UID x", "(SEEN"],
)
def test_malformed_search_is_bad(selected, criteria):
    assert last_line(send(selected, f"q1 SEARCH {criteria}")).startswith(b"q1 BAD")
