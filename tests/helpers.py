"""Small tools the tests share: waiting for a condition, free ports, talking SMTP."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
U = TypeVar("U", bound=Any)  # a VirtualServer or Pop3Service
V = TypeVar("V", bound=Any)  # a VirtualServer


def wait_until(
    condition: Callable[[], T], *, timeout_s: float = 15, interval_s: float = 0.1, message: str = "condition"
) -> T:
    """Poll `condition` until it returns something truthy; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {message} (last value: {last!r})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_greeting(port: int, host: str = "127.0.0.1") -> bytes:
    """Connect and return the server's first reply line."""
    with socket.create_connection((host, port), timeout=5) as sock:
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = sock.recv(512)
            if not chunk:
                break
            data += chunk
        return data


def port_is_closed(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def wait_for_state(unit: U, state: str, timeout_s: float = 20) -> U:
    """Wait until the reconcile reports `state` for a server or service (re-read from the database)."""

    def reached() -> bool:
        unit.refresh_from_db()
        return unit.state == state

    wait_until(reached, timeout_s=timeout_s, message=f"{unit} to be {state}")
    return unit


def worker_running(server: V) -> V:
    """Wait until the server's own worker runs its current configuration (heartbeat pid and version)."""
    from servers.livestate import read_heartbeats, redis_client
    from servers.models import ObservedState

    def current() -> bool:
        server.refresh_from_db()
        beat = read_heartbeats(redis_client(), "smtp", [server.pk]).get(server.pk)
        return (
            server.state == ObservedState.RUNNING
            and beat is not None
            and beat.pid == server.pid
            and beat.config_version >= server.config_version
        )

    wait_until(current, timeout_s=20, message="the worker to run the current configuration")
    return server


# The browser tests drive Debian's chromium (never a downloaded one).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
