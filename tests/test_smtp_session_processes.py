"""A virtual server with several session processes (`worker_processes`), on real processes.

The supervised worker accepts and hands each connection to a session process chosen by the
client's address (servers.workers.dispatch). Loopback has all of 127.0.0.0/8, so the tests are
clients from several addresses.
"""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import zlib
from contextlib import ExitStack, closing

import psutil
import pytest
from django.conf import settings

from servers import replies, services
from servers.livestate import read_heartbeats, redis_client
from servers.models import ObservedState, VirtualServer
from tests.factories import PASSWORD, default_domain_of, make_mailbox, make_server
from tests.helpers import port_is_closed, read_greeting, wait_until, worker_running
from tests.test_smtp_access import configure

# Process handling, routing and counting: the single-process worker's database reads run on both backends.
pytestmark = [pytest.mark.usefixtures("supervised"), pytest.mark.backend_independent]

MESSAGE = b"Subject: spread\r\n\r\nbody\r\n"
CLIENT_ADDRESSES = [f"127.0.0.{n}" for n in range(1, 9)]


@pytest.fixture
def server() -> VirtualServer:
    srv = worker_running(make_server(domain="lab.test", start=True))
    make_mailbox(srv, "alice")
    configure(srv, worker_processes=2)
    # Connections go only to session processes that are ready (servers.workers.dispatch): a test that
    # counts where clients land must not start while one of them is still importing Django.
    wait_until(lambda: ready_session_processes(srv), message="two ready session processes")
    return srv


def session_processes(server: VirtualServer) -> list[psutil.Process]:
    server.refresh_from_db()
    try:
        return [p for p in psutil.Process(server.pid).children() if "--session-process" in p.cmdline()]
    except psutil.NoSuchProcess:
        return []


def ready_session_processes(server: VirtualServer) -> list[psutil.Process]:
    """The two session processes, once each has said in the worker's log that it serves (else [])."""
    children = session_processes(server)
    log_file = settings.VAR_DIR / "log" / f"smtpd-{server.pk}.log"
    log_text = log_file.read_text(errors="replace") if log_file.exists() else ""
    ready = [child for child in children if f" of smtp {server.pk}, pid {child.pid}" in log_text]
    return ready if len(ready) == 2 else []


def send_from(server: VirtualServer, address: str) -> None:
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10, source_address=(address, 0)) as client:
        assert client.sendmail("x@sender.test", ["alice@lab.test"], MESSAGE) == {}


def delivering_pids(server: VirtualServer) -> set[int]:
    """The processes that wrote alice's messages: a Maildir name holds the writer's pid (`.P<pid>R`)."""
    maildir = default_domain_of(server).mailboxes.get(local_part="alice").maildir
    return {int(name.split(".P", 1)[1].split("R", 1)[0]) for name in os.listdir(maildir / "new")}


def test_clients_are_spread_over_the_session_processes_and_all_mail_is_delivered(server):
    children = wait_until(lambda: ready_session_processes(server), message="two ready session processes")

    for address in CLIENT_ADDRESSES:
        send_from(server, address)

    assert delivering_pids(server) == {child.pid for child in children}
    assert len(os.listdir(server.default_domain.mailboxes.get(local_part="alice").maildir / "new")) == 8


def test_the_connection_limit_counts_the_sessions_of_every_process(server):
    configure(server, max_connections=2)
    first = smtplib.SMTP("127.0.0.1", server.port, timeout=10, source_address=("127.0.0.1", 0))
    second = smtplib.SMTP("127.0.0.1", server.port, timeout=10, source_address=("127.0.0.2", 0))
    assert first.noop()[0] == 250 and second.noop()[0] == 250

    refused = {read_greeting(server.port, host="127.0.0.1").decode().rstrip() for _ in range(3)}

    assert refused == {replies.TOO_MANY_CONNECTIONS.format(hostname="mx.test.invalid")}
    first.quit()
    assert wait_until(lambda: read_greeting(server.port).startswith(b"220"), message="a free slot")
    second.quit()


def test_a_client_always_meets_its_own_limit_in_its_own_process(server):
    configure(server, max_connections_per_client=1)
    first = smtplib.SMTP("127.0.0.1", server.port, timeout=10, source_address=("127.0.0.3", 0))
    first.ehlo("client.test")

    for _ in range(4):  # each would land in a different process if routing ignored the address
        greeting = read_greeting_from(server, "127.0.0.3")
        assert greeting == replies.TOO_MANY_FROM_CLIENT.format(hostname="mx.test.invalid")
    first.quit()


def test_the_heartbeat_counts_the_refusals_of_every_session_process(server):
    configure(server, greylisting=True)
    clients = CLIENT_ADDRESSES[:4]
    # The dispatcher picks crc32(address) % 2: these clients meet both session processes.
    assert {zlib.crc32(address.encode()) % 2 for address in clients} == {0, 1}

    for address in clients:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10, source_address=(address, 0)) as client:
            client.ehlo("client.test")
            assert client.mail("x@sender.test")[0] == 250
            assert client.rcpt("alice@lab.test")[0] == 451

    def greylisted() -> int:
        beat = read_heartbeats(redis_client(), "smtp", [server.pk]).get(server.pk)
        return beat.refusals.get("greylisted", 0) if beat is not None else 0

    wait_until(lambda: greylisted() == len(clients), message="four greylisted refusals in the heartbeat")


def read_greeting_from(server: VirtualServer, address: str) -> str:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10, source_address=(address, 0)) as sock:
        return sock.recv(512).decode().rstrip()


def test_pause_and_resume_reach_every_session_process(server):
    services.pause_server(server)
    wait_until(lambda: running_state(server) == ObservedState.PAUSED, message="paused")
    wait_until(
        lambda: all(read_greeting_from(server, a).startswith("421") for a in CLIENT_ADDRESSES[:4]),
        message="every process to refuse",
    )

    services.start_server(server)
    wait_until(lambda: running_state(server) == ObservedState.RUNNING, message="running")
    wait_until(
        lambda: all(read_greeting_from(server, a).startswith("220") for a in CLIENT_ADDRESSES[:4]),
        message="every process to greet",
    )


def running_state(server: VirtualServer) -> str:
    server.refresh_from_db()
    return server.state


def test_sessions_of_every_process_are_listed_and_one_can_be_terminated(server):
    # closing, not the client's own `with`: that sends QUIT, which the terminated session cannot answer.
    with ExitStack() as open_clients:
        clients = []
        for address in ("127.0.0.1", "127.0.0.2", "127.0.0.5", "127.0.0.6"):
            client = open_clients.enter_context(
                closing(smtplib.SMTP("127.0.0.1", server.port, timeout=10, source_address=(address, 0)))
            )
            client.login("alice@lab.test", PASSWORD)
            clients.append(client)

        sessions = wait_until(
            lambda: (
                len([s for s in services.list_sessions(server) if s["user"]]) == 4 and services.list_sessions(server)
            ),
            message="four sessions to be published",
        )
        victim = next(s for s in sessions if s["client"] == "127.0.0.5")
        services.terminate_session(server, victim["id"])

        wait_until(
            lambda: {s["client"] for s in services.list_sessions(server)} == {"127.0.0.1", "127.0.0.2", "127.0.0.6"},
            message="only the terminated session to go",
        )
        for client in clients:
            if client.sock.getsockname()[0] != "127.0.0.5":
                assert client.noop()[0] == 250
                client.quit()


def test_a_sigkill_of_the_worker_takes_its_session_processes_along_and_it_comes_back(server):
    children = wait_until(
        lambda: len(session_processes(server)) == 2 and session_processes(server), message="two session processes"
    )
    old_pid = server.pid

    os.kill(old_pid, signal.SIGKILL)

    psutil.wait_procs(children, timeout=10)
    assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children)
    wait_until(
        lambda: (
            running_state(server) == ObservedState.RUNNING
            and server.pid not in (None, old_pid)
            and len(session_processes(server)) == 2
        ),
        timeout_s=20,
        message="the worker and its processes",
    )
    send_from(server, "127.0.0.7")


def test_a_killed_session_process_is_replaced_and_the_worker_keeps_its_pid(server):
    children = wait_until(
        lambda: len(session_processes(server)) == 2 and session_processes(server), message="two session processes"
    )
    pid = server.pid

    children[0].kill()

    wait_until(
        lambda: (
            len(session_processes(server)) == 2 and children[0].pid not in {p.pid for p in session_processes(server)}
        ),
        message="a replacement",
    )
    assert server.pid == pid
    for address in CLIENT_ADDRESSES:
        send_from(server, address)


def test_stopping_the_server_stops_every_session_process_and_closes_the_port(server):
    children = wait_until(
        lambda: len(session_processes(server)) == 2 and session_processes(server), message="two session processes"
    )

    services.stop_server(server)
    wait_until(lambda: running_state(server) == ObservedState.STOPPED, message="stopped")

    assert port_is_closed(server.port)
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


def test_back_to_one_process_restarts_the_worker_without_session_processes(server):
    wait_until(lambda: len(session_processes(server)) == 2, message="two session processes")
    old_pid = server.pid

    services.update_virtual_server(server, worker_processes=1)

    wait_until(
        lambda: running_state(server) == ObservedState.RUNNING and server.pid not in (None, old_pid),
        timeout_s=20,
        message="a restart",
    )
    assert session_processes(server) == []
    send_from(server, "127.0.0.1")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "must be at least 1"),
        ("17", "must be at most 16"),
        ("two", "'two' is not a number"),
    ],
)
def test_the_process_count_is_checked_with_a_message_on_the_cli(child_env, value, message):
    server = make_server()  # stopped: only the setting is checked
    result = subprocess.run(
        [sys.executable, "manage.py", "smtpsvc", "set", str(server.pk), f"worker_processes={value}"],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_the_cli_sets_the_process_count(server, child_env):
    result = subprocess.run(
        [sys.executable, "manage.py", "smtpsvc", "set", str(server.pk), "worker_processes=3"],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    server.refresh_from_db()
    assert server.worker_processes == 3
    wait_until(lambda: len(session_processes(server)) == 3, timeout_s=20, message="three session processes")
