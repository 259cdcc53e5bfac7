"""Fixtures every test module shares: the people and their clients, and the real thing (a Celery worker and
beat, SMTP worker processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

from servers import services, supervision
from servers.models import Node
from servers.services import signin_guard
from tests.api_factories import client_for
from tests.factories import People, make_people
from tests.helpers import wait_until

REPO_DIR = Path(__file__).resolve().parent.parent

# The outside world of the delivery tests, for every module: the fixtures dns (a test DNS server), port
# and remotes ("remote" SMTP servers on 127.0.0.x), and server (a server no Celery worker serves; a
# module's own `server` fixture takes its place). Declared here, in the conftest pytest loads before it
# configures itself: pytest_plugins is refused in any conftest loaded later.
pytest_plugins = ["tests.delivery_helpers", "tests.imap_session_helpers"]


def pytest_configure(config: pytest.Config) -> None:
    # The pages are rendered in Russian too: the catalogues must be compiled from the .po files in the tree.
    from mailconsole.catalogues import compile_catalogues

    compile_catalogues()


def database_url_of(settings_dict: dict) -> str:
    """A DATABASE_URL that points a child process at the database the tests use."""
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = quote(settings_dict.get("USER") or "")
    password = quote(settings_dict.get("PASSWORD") or "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgresql://{auth}{host}:{port}/{settings_dict['NAME']}"


@pytest.fixture(autouse=True)
def fresh_sign_in_counters() -> None:
    """Every test starts with no failed sign-ins counted: all tests connect from loopback."""
    signin_guard.forget_all()


@pytest.fixture
def fast_hashing(request, settings) -> None:
    """Hash new passwords with MD5: hashing strength is not what those tests are about.

    The configured hashers stay for hashes made elsewhere; tests that run worker processes keep the
    configured order, since the workers verify with it. Modules ask for it with
    `pytestmark = pytest.mark.usefixtures("fast_hashing")`.
    """
    if "supervised" not in request.fixturenames:
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]


@pytest.fixture
def people(db, fast_hashing) -> People:
    """alice administers, bob operates, carol administers a domain, dave has no role (no roles granted yet)."""
    return make_people()


@pytest.fixture
def admin(people):
    """An API client signed in with alice's token."""
    return client_for(people.alice)


@pytest.fixture(scope="session")
def child_env(django_db_setup) -> dict[str, str]:
    """The environment for processes the tests start: same var dir, node, Redis and test database."""
    from django.db import connection

    env = dict(os.environ)
    env["DATABASE_URL"] = database_url_of(connection.settings_dict)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class CeleryStack:
    """A real Celery worker on the test node's queue, and beat driving the periodic reconcile."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.log_dir = settings.VAR_DIR / "log"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.worker: subprocess.Popen | None = None
        self.beat: subprocess.Popen | None = None

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        # The process gets its own copy of the descriptor; ours is closed once it has started.
        with open(self.log_dir / f"{name}.log", "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "mailconsole", *argv],
                cwd=REPO_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start(self) -> None:
        node = settings.NODE_NAME
        self.worker = self._spawn(
            "celery-worker",
            [
                "worker",
                "--queues",
                node,
                "--hostname",
                f"{node}@%h",
                "--concurrency",
                "2",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
        )
        self.beat = self._spawn(
            "celery-beat",
            [
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(settings.VAR_DIR / "celerybeat-schedule"),
                "--pidfile",
                "",
            ],
        )
        wait_until(self.worker_ready, timeout_s=30, message="the Celery worker to be ready")

    def worker_ready(self) -> bool:
        log = (self.log_dir / "celery-worker.log").read_text(errors="replace")
        return " ready." in log

    def stop(self) -> None:
        for process in (self.beat, self.worker):
            if process is not None and process.poll() is None:
                process.terminate()
        for process in (self.beat, self.worker):
            if process is not None:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def restart(self) -> None:
        self.stop()
        (self.log_dir / "celery-worker.log").unlink(missing_ok=True)
        self.start()


@pytest.fixture(scope="session")
def celery_stack(child_env) -> Iterator[CeleryStack]:
    stack = CeleryStack(child_env)
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def node(transactional_db) -> Iterator[Node]:
    """This test session's node. SMTP workers left running by a test are stopped afterwards."""
    yield services.local_node()
    supervision.stop_node_workers(settings.NODE_NAME, timeout_s=10)


@pytest.fixture
def supervised(celery_stack, node) -> Iterator[Node]:
    """The node, with a real Celery worker and beat supervising it."""
    yield node


# Fixtures through which a test reaches the database (pytest-django's, and what requests them).
DATABASE_FIXTURES = {"db", "transactional_db", "django_db_reset_sequences", "django_db_serialized_rollback"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that never reaches the database proves nothing new on a second backend: it runs once, on
    SQLite (scripts/run-tests.sh deselects `backend_independent` on PostgreSQL). Runs before `-m`."""
    for item in items:
        reaches_database = item.get_closest_marker("django_db") is not None or bool(
            DATABASE_FIXTURES & set(getattr(item, "fixturenames", ()))
        )
        if not reaches_database:
            item.add_marker(pytest.mark.backend_independent)


# The worker processes a test starts log to var/log/; a failed socket test is hard to read without
# them (a session process that died while starting looked like "Connection unexpectedly closed").
WORKER_LOG_TAIL_LINES = 60


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and call.when == "call" and "celery_stack" in getattr(item, "fixturenames", ()):
        started_at = call.start
        for log_file in sorted((settings.VAR_DIR / "log").glob("*.log")):
            try:
                if log_file.stat().st_mtime < started_at:
                    continue
                lines = log_file.read_text(errors="replace").splitlines()[-WORKER_LOG_TAIL_LINES:]
            except OSError:
                continue
            report.sections.append((f"worker log {log_file.name} (last lines)", "\n".join(lines)))
    return report
