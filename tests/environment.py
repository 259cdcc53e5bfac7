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

from mailconsole.var_dir import ensure_var_dir
from servers.embedded_redis import start_embedded_redis

_var_dir = tempfile.mkdtemp(prefix="mailconsole-test-")
os.environ["MAILCONSOLE_VAR_DIR"] = _var_dir
os.environ["MAILCONSOLE_NODE"] = f"test-{socket.gethostname()}-{os.getpid()}"
os.environ.setdefault("MAILCONSOLE_RECONCILE_INTERVAL", "1")
os.environ.setdefault("MAILCONSOLE_STOP_GRACE", "5")
# Throttled sign-in failures still wait, but briefly: tests guess many passwords on purpose.
os.environ.setdefault("MAILCONSOLE_SIGNIN_MAX_DELAY_MS", "400")
os.environ.setdefault("MAILCONSOLE_HOSTNAME", "mx.test.invalid")
# Static files looked up when asked for, not scanned for every test client (mailconsole.settings).
os.environ.setdefault("MAILCONSOLE_STATIC_AUTOREFRESH", "1")
# The command-line tools speak the shell's language (servers.management.language); the tests expect
# English unless they ask for another, whatever the machine's locale.
if any(os.environ.get(name, "C")[:1] not in ("C", "P", "e") for name in ("LC_ALL", "LC_MESSAGES", "LANG")):
    os.environ.pop("LC_MESSAGES", None)
    os.environ["LC_ALL"] = "C.UTF-8"
os.environ.setdefault("MAILCONSOLE_SECRET_KEY", "tests-only-secret-key-not-for-production-use-0123456789")
# var/secrets_key, as manage.py generates it on a first start (the settings only read it).
ensure_var_dir()

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
