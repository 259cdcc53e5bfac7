"""Configuration changes reload a worker with session processes; they never get it killed.

A reload is forwarded to the session processes. Only the worker may write the server's heartbeat:
the supervisor takes the pid there for the worker's, and a foreign one looks like a hung worker.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from datetime import timedelta

import psutil
import pytest
from django.conf import settings
from django.utils import timezone

from servers import services, supervision
from servers.livestate import heartbeat_key, read_heartbeats, redis_client
from servers.models import VirtualServer
from tests.factories import make_mailbox, make_server
from tests.helpers import wait_until, worker_running
from tests.test_smtp_access import configure

pytestmark = [pytest.mark.usefixtures("supervised"), pytest.mark.backend_independent]

CHANGES = 50


def session_processes(server: VirtualServer) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(server.pid).children() if "--session-process" in p.cmdline()]
    except psutil.NoSuchProcess:
        return []


class Greeter(threading.Thread):
    """A client that connects over and over from several addresses and notes every greeting."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.done = threading.Event()
        self.greetings = 0
        self.failures: list[str] = []

    def run(self) -> None:
        n = 0
        while not self.done.is_set():
            n += 1
            address = f"127.0.0.{n % 8 + 1}"
            try:
                with socket.create_connection(
                    ("127.0.0.1", self.port), timeout=10, source_address=(address, 0)
                ) as sock:
                    line = sock.makefile("rb").readline()
                    sock.sendall(b"QUIT\r\n")
            except OSError as exc:
                self.failures.append(f"{address}: {exc!r}")
                continue
            if line.startswith(b"220 "):
                self.greetings += 1
            else:
                self.failures.append(f"{address}: {line!r}")


def test_fifty_configuration_changes_under_load_keep_the_worker_and_its_port():
    server = worker_running(make_server(domain="lab.test", start=True))
    make_mailbox(server, "alice")
    server = configure(server, worker_processes=2)
    wait_until(lambda: len(session_processes(server)) == 2, message="two session processes")
    pid = server.pid
    # A worker that has been up for a while: the supervisor gives a young one time to report, which
    # would hide a kill for the first seconds.
    VirtualServer.objects.filter(pk=server.pk).update(started_at=timezone.now() - timedelta(minutes=5))
    greeter = Greeter(server.port)
    greeter.start()

    for n in range(CHANGES):
        services.update_virtual_server(server, max_recipients_per_message=200 + n)

    server.refresh_from_db()
    beats_seen = set()

    def current_and_settled() -> bool:
        server.refresh_from_db()
        assert (server.pid, server.restart_count) == (pid, 0), f"the worker was replaced: {server.last_error}"
        beat = read_heartbeats(redis_client(), "smtp", [server.pk]).get(server.pk)
        if beat is not None:
            beats_seen.add(beat.pid)
        return (
            beat is not None
            and beat.config_version == server.config_version
            and beat.age_s < 1
            and (greeter.greetings >= 20)
        )

    wait_until(current_and_settled, timeout_s=15, message="the worker to run the last configuration")
    supervision.reconcile_node(settings.NODE_NAME)  # one more look by the supervisor, now
    greeter.done.set()
    greeter.join(timeout=15)

    server.refresh_from_db()
    assert server.pid == pid
    assert server.restart_count == 0
    assert psutil.pid_exists(pid)
    assert beats_seen == {pid}
    assert greeter.failures == []
    assert greeter.greetings >= 20


def test_a_heartbeat_naming_one_of_the_workers_session_processes_does_not_get_it_killed():
    server = worker_running(make_server(domain="lab.test", start=True))
    server = configure(server, worker_processes=2)
    children = wait_until(
        lambda: len(session_processes(server)) == 2 and session_processes(server), message="two session processes"
    )
    pid = server.pid
    VirtualServer.objects.filter(pk=server.pk).update(started_at=timezone.now() - timedelta(minutes=5))
    os.kill(pid, signal.SIGSTOP)  # so that it does not overwrite the heartbeat below at once
    try:
        redis_client().hset(heartbeat_key("smtp", server.pk), mapping={"pid": children[0].pid, "sent_at": time.time()})
        supervision.reconcile_node(settings.NODE_NAME)
    finally:
        os.kill(pid, signal.SIGCONT)

    server.refresh_from_db()
    assert (server.pid, server.restart_count) == (pid, 0)
    assert psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    worker_running(server)
