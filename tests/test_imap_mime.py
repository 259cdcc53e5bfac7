"""ENVELOPE's addresses: the quick reading of plain addresses agrees with Python's RFC 5322 parser."""

from __future__ import annotations

import email.utils

import pytest

from servers.imap import mime


@pytest.mark.parametrize(
    "value",
    [
        "Bench Sender <bench@client.test>",
        "bench@client.test",
        "John Q. Public <jqp@example.org>",
        "Name<n@example.org>",
        "O'Brien <ob@example.org>",
        "=?utf-8?q?Gr=C3=BC=C3=9Fe?= <g@example.de>",
        "x.y+z@sub.example.com",
        # These need the full parser: the quick reading must leave them to it.
        "Bob  Two <b@example.org>",
        '"Quoted, Name" <q@example.org>',
        "a@example.org, c@example.org",
        "a@example.org (comment)",
        "<a@example.org>",
        "undisclosed-recipients:;",
    ],
)
def test_addresses_read_as_the_rfc_5322_parser_reads_them(value):
    assert mime._address_pairs(value) == email.utils.getaddresses([value])


def test_envelope_takes_the_first_of_repeated_fields_and_falls_back_to_from():
    header = b"Subject: one\r\nFrom: Bob <bob@example.org>\r\nSubject: two\r\nTo: a@example.org\r\n\r\n"

    assert mime.envelope(header) == (
        'NIL "one" (("Bob" NIL "bob" "example.org")) (("Bob" NIL "bob" "example.org")) '
        '(("Bob" NIL "bob" "example.org")) ((NIL NIL "a" "example.org")) NIL NIL NIL NIL'
    ).join("()")
