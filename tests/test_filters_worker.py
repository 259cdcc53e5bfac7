"""The Filters tab in the supervised SMTP worker process, with swaks and smtplib on loopback.

One real-process test per action: attachment refused and stripped, a virus refused (a clamd of our
own, tests/filter_helpers.FakeClamd: ClamAV's signatures cannot be downloaded here), spam filed in
Junk and refused at its thresholds (a fake rspamd, and Debian's rspamd run on loopback), and
signed-in users left alone.
"""

from __future__ import annotations

import smtplib
import subprocess
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path

import pytest

from servers import replies, services
from servers.livestate import read_scanner_state, redis_client
from servers.models import Mailbox, VirtualServer
from tests.factories import PASSWORD, make_mailbox, make_server
from tests.filter_helpers import (
    EICAR,
    EICAR_SIGNATURE,
    FakeClamd,
    FakeRspamd,
    real_rspamd,
    rspamd_missing_reason,
)
from tests.helpers import worker_running

pytestmark = pytest.mark.usefixtures("supervised")


@pytest.fixture
def server() -> VirtualServer:
    srv = worker_running(make_server(domain="lab.test", start=True))
    make_mailbox(srv, "alice")
    return worker_running(srv)


def configure(server: VirtualServer, **changes) -> VirtualServer:
    services.update_virtual_server(server, **changes)
    return worker_running(server)


def alice_folder(folder: str = "") -> list[bytes]:
    maildir = Mailbox.objects.get(local_part="alice").maildir
    new = (maildir / f".{folder}" / "new") if folder else (maildir / "new")
    return [path.read_bytes() for path in sorted(new.iterdir())] if new.exists() else []


def swaks(server: VirtualServer, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{server.port}", "--from", "bob@far.test", "--to", "alice@lab.test", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def attachment_args(tmp_path: Path, name: str, content: bytes) -> list[str]:
    path = tmp_path / "payload.bin"
    path.write_bytes(content)
    return ["--attach-type", "application/octet-stream", "--attach-name", name, "--attach", f"@{path}"]


def test_the_worker_refuses_a_forbidden_attachment_naming_it(server, tmp_path):
    configure(server, attachment_filter="refuse")

    result = swaks(server, *attachment_args(tmp_path, "invoice.pdf.exe", b"MZ\x90\x00"))

    expected = replies.ATTACHMENT_REFUSED.format(filename="invoice.pdf.exe", reason="is a forbidden file type (.exe)")
    assert expected in result.stdout, result.stdout
    assert alice_folder() == []


def test_the_worker_strips_a_forbidden_attachment_and_keeps_the_message(server, tmp_path):
    configure(server, attachment_filter="strip", max_attachment_size_kb=1)

    small = swaks(server, *attachment_args(tmp_path, "notes.txt", b"x" * 1024))
    big = swaks(server, *attachment_args(tmp_path, "notes.txt", b"x" * 1025))

    assert "250 2.0.0" in small.stdout and "250 2.0.0" in big.stdout, small.stdout + big.stdout
    kept, stripped = (message_from_bytes(m) for m in alice_folder())
    assert [p.get_filename() for p in kept.walk()][-1] == "notes.txt"
    notice = [p for p in stripped.walk() if p.get_content_type() == "text/plain"][-1]
    assert "is larger than 1 KB" in notice.get_payload(decode=True).decode()


def test_the_worker_refuses_a_virus_and_reports_the_scanner_reachable(server):
    with FakeClamd() as clamd:
        configure(server, virus_scanner=clamd.address, virus_scanner_failure="closed")
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
            client.ehlo("client.test")
            client.mail("bob@far.test")
            client.rcpt("alice@lab.test")
            code, text = client.data(b"Subject: test\r\n\r\n" + EICAR + b"\r\n")

    assert f"{code} {text.decode()}" == replies.VIRUS_FOUND.format(signature=EICAR_SIGNATURE)
    state = read_scanner_state(redis_client(), "clamd", clamd.address)
    assert state is not None and state.reachable


def test_the_worker_files_spam_in_junk_and_refuses_it_above_the_last_threshold(server):
    with FakeRspamd() as rspamd:
        configure(server, rspamd_url=rspamd.url, spam_junk_score=10, spam_refuse_score=15)
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
            client.ehlo("client.test")
            assert client.sendmail("bob@far.test", ["alice@lab.test"], b"Subject: a\r\n\r\nSCORE=10\r\n") == {}
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail("bob@far.test", ["alice@lab.test"], b"Subject: b\r\n\r\nSCORE=15\r\n")

    assert refused.value.smtp_code == 554
    [junk] = alice_folder("Junk")
    assert message_from_bytes(junk)["Subject"] == "[SPAM] a" and alice_folder() == []


def test_signed_in_users_are_not_filtered(server, tmp_path):
    configure(server, attachment_filter="refuse")
    result = swaks(
        server,
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice@lab.test",
        "--auth-password",
        PASSWORD,
        "--from",
        "alice@lab.test",
        *attachment_args(tmp_path, "tool.exe", b"MZ"),
    )
    assert "250 2.0.0" in result.stdout, result.stdout
    assert len(alice_folder()) == 1  # stored before the 250


def test_session_processes_scan_too(server):
    with FakeClamd() as clamd:
        configure(server, worker_processes=2, virus_scanner=clamd.address)
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
            client.ehlo("client.test")
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail("bob@far.test", ["alice@lab.test"], b"Subject: t\r\n\r\n" + EICAR + b"\r\n")

    assert refused.value.smtp_code == 554 and EICAR_SIGNATURE in refused.value.smtp_error.decode()


@pytest.fixture
def rspamd_url(tmp_path_factory) -> Iterator[str]:
    reason = rspamd_missing_reason()
    if reason:
        pytest.skip(reason)
    with real_rspamd(tmp_path_factory.mktemp("rspamd")) as url:
        yield url


def test_the_worker_asks_a_real_rspamd_and_refuses_gtube(server, rspamd_url):
    configure(server, rspamd_url=rspamd_url, spam_refuse_score=15)
    gtube = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*" + b"GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

    spam = swaks(server, "--header", "Subject: gtube", "--body", gtube.decode())
    ham = swaks(server, "--header", "Subject: lunch", "--body", "Lunch at noon?")

    assert replies.SPAM_REFUSED.format(score="15.00") in spam.stdout, spam.stdout
    assert "250 2.0.0" in ham.stdout, ham.stdout
    [stored] = alice_folder()
    assert message_from_bytes(stored)["X-Spam-Status"].startswith("No, score=")
