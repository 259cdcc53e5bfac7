"""A private MailConsole installation for one benchmark run: var/ directory, node name, Redis, database.

Nothing here touches a running installation: everything lives in a fresh temporary directory and an
embedded Redis on a free loopback port, and is removed at exit (unless --keep).
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
from pathlib import Path

from mailconsole.var_dir import ensure_var_dir
from servers.embedded_redis import free_port, start_embedded_redis  # noqa: F401 - free_port is used by the runners

BENCH_PASSWORD = "Benchpass123"


def prepare(*, keep: bool = False) -> Path:
    """Point MailConsole at a fresh var/ directory and Redis, set Django up and migrate; return var/."""
    var_dir = Path(tempfile.mkdtemp(prefix="mailconsole-bench-"))
    redis_process, redis_url = start_embedded_redis(var_dir)
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "mailconsole.settings",
            "MAILCONSOLE_VAR_DIR": str(var_dir),
            "MAILCONSOLE_NODE": f"bench-{socket.gethostname()}-{os.getpid()}",
            "MAILCONSOLE_HOSTNAME": "mx.bench.invalid",
            "MAILCONSOLE_SECRET_KEY": "benchmark-only-secret-key-not-for-production-0123456789",
            "REDIS_URL": redis_url,
        }
    )
    os.environ.pop("DATABASE_URL", None)
    ensure_var_dir()  # the secrets key, as manage.py makes it on a first start

    @atexit.register
    def clean_up() -> None:
        from django.conf import settings

        from servers import supervision

        try:
            supervision.stop_node_workers(settings.NODE_NAME, timeout_s=10)
        except Exception as exc:  # best effort at exit
            print(f"warning: could not stop the workers: {exc}")
        redis_process.terminate()
        redis_process.wait(timeout=5)
        if keep:
            print(f"kept {var_dir}")
        else:
            shutil.rmtree(var_dir, ignore_errors=True)

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return var_dir
