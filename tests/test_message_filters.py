"""The Filters tab's decisions without sockets: attachments found, judged and stripped; virus and spam answers."""

from __future__ import annotations

import dataclasses
from email import message_from_bytes
from email import policy as email_policy

import pytest

from servers import message_filters, replies
from servers.content_checks import clamd_result, parse_http_url, parse_scanner_address
from servers.message_filters import (
    DEFAULT_FORBIDDEN_EXTENSIONS,
    DEFAULT_FORBIDDEN_MIME_TYPES,
    AttachmentRules,
    file_extensions,
    forbidden_parts,
    mime_parts,
    removal_notice,
    strip_parts,
    walk_message,
    with_spam_headers,
)
from servers.smtp_policy import (
    ScanResult,
    attachment_verdict,
    reply_safe,
    spam_headers,
    spam_verdict,
    virus_reply,
)
from servers.snapshot import SmtpPolicy

pytestmark = pytest.mark.backend_independent

DEFAULT_RULES = AttachmentRules.from_settings(DEFAULT_FORBIDDEN_EXTENSIONS, DEFAULT_FORBIDDEN_MIME_TYPES, None)


def attachment(
    filename_params: str, content_type: str = "application/octet-stream", body: bytes = b"TVqQAAMA"
) -> bytes:
    return (
        f"Content-Type: {content_type}\r\nContent-Disposition: attachment; {filename_params}\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode() + body


def multipart(*parts: bytes, boundary: str = "b1", headers: bytes = b"From: bob@far.test\r\nSubject: s\r\n") -> bytes:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return (
        headers
        + f'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'.encode()
        + b"preamble\r\n"
        + body
        + b"--"
        + boundary.encode()
        + b"--\r\nepilogue\r\n"
    )


TEXT = b"Content-Type: text/plain\r\n\r\nHello Alice"


# -- file names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "extensions"),
    [
        ("invoice.pdf.exe", {"exe"}),
        ("INVOICE.PDF.EXE", {"exe"}),
        ("notes.exe.txt", {"txt"}),
        ("evil.exe.", {"exe"}),
        ("evil.exe . ", {"exe"}),
        ("C:\\Users\\x\\run.bat", {"bat"}),
        ("photo\u202egpj.exe", {"exe"}),  # shown as "photoexe.jpg"
        ("report.scr\x00.pdf", {"scr", "pdf"}),
        ("README", set()),
        (".js", {"js"}),
    ],
)
def test_a_file_name_has_the_extension_windows_would_run_it_as(filename, extensions):
    assert file_extensions(filename) == extensions


@pytest.mark.parametrize(
    "params",
    [
        "filename*=utf-8''Rechnung%20M%C3%A4rz.pdf.exe",  # RFC 2231
        "filename*0*=utf-8''Rechnung%20M%C3%A4rz.pdf;\r\n filename*1=.exe",  # RFC 2231 continuations
        'filename="=?utf-8?b?UmVjaG51bmcgTcOkcnoucGRmLmV4ZQ==?="',  # an encoded word (RFC 2047, not allowed but common)
    ],
)
def test_encoded_file_names_are_decoded_before_they_are_judged(params):
    [part] = mime_parts(multipart(TEXT, attachment(params)))[1:]

    assert part.filename == "Rechnung März.pdf.exe"
    [finding] = forbidden_parts([part], DEFAULT_RULES)
    assert finding.reason == "is a forbidden file type (.exe)"


def test_a_name_in_content_type_only_counts_too():
    raw = multipart(TEXT, b'Content-Type: application/octet-stream; name="setup.MSI"\r\n\r\nxx')
    [finding] = forbidden_parts(mime_parts(raw), DEFAULT_RULES)
    assert finding.name == "setup.MSI"


# -- the MIME tree ---------------------------------------------------------------------------------


def test_nested_multiparts_and_attached_messages_are_walked_to_their_leaves():
    inner_message = multipart(TEXT, attachment('filename="deep.js"'), boundary="inner")
    alternative = (
        b'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
        b"--alt\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
        b"--alt\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--alt--\r\n"
    )
    forwarded = b"Content-Type: message/rfc822\r\n\r\n" + inner_message
    raw = multipart(alternative, forwarded, attachment('filename="ok.pdf"', "application/pdf"))

    parts = mime_parts(raw)

    assert [(p.content_type, p.filename) for p in parts] == [
        ("text/plain", ""),
        ("text/html", ""),
        ("text/plain", ""),
        ("application/octet-stream", "deep.js"),
        ("application/pdf", "ok.pdf"),
    ]
    assert [f.name for f in forbidden_parts(parts, DEFAULT_RULES)] == ["deep.js"]


def test_a_forbidden_mime_type_is_found_with_or_without_a_file_name():
    inline = b"Content-Type: application/x-msdownload\r\n\r\nMZ"
    rules = dataclasses.replace(DEFAULT_RULES, mime_types=frozenset({"application/x-msdownload", "video/*"}))
    raw = multipart(TEXT, inline, attachment('filename="a.mp4"', "video/mp4"))

    assert [(f.name, f.reason) for f in forbidden_parts(mime_parts(raw), rules)] == [
        ("(unnamed application/x-msdownload part)", "is of a forbidden type (application/x-msdownload)"),
        ("a.mp4", "is of a forbidden type (video/mp4)"),
    ]


def test_the_size_limit_takes_an_attachment_of_exactly_its_size_and_refuses_one_octet_more():
    rules = AttachmentRules(max_size_bytes=3 * 1024)
    at_limit = attachment('filename="a.pdf"', body=b"A" * 4096)  # base64 of 3072 octets
    over = attachment('filename="b.pdf"', body=b"A" * 4096 + b"AAAA")  # 3075 octets

    sizes = [p.size for p in mime_parts(multipart(at_limit, over))]
    findings = forbidden_parts(mime_parts(multipart(at_limit, over)), rules)

    assert sizes == [3072, 3075]
    assert [(f.name, f.reason) for f in findings] == [("b.pdf", "is larger than 3 KB")]


def test_a_message_without_a_closing_boundary_still_has_its_last_part():
    raw = multipart(TEXT, attachment('filename="x.vbs"')).split(b"--b1--")[0]
    assert [p.filename for p in mime_parts(raw)] == ["", "x.vbs"]


# -- strip and notify ------------------------------------------------------------------------------


def test_stripping_replaces_only_the_forbidden_part_and_keeps_every_other_byte():
    bad = attachment('filename="invoice.pdf.exe"')
    good = attachment('filename="invoice.pdf"', "application/pdf", b"JVBERi0=")
    raw = multipart(TEXT, bad, good)
    [finding] = forbidden_parts(mime_parts(raw), DEFAULT_RULES)

    stripped = strip_parts(raw, [(finding.part, removal_notice(finding, "mx.lab.test"))])

    before, after = raw.split(bad)
    assert stripped.startswith(before) and stripped.endswith(after)
    message = message_from_bytes(stripped, policy=email_policy.default)
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/plain", "application/pdf"]
    assert parts[1].get_content() == (
        'The attachment "invoice.pdf.exe" (application/octet-stream, 1 KB) was removed by the mail server '
        "mx.lab.test: it is a forbidden file type (.exe).\r\n"
    )
    assert parts[2].get_filename() == "invoice.pdf"


def test_a_message_that_is_one_forbidden_attachment_keeps_its_own_header_fields():
    raw = b"From: bob@far.test\r\nSubject: run me\r\nMIME-Version: 1.0\r\n" + attachment('filename="a.hta"')
    [finding] = forbidden_parts(mime_parts(raw), DEFAULT_RULES)

    stripped = message_from_bytes(strip_parts(raw, [(finding.part, "removed\n")]), policy=email_policy.default)

    assert (stripped["Subject"], stripped["From"], stripped.get_content_type()) == (
        "run me",
        "bob@far.test",
        "text/plain",
    )
    assert stripped.get_content() == "removed\r\n"


# -- the verdicts ----------------------------------------------------------------------------------


def test_refuse_names_the_first_forbidden_file_strip_lists_them_all_and_off_looks_at_nothing():
    raw = multipart(TEXT, attachment('filename="one.exe"'), attachment('filename="two.js"'))
    parts = mime_parts(raw)
    policy = SmtpPolicy(attachment_rules=DEFAULT_RULES)

    refused = attachment_verdict(dataclasses.replace(policy, attachment_filter="refuse"), parts)
    stripped = attachment_verdict(dataclasses.replace(policy, attachment_filter="strip"), parts)

    assert refused.refusal == replies.ATTACHMENT_REFUSED.format(
        filename="one.exe", reason="is a forbidden file type (.exe)"
    )
    assert refused.refusal.startswith("554 5.7.1 ")
    assert stripped.refusal is None and [f.name for f in stripped.to_strip] == ["one.exe", "two.js"]
    assert attachment_verdict(policy, parts) == (None, ())


def test_a_message_with_more_parts_than_are_walked_is_refused_by_either_mode(monkeypatch):
    monkeypatch.setattr(message_filters, "MAX_PARTS", 3)
    policy = SmtpPolicy(attachment_rules=DEFAULT_RULES, attachment_filter="strip")

    three = walk_message(multipart(TEXT, TEXT, TEXT))
    four = walk_message(multipart(TEXT, TEXT, TEXT, TEXT))

    assert (len(three[0]), three[1], len(four[0]), four[1]) == (3, True, 3, False)
    assert attachment_verdict(policy, four[0], complete=four[1]).refusal == (
        "554 5.7.1 Message refused: more than 3 MIME parts to check"
    )
    assert attachment_verdict(policy, three[0], complete=three[1]) == (None, ())


def test_a_file_name_in_a_reply_is_printable_ascii_on_one_line():
    assert reply_safe('M\u00e4rz"\r\n.exe') == "M\\xe4rz???.exe"
    assert len(reply_safe("a" * 500)) == 120


def test_a_found_virus_is_refused_and_a_failed_scan_defers_only_when_closed():
    closed = SmtpPolicy(virus_scanner="tcp://127.0.0.1:3310", virus_scanner_failure="closed")
    open_ = dataclasses.replace(closed, virus_scanner_failure="open")

    assert virus_reply(open_, ScanResult(signature="Eicar-Signature")) == (
        "554 5.7.1 Message refused: virus found: Eicar-Signature"
    )
    assert virus_reply(closed, ScanResult(error="timeout")) == replies.VIRUS_SCANNER_UNAVAILABLE
    assert replies.VIRUS_SCANNER_UNAVAILABLE.startswith("451 4.7.1 ")
    assert virus_reply(open_, ScanResult(error="timeout")) is None
    assert virus_reply(closed, ScanResult()) is None


@pytest.mark.parametrize(
    ("score", "spam", "junk", "refused"),
    [(5.99, False, False, False), (6.0, True, False, False), (9.99, True, False, False), (10.0, True, True, False)],
)
def test_each_spam_threshold_is_reached_at_its_score(score, spam, junk, refused):
    verdict = spam_verdict(SmtpPolicy(spam_tag_score=6.0, spam_junk_score=10.0, spam_refuse_score=None), score)
    assert (verdict.spam, verdict.junk, verdict.refusal is not None) == (spam, junk, refused)


def test_the_refusal_threshold_answers_554_with_the_score_and_an_empty_threshold_is_off():
    policy = SmtpPolicy(spam_tag_score=None, spam_junk_score=None, spam_refuse_score=15.0)
    assert spam_verdict(policy, 15.0).refusal == "554 5.7.1 Message refused as spam (score 15.00)"
    assert spam_verdict(policy, 14.99) == (False, False, None)


def test_spam_headers_say_yes_or_no_as_spamassassin_does():
    policy = SmtpPolicy(spam_tag_score=6.0)
    assert spam_headers(policy, 7.5, spam_verdict(policy, 7.5)) == (
        b"X-Spam-Flag: YES\r\nX-Spam-Score: 7.50\r\nX-Spam-Status: Yes, score=7.50 required=6.00\r\n"
    )
    assert spam_headers(policy, 1, spam_verdict(policy, 1)) == (
        b"X-Spam-Score: 1.00\r\nX-Spam-Status: No, score=1.00 required=6.00\r\n"
    )


def test_spam_headers_replace_the_senders_own_and_the_subject_is_prefixed_once():
    raw = b"X-Spam-Flag: NO\r\nSubject: [SPAM] cheap\r\nX-Spam-Score:\r\n -5\r\nFrom: x@far.test\r\n\r\nbody\r\n"
    marked = with_spam_headers(raw, b"X-Spam-Flag: YES\r\n", "[SPAM]")
    assert marked == b"X-Spam-Flag: YES\r\nSubject: [SPAM] cheap\r\nFrom: x@far.test\r\n\r\nbody\r\n"

    plain = with_spam_headers(b"Subject: hi\r\n\r\nbody", b"X-Spam-Flag: YES\r\n", "[SPAM]")
    assert plain == b"X-Spam-Flag: YES\r\nSubject: [SPAM] hi\r\n\r\nbody"
    assert with_spam_headers(b"From: a@b\r\n\r\nx", b"", "[SPAM]") == b"From: a@b\r\nSubject: [SPAM]\r\n\r\nx"


# -- the scanners' addresses and answers -------------------------------------------------------------


def test_clamd_answers_read_as_clean_found_or_error():
    assert clamd_result(b"stream: OK\0") == ScanResult()
    assert clamd_result(b"stream: Win.Test.EICAR_HDB-1 FOUND\0") == ScanResult(signature="Win.Test.EICAR_HDB-1")
    assert clamd_result(b"INSTREAM size limit exceeded. ERROR\0").error == "INSTREAM size limit exceeded. ERROR"
    assert clamd_result(b"").error == "no answer"


def test_scanner_addresses_are_tcp_or_unix_and_rspamd_is_http():
    assert parse_scanner_address("tcp://127.0.0.1:3310") == ("tcp", "127.0.0.1", 3310)
    assert parse_scanner_address("tcp://[::1]:3310") == ("tcp", "::1", 3310)
    assert parse_scanner_address("unix:/run/clamav/clamd.ctl") == ("unix", "/run/clamav/clamd.ctl", 0)
    assert parse_http_url("http://127.0.0.1:11333") == ("127.0.0.1", 11333, "/")
    assert parse_http_url("http://rspamd.lab/scan/") == ("rspamd.lab", 80, "/scan/")
    for bad in ("127.0.0.1:3310", "tcp://host", "unix:relative", "tcp://h:99999"):
        with pytest.raises(ValueError):
            parse_scanner_address(bad)
    with pytest.raises(ValueError):
        parse_http_url("https://rspamd.lab")
