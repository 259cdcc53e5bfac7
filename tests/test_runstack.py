"""`make run`'s path end to end: first-run set-up, the whole stack in the foreground, one Ctrl-C."""

from __future__ import annotations

import imaplib
import os
import re
import signal
import smtplib
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.helpers import free_port, port_is_closed, read_greeting, wait_until

REPO_DIR = Path(__file__).resolve().parent.parent
# Each test makes a fresh installation of its own on SQLite, whatever database the suite uses.
pytestmark = pytest.mark.backend_independent


@pytest.fixture
def fresh_install(tmp_path) -> dict[str, str]:
    """The environment of a new installation: SQLite and the embedded Redis, free ports."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "MAILCONSOLE_ADMIN_PASSWORD")
    }
    env.update(
        MAILCONSOLE_VAR_DIR=str(tmp_path / "var"),
        MAILCONSOLE_NODE=f"runstack-{os.getpid()}",
        MAILCONSOLE_REDIS_PORT=str(free_port()),
        MAILCONSOLE_HTTP_PORT=str(free_port()),
        MAILCONSOLE_SMTP_PORT=str(free_port()),
        MAILCONSOLE_POP3_PORT=str(free_port()),
        MAILCONSOLE_IMAP_PORT=str(free_port()),
        MAILCONSOLE_SUBMISSION_PORT=str(free_port()),
        MAILCONSOLE_DOMAIN="firstrun.test",
        MAILCONSOLE_HOSTNAME="localhost",
        PYTHONUNBUFFERED="1",
    )
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=120
    )


def http_ok(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start_stack(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as log:  # the process keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "manage.py", "runstack"], cwd=REPO_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
        )


def test_first_run_creates_the_admin_and_default_server_once(fresh_install):
    assert manage(fresh_install, "migrate", "--noinput").returncode == 0

    first = manage(fresh_install, "bootstrap")
    second = manage(fresh_install, "bootstrap")

    assert first.returncode == 0 and second.returncode == 0
    assert "Administrator: admin / " in first.stdout
    assert "Default SMTP Virtual Server" in first.stdout
    assert f"IMAP service: 127.0.0.1:{fresh_install['MAILCONSOLE_IMAP_PORT']}" in first.stdout
    assert f"Submission server: 127.0.0.1:{fresh_install['MAILCONSOLE_SUBMISSION_PORT']}" in first.stdout
    assert second.stdout == ""
    listing = manage(fresh_install, "smtpsvc", "list").stdout
    assert listing.count("Default SMTP Virtual Server") == 1
    assert listing.count("Submission") == 1
    assert f"127.0.0.1:{fresh_install['MAILCONSOLE_SUBMISSION_PORT']}" in listing
    assert f"127.0.0.1:{fresh_install['MAILCONSOLE_SMTP_PORT']}" in listing


def test_the_stack_runs_mail_in_and_stops_cleanly_on_one_ctrl_c(fresh_install, tmp_path):
    assert manage(fresh_install, "migrate", "--noinput").returncode == 0
    assert manage(fresh_install, "bootstrap").returncode == 0
    http_port = int(fresh_install["MAILCONSOLE_HTTP_PORT"])
    smtp_port = int(fresh_install["MAILCONSOLE_SMTP_PORT"])
    redis_port = int(fresh_install["MAILCONSOLE_REDIS_PORT"])
    drop = Path(fresh_install["MAILCONSOLE_VAR_DIR"], "mailroot", "default", "Drop")

    for round_number in (1, 2):
        stack = start_stack(fresh_install, tmp_path / "stack.log")
        try:
            wait_until(lambda: http_ok(http_port, "/healthz"), timeout_s=40, message="the web app")
            assert http_ok(http_port, "/admin/login/")
            wait_until(lambda: not port_is_closed(smtp_port), timeout_s=40, message="the default SMTP server")
            assert read_greeting(smtp_port).startswith(b"220 ")
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
                client.sendmail(
                    "someone@outside.test",
                    ["someone@firstrun.test"],
                    f"Subject: round {round_number}\r\n\r\nhi\r\n".encode(),
                )
            assert len(list(drop.glob("*.eml"))) == round_number
        finally:
            stack.send_signal(signal.SIGINT)
            code = stack.wait(timeout=60)
        assert code == 0, (tmp_path / "stack.log").read_text()
        for port in (http_port, smtp_port, redis_port):
            assert port_is_closed(port), f"port {port} still open after Ctrl-C\n" + (tmp_path / "stack.log").read_text()


def test_the_first_start_ends_with_a_banner_showing_where_to_sign_in_and_the_password(fresh_install, tmp_path):
    assert manage(fresh_install, "migrate", "--noinput").returncode == 0
    http_port = int(fresh_install["MAILCONSOLE_HTTP_PORT"])
    log_path = tmp_path / "stack.log"
    stack = start_stack(fresh_install, log_path)
    try:
        wait_until(lambda: "MailConsole is running." in log_path.read_text(), timeout_s=60, message="the banner")
        wait_until(lambda: "Stop:" in log_path.read_text(), timeout_s=10, message="the whole banner")
        banner = log_path.read_text().split("MailConsole is running.", 1)[1]
        assert f"Console:  http://127.0.0.1:{http_port}/ " in banner
        match = re.search(r"Sign in:  admin / (\S+)   \(shown only now", banner)
        assert match, banner
        assert f"SMTP 127.0.0.1:{fresh_install['MAILCONSOLE_SMTP_PORT']}" in banner
        # The password works; the periodic tasks (a reconcile every second here) log nothing at INFO.
        password = match.group(1)
        status = sign_in_status(http_port, "admin", password)
        assert status == 302
    finally:
        stack.send_signal(signal.SIGINT)
        assert stack.wait(timeout=60) == 0, log_path.read_text()
    log = log_path.read_text()
    assert " succeeded in " not in log and "Sending due task" not in log, log[-3000:]

    again = tmp_path / "again.log"
    stack = start_stack(fresh_install, again)
    try:
        wait_until(lambda: "Stop:" in again.read_text(), timeout_s=60, message="the second banner")
        assert "lost the password? .venv/bin/python manage.py changepassword admin" in again.read_text()
        assert password not in again.read_text()
    finally:
        stack.send_signal(signal.SIGINT)
        assert stack.wait(timeout=60) == 0, again.read_text()


def sign_in_status(port: int, username: str, password: str) -> int:
    """POST the console's sign-in form as a browser does (CSRF cookie and token); the status without redirects."""
    import http.cookiejar
    import urllib.parse

    jar = http.cookiejar.CookieJar()

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)
    url = f"http://127.0.0.1:{port}/console/login/"
    opener.open(url, timeout=10).read()
    token = next(cookie.value for cookie in jar if cookie.name == "csrftoken")
    body = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token})
    request = urllib.request.Request(url, data=body.encode(), headers={"Referer": url})
    try:
        return opener.open(request, timeout=10).status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_mail_client_configured_only_from_the_autoconfig_answer_sends_and_reads_mail(fresh_install, tmp_path):
    assert manage(fresh_install, "migrate", "--noinput").returncode == 0
    assert manage(fresh_install, "bootstrap").returncode == 0
    added = manage(fresh_install, "winpop", "add", "helena@firstrun.test", "/createuser", "Autoconf123")
    assert added.returncode == 0, added.stderr
    http_port = int(fresh_install["MAILCONSOLE_HTTP_PORT"])
    log_path = tmp_path / "stack.log"
    stack = start_stack(fresh_install, log_path)
    try:
        wait_until(lambda: http_ok(http_port, "/healthz"), timeout_s=40, message="the web app")
        url = f"http://127.0.0.1:{http_port}/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=helena@firstrun.test"
        with urllib.request.urlopen(url, timeout=10) as response:
            provider = ET.fromstring(response.read()).find("emailProvider")
        incoming = next(s for s in provider.findall("incomingServer") if s.get("type") == "imap")
        outgoing = provider.find("outgoingServer")
        # The submission server is listed first: it is the one that requires sign-in.
        assert int(outgoing.findtext("port")) == int(fresh_install["MAILCONSOLE_SUBMISSION_PORT"])
        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE  # self-signed certificates

        def smtp_client() -> smtplib.SMTP:
            host, port = outgoing.findtext("hostname"), int(outgoing.findtext("port"))
            if outgoing.findtext("socketType") == "SSL":
                return smtplib.SMTP_SSL(host, port, timeout=10, context=insecure)
            client = smtplib.SMTP(host, port, timeout=10)
            client.starttls(context=insecure)
            return client

        def imap_client() -> imaplib.IMAP4:
            host, port = incoming.findtext("hostname"), int(incoming.findtext("port"))
            if incoming.findtext("socketType") == "SSL":
                return imaplib.IMAP4_SSL(host, port, ssl_context=insecure, timeout=10)
            client = imaplib.IMAP4(host, port, timeout=10)
            client.starttls(ssl_context=insecure)
            return client

        wait_until(
            lambda: not port_is_closed(int(outgoing.findtext("port"))), timeout_s=40, message="the submission server"
        )
        wait_until(lambda: not port_is_closed(int(incoming.findtext("port"))), timeout_s=40, message="IMAP")
        with smtp_client() as smtp:
            with pytest.raises(smtplib.SMTPSenderRefused):
                smtp.sendmail("helena@firstrun.test", ["helena@firstrun.test"], b"Subject: anonymous\r\n\r\nno\r\n")
            smtp.login(outgoing.findtext("username"), "Autoconf123")
            smtp.sendmail("helena@firstrun.test", ["helena@firstrun.test"], b"Subject: via autoconfig\r\n\r\nhello\r\n")

        def inbox_subjects() -> list[bytes]:
            client = imap_client()
            try:
                client.login(incoming.findtext("username"), "Autoconf123")
                client.select("INBOX")
                _, data = client.search(None, "ALL")
                subjects = []
                for number in data[0].split():
                    _, parts = client.fetch(number, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                    first = parts[0]
                    assert isinstance(first, tuple)
                    subjects.append(first[1].strip())
                return subjects
            finally:
                client.logout()

        wait_until(lambda: b"Subject: via autoconfig" in inbox_subjects(), timeout_s=30, message="the message in IMAP")
    finally:
        stack.send_signal(signal.SIGINT)
        assert stack.wait(timeout=60) == 0, log_path.read_text()
