"""The Filters tab through a real SMTP session: attachments, the virus scanner, rspamd's score.

The decisions are tested at their boundaries without sockets in tests/test_message_filters.py;
here the adapter runs on a real socket (tests/smtp_inprocess.py), asks a clamd of our own
(tests/filter_helpers.FakeClamd, which flags EICAR: ClamAV's signatures cannot be downloaded
here), a fake rspamd that scores what a message asks for, and Debian's real rspamd. The supervised
worker's path is in tests/test_filters_worker.py.
"""

from __future__ import annotations

import dataclasses
import logging
import smtplib
from collections.abc import Iterator
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path

import pytest

from servers import content_checks, replies
from servers.content_checks import ContentChecks
from servers.message_filters import DEFAULT_FORBIDDEN_EXTENSIONS, DEFAULT_FORBIDDEN_MIME_TYPES, AttachmentRules
from servers.smtp import WorkerCounters
from servers.smtp_policy import ClientList
from tests.filter_helpers import EICAR, EICAR_SIGNATURE, FakeClamd, FakeRspamd, real_rspamd, rspamd_missing_reason
from tests.smtp_inprocess import lab_snapshot, serving

pytestmark = pytest.mark.backend_independent

RULES = AttachmentRules.from_settings(DEFAULT_FORBIDDEN_EXTENSIONS, DEFAULT_FORBIDDEN_MIME_TYPES, None)


def with_attachment(filename: str, payload: bytes = b"TVqQAAMAAAAEAAAA", encoding: str = "base64") -> bytes:
    return (
        b"From: bob@far.test\r\nTo: alice@lab.test\r\nSubject: papers\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="XyZ"\r\n\r\n'
        b"--XyZ\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        b"--XyZ\r\nContent-Type: application/octet-stream\r\n"
        + f'Content-Disposition: attachment; filename="{filename}"\r\n'.encode()
        + f"Content-Transfer-Encoding: {encoding}\r\n\r\n".encode()
        + payload
        + b"\r\n--XyZ--\r\n"
    )


def inbox(home: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted((home / "lab.test" / "alice" / "new").iterdir())]


def junk(home: Path) -> list[bytes]:
    folder = home / "lab.test" / "alice" / ".Junk" / "new"
    return [path.read_bytes() for path in sorted(folder.iterdir())] if folder.exists() else []


def send(port: int, message: bytes, *, sender: str = "bob@far.test") -> tuple[int, str]:
    """DATA's reply to one message (250 or the refusal)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.ehlo("client.test")
        smtp.mail(sender)
        assert smtp.rcpt("alice@lab.test")[0] == 250
        code, text = smtp.data(message)
        return code, f"{code} {text.decode()}"


# -- attachments -----------------------------------------------------------------------------------


def test_refuse_answers_554_naming_the_file_and_stores_nothing(tmp_path, caplog):
    snapshot = lab_snapshot(tmp_path, attachment_filter="refuse", attachment_rules=RULES)

    with caplog.at_level(logging.INFO, logger="servers.smtp"), serving(snapshot) as port:
        code, reply = send(port, with_attachment("invoice.pdf.exe"))

    assert reply == replies.ATTACHMENT_REFUSED.format(
        filename="invoice.pdf.exe", reason="is a forbidden file type (.exe)"
    )
    assert inbox(tmp_path) == []
    assert any("refused (attachment)" in r.message and "invoice.pdf.exe" in r.message for r in caplog.records)


def test_strip_and_notify_stores_the_message_with_a_notice_in_the_files_place(tmp_path, caplog):
    snapshot = lab_snapshot(tmp_path, attachment_filter="strip", attachment_rules=RULES)
    sent = with_attachment("Setup.EXE..")

    with caplog.at_level(logging.INFO, logger="servers.smtp"), serving(snapshot) as port:
        assert send(port, sent)[0] == 250

    [stored] = inbox(tmp_path)
    head, _, tail = sent.partition(b"--XyZ\r\nContent-Type: application/octet-stream")
    assert head in stored and stored.endswith(b"\r\n--XyZ--\r\n")  # the rest as it came
    message = message_from_bytes(stored, policy=email_policy.default)
    notice = list(message.iter_parts())[1]
    assert notice.get_content_type() == "text/plain"
    assert '"Setup.EXE.."' in notice.get_content() and "forbidden file type (.exe)" in notice.get_content()
    assert b"TVqQAAMAAAAEAAAA" not in stored
    assert any("accepted (attachment_stripped)" in r.message for r in caplog.records)


def test_an_allowed_attachment_passes_untouched(tmp_path):
    snapshot = lab_snapshot(tmp_path, attachment_filter="refuse", attachment_rules=RULES)
    sent = with_attachment("invoice.exe.pdf")

    with serving(snapshot) as port:
        assert send(port, sent)[0] == 250

    [stored] = inbox(tmp_path)
    assert stored.endswith(sent)


def test_relay_list_clients_are_not_filtered(tmp_path):
    snapshot = lab_snapshot(
        tmp_path,
        attachment_filter="refuse",
        attachment_rules=RULES,
        relay_list=ClientList.from_rules([("network", "127.0.0.0/8")]),
    )

    with serving(snapshot) as port:
        assert send(port, with_attachment("run.bat"))[0] == 250


def test_every_refusal_and_every_change_is_counted_by_its_reason(tmp_path):
    counters = WorkerCounters()
    with FakeClamd() as clamd, FakeRspamd() as rspamd:
        snapshot = lab_snapshot(
            tmp_path,
            attachment_filter="strip",
            attachment_rules=RULES,
            virus_scanner=clamd.address,
            rspamd_url=rspamd.url,
        )
        with serving(snapshot, content_checks=ContentChecks(), counters=counters) as port:
            send(port, with_attachment("a.exe"))
            send(port, with_attachment("eicar.txt", EICAR, "7bit"))
            send(port, scored(12))
            send(port, scored(30))

    assert counters.refusals == {"virus": 1}  # the default thresholds: 6 marks, 10 files in Junk, none refuses
    assert counters.filtered == {"attachment_stripped": 1, "junk": 2}


# -- the virus scanner -----------------------------------------------------------------------------


def test_a_virus_is_refused_with_554_naming_its_signature_over_tcp(tmp_path, caplog):
    with FakeClamd() as clamd:
        snapshot = lab_snapshot(tmp_path, virus_scanner=clamd.address)
        with (
            caplog.at_level(logging.INFO, logger="servers.smtp"),
            serving(snapshot, content_checks=ContentChecks()) as port,
        ):
            refused = send(port, with_attachment("eicar.com.txt", EICAR, "7bit"))
            clean = send(port, with_attachment("notes.txt", b"nothing to see", "7bit"))

    assert refused[1] == replies.VIRUS_FOUND.format(signature=EICAR_SIGNATURE)
    assert clean[0] == 250 and len(inbox(tmp_path)) == 1
    assert len(clamd.scanned) == 2 and EICAR in clamd.scanned[0]
    assert any("refused (virus)" in r.message for r in caplog.records)


def test_the_scanner_is_reached_over_a_unix_socket_too(tmp_path):
    with FakeClamd(unix_path=tmp_path / "clamd.sock") as clamd:
        snapshot = lab_snapshot(tmp_path / "home", virus_scanner=clamd.address)
        with serving(snapshot, content_checks=ContentChecks()) as port:
            assert send(port, with_attachment("e.txt", EICAR, "7bit"))[0] == 554


def test_a_scanner_that_fails_defers_when_closed_accepts_when_open_and_is_logged_once(tmp_path, caplog):
    with FakeClamd(mode="error") as clamd:
        snapshot = lab_snapshot(tmp_path, virus_scanner=clamd.address, virus_scanner_failure="closed")
        open_snapshot = dataclasses.replace(
            snapshot, policy=dataclasses.replace(snapshot.policy, virus_scanner_failure="open")
        )
        checks = ContentChecks()
        with caplog.at_level(logging.WARNING, logger="servers.content_checks"):
            with serving(snapshot, content_checks=checks) as port:
                assert send(port, with_attachment("a.txt", b"x", "7bit"))[1] == replies.VIRUS_SCANNER_UNAVAILABLE
                assert send(port, with_attachment("a.txt", b"x", "7bit"))[0] == 451
            with serving(open_snapshot, content_checks=checks) as port:
                assert send(port, with_attachment("a.txt", b"x", "7bit"))[0] == 250

    warnings = [r.message for r in caplog.records]
    assert len(warnings) == 1 and "Can't allocate memory ERROR" in warnings[0]
    assert checks.states[("clamd", clamd.address)][:2] == (False, "stream: Can't allocate memory ERROR")


def test_a_scanner_that_does_not_answer_in_time_counts_as_failed(tmp_path, monkeypatch):
    monkeypatch.setattr(content_checks, "VIRUS_SCAN_TIMEOUT_S", 0.5)
    with FakeClamd(mode="silent") as clamd:
        snapshot = lab_snapshot(tmp_path, virus_scanner=clamd.address, virus_scanner_failure="closed")
        with serving(snapshot, content_checks=ContentChecks()) as port:
            assert send(port, with_attachment("a.txt", b"x", "7bit"))[1] == replies.VIRUS_SCANNER_UNAVAILABLE


def test_nobody_listening_on_the_scanners_port_fails_open_by_default(tmp_path):
    snapshot = lab_snapshot(tmp_path, virus_scanner="tcp://127.0.0.1:1")
    with serving(snapshot, content_checks=ContentChecks()) as port:
        assert send(port, with_attachment("a.txt", EICAR, "7bit"))[0] == 250


# -- rspamd's score --------------------------------------------------------------------------------

SCORES = {"spam_tag_score": 6.0, "spam_junk_score": 10.0, "spam_refuse_score": 15.0}


def scored(score: float) -> bytes:
    return f"From: bob@far.test\r\nSubject: offer\r\n\r\nSCORE={score}\r\n".encode()


def test_each_score_threshold_marks_files_or_refuses_at_its_value(tmp_path, caplog):
    with FakeRspamd() as rspamd:
        snapshot = lab_snapshot(tmp_path, rspamd_url=rspamd.url, **SCORES)
        with (
            caplog.at_level(logging.INFO, logger="servers.smtp"),
            serving(snapshot, content_checks=ContentChecks()) as port,
        ):
            replies_by_score = {score: send(port, scored(score)) for score in (5.99, 6.0, 10.0, 14.99, 15.0)}

    assert {score: code for score, (code, _) in replies_by_score.items()} == {
        5.99: 250,
        6.0: 250,
        10.0: 250,
        14.99: 250,
        15.0: 554,
    }
    assert replies_by_score[15.0][1] == replies.SPAM_REFUSED.format(score="15.00")
    low, tagged = (message_from_bytes(m) for m in inbox(tmp_path))
    assert (low["X-Spam-Status"], low["X-Spam-Flag"], low["Subject"]) == ("No, score=5.99 required=6.00", None, "offer")
    assert (tagged["X-Spam-Flag"], tagged["Subject"]) == ("YES", "[SPAM] offer")
    assert [message_from_bytes(m)["X-Spam-Score"] for m in junk(tmp_path)] == ["10.00", "14.99"]
    assert sum("refused (spam)" in r.message for r in caplog.records) == 1
    headers, _ = rspamd.requests[0]
    assert (headers["From"], headers["Rcpt"], headers["IP"], headers["Helo"]) == (
        ["bob@far.test"],
        ["alice@lab.test"],
        ["127.0.0.1"],
        ["client.test"],
    )


def test_rspamd_unreachable_fails_open_and_is_logged_once(tmp_path, caplog):
    snapshot = lab_snapshot(tmp_path, rspamd_url="http://127.0.0.1:1", **SCORES)

    with (
        caplog.at_level(logging.WARNING, logger="servers.content_checks"),
        serving(snapshot, content_checks=ContentChecks()) as port,
    ):
        assert send(port, scored(20))[0] == 250
        assert send(port, scored(20))[0] == 250

    assert [r.message for r in caplog.records if "rspamd" in r.message][0].startswith("rspamd http://127.0.0.1:1")
    assert len(caplog.records) == 1
    assert all("X-Spam" not in m.decode() for m in inbox(tmp_path))


def test_with_no_rspamd_url_nothing_is_scored(tmp_path):
    with FakeRspamd() as rspamd:
        snapshot = lab_snapshot(tmp_path, **SCORES)
        with serving(snapshot, content_checks=ContentChecks()) as port:
            assert send(port, scored(20))[0] == 250
    assert rspamd.requests == []


@pytest.fixture
def rspamd_url(tmp_path_factory) -> Iterator[str]:
    reason = rspamd_missing_reason()
    if reason:
        pytest.skip(reason)
    with real_rspamd(tmp_path_factory.mktemp("rspamd")) as url:
        yield url


def test_a_real_rspamd_scores_gtube_for_refusal_and_a_plain_message_below_the_tag(tmp_path, rspamd_url):
    # GTUBE (the spam test string) makes rspamd answer its reject score, 15.
    gtube = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*" + b"GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
    plain = (
        b"From: Bob <bob@far.test>\r\nTo: alice@lab.test\r\nSubject: lunch\r\nMessage-ID: <1@far.test>\r\n"
        b"Date: Wed, 02 Dec 2026 12:00:00 +0000\r\n\r\nLunch at noon?\r\n"
    )
    snapshot = lab_snapshot(tmp_path, rspamd_url=rspamd_url, **SCORES)

    with serving(snapshot, content_checks=ContentChecks()) as port:
        refused = send(port, b"From: bob@far.test\r\nSubject: spam\r\n\r\n" + gtube + b"\r\n")
        accepted = send(port, plain)

    assert refused[1] == replies.SPAM_REFUSED.format(score="15.00")
    assert accepted[0] == 250
    [stored] = inbox(tmp_path)
    status = message_from_bytes(stored)["X-Spam-Status"]
    assert status.startswith("No, score=") and float(status.split("score=")[1].split()[0]) < 6.0
