"""A dead worker can be diagnosed: exit status and log tail in the API, the console and the log.

A failed TLS handshake costs one log line with the client and the reason, not a traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from servers import services, supervision
from servers.livestate import heartbeat_key, redis_client
from servers.models import ObservedState, Pop3Service, VirtualServer
from tests.factories import make_pop3_service, make_server
from tests.helpers import wait_until

JUNK = b"this is not a TLS client hello\r\n" * 4


def worker_log(kind: str, unit_id: int) -> Path:
    return settings.VAR_DIR / "log" / f"{kind}d-{unit_id}.log"


def supervisor_log() -> Path:
    """Where the Celery worker (the node's supervisor) logs."""
    return settings.VAR_DIR / "log" / "celery-worker.log"


def running_server() -> VirtualServer:
    server = make_server(domain="lab.test", start=True)

    def up() -> bool:
        server.refresh_from_db()
        return server.state == ObservedState.RUNNING

    wait_until(up, timeout_s=20, message="the server to run")
    return server


@pytest.fixture
def admin_api(db, django_user_model) -> APIClient:
    admin = django_user_model.objects.create_superuser("root", "root@example.test", "a-long-admin-password")
    client = APIClient()
    client.force_authenticate(admin)
    return client


# -- exit status and log tail ---------------------------------------------------------------------


@pytest.mark.usefixtures("supervised")
@pytest.mark.backend_independent
def test_a_sigkilled_worker_shows_the_signal_and_its_last_log_lines_in_the_api_the_console_and_the_log(
    admin_api, client
):
    server = running_server()
    old_pid = server.pid

    os.kill(old_pid, signal.SIGKILL)

    def recorded() -> bool:
        server.refresh_from_db()
        return server.last_exit_at is not None

    wait_until(recorded, timeout_s=10, message="the exit to be recorded")
    assert server.last_exit_status == "killed by signal SIGKILL"
    assert f"pid {old_pid}" in server.last_exit_log  # the worker's own "listening on …, pid N" line
    assert len(server.last_exit_log.splitlines()) <= supervision.LOG_TAIL_LINES

    body = admin_api.get(f"/api/v1/servers/{server.pk}/").json()
    assert body["last_exit_status"] == "killed by signal SIGKILL"
    assert f"pid {old_pid}" in body["last_exit_log"]
    assert body["last_exit_at"]

    client.force_login(admin_api.handler._force_user)
    page = client.get(reverse("console:server", args=[server.pk])).content.decode()
    assert 'data-testid="last-exit-status">killed by signal SIGKILL<' in page
    assert f"pid {old_pid}" in page

    log_file = supervisor_log()
    line = f"worker process {old_pid} exited unexpectedly: killed by signal SIGKILL"
    text = wait_until(
        lambda: line in log_file.read_text(errors="replace") and log_file.read_text(),
        message="the supervisor's log line",
    )
    after = text[text.index(line) :]
    assert "  | " in after and f"pid {old_pid}" in after


@pytest.mark.usefixtures("supervised")
@pytest.mark.backend_independent
def test_a_hung_worker_killed_by_the_supervisor_is_recorded_as_such():
    server = running_server()
    old_pid = server.pid
    os.kill(old_pid, signal.SIGSTOP)  # hung: no more heartbeats
    # Make it look hung for long, without waiting out the heartbeat expiry.
    VirtualServer.objects.filter(pk=server.pk).update(started_at=timezone.now() - timedelta(minutes=5))
    redis_client().hset(heartbeat_key("smtp", server.pk), "sent_at", time.time() - 60)

    def recorded() -> bool:
        server.refresh_from_db()
        return server.last_exit_at is not None

    wait_until(recorded, timeout_s=10, message="the kill to be recorded")
    assert server.last_exit_status == "killed by signal SIGKILL"
    assert server.restart_count == 1
    line = f"worker process {old_pid} stopped sending heartbeats and was killed by the supervisor: killed by signal"
    wait_until(lambda: line in supervisor_log().read_text(errors="replace"), message="the supervisor's log line")


def test_the_schema_documents_the_exit_fields_as_read_only(admin_api):
    schema = admin_api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    properties = schema["components"]["schemas"]["VirtualServer"]["properties"]
    for name in ("last_exit_at", "last_exit_status", "last_exit_log"):
        assert properties[name]["readOnly"] is True
        assert properties[name]["description"]
    update = schema["components"]["schemas"]["PatchedVirtualServerUpdateRequest"]["properties"]
    assert "last_exit_status" not in update


def started_now():
    from django.utils import timezone

    return timezone.now()


def test_an_exit_the_supervisor_reaped_is_described_with_its_signal():
    started_at = started_now()
    process = subprocess.Popen(["sleep", "30"])
    supervision._spawned[process.pid] = process
    process.kill()
    wait_until(lambda: supervision.reap_children() or process.returncode is not None, message="the reap")

    assert supervision.exit_status(process.pid, started_at) == "killed by signal SIGKILL"


def test_a_zombie_of_another_parent_is_described_from_proc():
    started_at = started_now()
    # Leaving the `with` closes the pipe and waits for the killed parent.
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'raise SystemExit(3)'])\n"
            "print(child.pid, flush=True)\ntime.sleep(30)",
        ],
        stdout=subprocess.PIPE,
    ) as parent:
        try:
            pid = int(parent.stdout.readline())
            wait_until(lambda: psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, message="a zombie")

            assert supervision.exit_status(pid, started_at) == "exited with code 3 (it could not listen)"
        finally:
            parent.kill()


def test_an_exit_nobody_here_could_wait_for_is_called_unknown_honestly():
    started_at = started_now()
    process = subprocess.Popen(["true"])
    process.wait()  # reaped by someone other than the supervisor

    assert supervision.exit_status(process.pid, started_at) == ("exit status unknown (not a child of this supervisor)")


# -- TLS handshake failures -------------------------------------------------------------------------


def lines_until_reload(log: Path, start: int, version: int) -> list[str]:
    """The log lines written since offset `start`, up to the worker's reload to `version`."""
    marker = f"configuration version {version} loaded"
    text = wait_until(
        lambda: marker in log.read_text(errors="replace")[start:] and log.read_text(errors="replace"), message=marker
    )
    assert isinstance(text, str)
    return text[start:].split(marker)[0].splitlines()


def send_junk_after(sock: socket.socket, command: bytes, ok: bytes) -> None:
    reader = sock.makefile("rb")
    reader.readline()  # greeting
    if command == b"STARTTLS":
        sock.sendall(b"EHLO client.test\r\n")
        while not reader.readline().startswith(b"250 "):
            pass
    sock.sendall(command + b"\r\n")
    assert reader.readline().startswith(ok)
    sock.sendall(JUNK)
    sock.settimeout(10)
    with contextlib.suppress(OSError):
        while sock.recv(4096):
            pass


@pytest.mark.usefixtures("supervised")
@pytest.mark.backend_independent
def test_a_failed_starttls_handshake_is_one_log_line_with_the_client_and_the_reason():
    server = running_server()
    log = worker_log("smtp", server.pk)
    start = len(log.read_text(errors="replace"))

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        client_port = sock.getsockname()[1]
        send_junk_after(sock, b"STARTTLS", b"220")
    server = services.update_virtual_server(server, max_recipients_per_message=150)

    lines = lines_until_reload(log, start, VirtualServer.objects.get(pk=server.pk).config_version)
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    failures = [line for line in lines if "TLS handshake failed" in line]
    assert len(failures) == 1, "\n".join(lines)
    assert f"from 127.0.0.1:{client_port}: " in failures[0]
    assert failures[0].endswith("[SSL: WRONG_VERSION_NUMBER] wrong version number")


@pytest.mark.usefixtures("supervised")
@pytest.mark.backend_independent
def test_a_failed_stls_handshake_is_one_log_line_with_the_client_and_the_reason():
    pop3 = make_pop3_service()

    def up() -> bool:
        pop3.refresh_from_db()
        return pop3.state == ObservedState.RUNNING

    wait_until(up, timeout_s=20, message="POP3 to run")
    log = worker_log("pop3", pop3.pk)
    start = len(log.read_text(errors="replace"))

    with socket.create_connection(("127.0.0.1", pop3.port), timeout=10) as sock:
        client_port = sock.getsockname()[1]
        send_junk_after(sock, b"STLS", b"+OK")
    services.update_pop3_service(pop3, plaintext_requires_tls=not pop3.plaintext_requires_tls)

    lines = lines_until_reload(log, start, Pop3Service.objects.get(pk=pop3.pk).config_version)
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    failures = [line for line in lines if "TLS handshake failed" in line]
    assert len(failures) == 1, "\n".join(lines)
    assert f"from 127.0.0.1:{client_port}: " in failures[0]
    assert failures[0].endswith("[SSL: WRONG_VERSION_NUMBER] wrong version number")
