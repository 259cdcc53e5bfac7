"""Virtual servers as real processes, driven through Celery: start, mail in, pause, stop, crash."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest

from servers import replies, services
from servers.models import ObservedState, ServiceState, VirtualServer
from tests.factories import make_server
from tests.helpers import port_is_closed, read_greeting, wait_until

pytestmark = pytest.mark.usefixtures("supervised")

MESSAGE = (
    b"From: Alice <alice@sender.test>\r\n"
    b"To: Bob <bob@lab.test>\r\n"
    b"Subject: Lab step 7\r\n"
    b"\r\n"
    b"Hello from the lab.\r\n"
    b".leading dot survives transparency\r\n"
)


def state_of(server: VirtualServer) -> str:
    server.refresh_from_db()
    return server.state


def wait_for_state(server: VirtualServer, state: str, timeout_s: float = 20) -> VirtualServer:
    wait_until(lambda: state_of(server) == state, timeout_s=timeout_s, message=f"{server.name} to be {state}")
    return server


def drop_files(server: VirtualServer) -> list[Path]:
    return sorted(Path(server.home_dir, "Drop").glob("*.eml"))


def running_server(**kwargs) -> VirtualServer:
    server = make_server(start=True, **kwargs)
    return wait_for_state(server, ObservedState.RUNNING)


def test_a_started_server_accepts_mail_into_drop_durably_and_verbatim():
    server = running_server(domain="lab.test")

    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        code, banner = client.ehlo("client.test")
        refused = client.sendmail("alice@sender.test", ["bob@lab.test", "carol@LAB.test"], MESSAGE)

    assert code == 250
    assert refused == {}
    [drop_file] = drop_files(server)
    content = drop_file.read_bytes()
    assert content.startswith(
        b"x-sender: alice@sender.test\r\nx-receiver: bob@lab.test\r\n"
        b"x-receiver: carol@lab.test\r\nReceived: from client.test ([127.0.0.1])"
    )
    assert content.endswith(MESSAGE)
    assert list(Path(server.home_dir, ".tmp").iterdir()) == []


def test_swaks_delivers_a_message_as_in_the_lab():
    server = running_server(domain="study003.local")

    result = subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.1:{server.port}",
            "--from",
            "student@study003.local",
            "--to",
            "teacher@study003.local",
            "--header",
            "Subject: swaks test",
            "--body",
            "body from swaks",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 OK" in result.stdout
    [drop_file] = drop_files(server)
    content = drop_file.read_text()
    assert "x-receiver: teacher@study003.local" in content
    assert "Subject: swaks test" in content
    assert "body from swaks" in content


def test_a_paused_server_refuses_new_connections_with_421_but_finishes_open_sessions():
    server = running_server(domain="lab.test")
    open_session = smtplib.SMTP("127.0.0.1", server.port, timeout=10)
    open_session.ehlo("early.test")
    open_session.mail("alice@sender.test")

    services.pause_server(server)
    wait_for_state(server, ObservedState.PAUSED)

    greeting = read_greeting(server.port)
    assert greeting.decode().rstrip("\r\n") == replies.SERVICE_NOT_AVAILABLE.format(hostname="mx.test.invalid")
    code, _ = open_session.rcpt("bob@lab.test")
    assert code == 250
    code, _ = open_session.data(MESSAGE)
    assert code == 250
    open_session.quit()
    assert len(drop_files(server)) == 1

    services.start_server(server)
    wait_for_state(server, ObservedState.RUNNING)
    assert read_greeting(server.port).startswith(b"220 ")


def test_a_stopped_server_closes_its_port():
    server = running_server()

    services.stop_server(server)
    wait_for_state(server, ObservedState.STOPPED)

    assert port_is_closed(server.port)
    assert state_of(server) == ObservedState.STOPPED
    server.refresh_from_db()
    assert server.pid is None


def test_stopping_lets_an_open_transaction_finish():
    server = running_server(domain="lab.test")
    # closing, not the client's own `with` (which sends QUIT): the stopping worker may hang up after the 250.
    with closing(smtplib.SMTP("127.0.0.1", server.port, timeout=10)) as client:
        client.ehlo()
        client.mail("alice@sender.test")
        client.rcpt("bob@lab.test")

        services.stop_server(server)
        # The worker has been told to stop and has stopped accepting: the 250 below comes from its grace.
        wait_until(
            lambda: state_of(server) == ObservedState.STOPPING and port_is_closed(server.port),
            message="the worker to stop accepting",
        )
        code, _ = client.data(MESSAGE)

    assert code == 250
    assert len(drop_files(server)) == 1
    wait_for_state(server, ObservedState.STOPPED)


def test_a_killed_worker_is_restarted_within_ten_seconds_and_counted():
    server = running_server()
    old_pid = server.pid

    os.kill(old_pid, signal.SIGKILL)

    wait_until(
        lambda: state_of(server) == ObservedState.RUNNING and server.pid not in (None, old_pid),
        timeout_s=10,
        message="the worker to come back",
    )
    assert server.restart_count == 1
    assert read_greeting(server.port).startswith(b"220 ")


def test_a_worker_that_cannot_bind_goes_to_error_with_the_os_message_and_backs_off():
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = make_server(port=port, start=True)

        wait_until(
            lambda: state_of(server) == ObservedState.ERROR and server.last_exit_at is not None,
            timeout_s=20,
            message="the failed start to be recorded",
        )
        assert "Address already in use" in server.last_error
        # A bind failure is not restarted at once: the next start waits 5 s (both times are taken a
        # moment apart, the delay first).
        assert server.next_start_at - server.last_exit_at > timedelta(seconds=4.5)


def test_stopping_and_starting_the_node_service_acts_on_every_server(node):
    first = running_server()
    second = running_server()
    services.pause_server(second)
    wait_for_state(second, ObservedState.PAUSED)

    services.set_node_service_state(node, ServiceState.STOPPED)
    wait_for_state(first, ObservedState.STOPPED)
    wait_for_state(second, ObservedState.STOPPED)
    assert port_is_closed(first.port) and port_is_closed(second.port)

    services.set_node_service_state(node, ServiceState.RUNNING)
    wait_for_state(first, ObservedState.RUNNING)
    wait_for_state(second, ObservedState.PAUSED)


def test_after_the_whole_stack_restarts_every_server_returns_to_its_desired_state(celery_stack, settings):
    from servers.supervision import stop_node_workers

    running = running_server()
    paused = running_server()
    stopped = running_server()
    services.pause_server(paused)
    services.stop_server(stopped)
    wait_for_state(paused, ObservedState.PAUSED)
    wait_for_state(stopped, ObservedState.STOPPED)

    # What `runstack` does on Ctrl-C: beat and worker go, SMTP workers stop, desired states stay.
    celery_stack.stop()
    stop_node_workers(settings.NODE_NAME)
    assert port_is_closed(running.port) and port_is_closed(paused.port)
    celery_stack.start()

    wait_for_state(running, ObservedState.RUNNING)
    wait_for_state(paused, ObservedState.PAUSED)
    assert state_of(stopped) == ObservedState.STOPPED
    assert read_greeting(paused.port).startswith(b"421 ")


def test_a_failed_write_answers_451_and_leaves_no_partial_file():
    server = running_server(domain="lab.test")
    drop = Path(server.home_dir, "Drop")
    drop.rename(drop.with_name("Drop.moved"))
    drop.write_text("not a directory")
    try:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            client.ehlo()
            client.mail("alice@sender.test")
            client.rcpt("bob@lab.test")
            code, text = client.data(MESSAGE)
    finally:
        drop.unlink()
        drop.with_name("Drop.moved").rename(drop)

    assert code == 451
    assert text.startswith(b"4.3.0")
    assert drop_files(server) == []
    assert list(Path(server.home_dir, ".tmp").iterdir()) == []
