"""`make run`'s path end to end: first-run set-up, the whole stack in the foreground, one Ctrl-C."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import free_port, port_is_closed, read_greeting, wait_until

REPO_DIR = Path(__file__).resolve().parent.parent


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
        MAILCONSOLE_DOMAIN="firstrun.test",
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
    assert second.stdout == ""
    listing = manage(fresh_install, "smtpsvc", "list").stdout
    assert listing.count("Default SMTP Virtual Server") == 1
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
