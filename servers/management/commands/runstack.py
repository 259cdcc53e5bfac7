"""`manage.py runstack`: the whole node in the foreground; one Ctrl-C stops it in order.

Does the first-run set-up (servers.first_run), starts the embedded Redis (when REDIS_URL is unset),
gunicorn, a Celery worker on this node's queue and Celery beat, then prints a banner with the
console's address and how to sign in (the administrator's password on the first run). The SMTP,
POP3 and IMAP workers are started by the worker's reconcile, not from here.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field

import redis
from django.conf import settings
from django.core.management.base import BaseCommand

from servers.embedded_redis import redis_server_argv
from servers.first_run import ADMIN_USERNAME, FirstRun, set_up
from servers.models import ImapService, Pop3Service, VirtualServer
from servers.services import request_reconcile
from servers.supervision import stop_node_workers

RESTART_DELAY_S = 3


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = field(default=0)


def embedded_redis_argv() -> list[str]:
    data_dir = settings.VAR_DIR / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    return redis_server_argv(settings.EMBEDDED_REDIS_PORT, data_dir)


def redis_answers(timeout_s: float) -> bool:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)


def web_answers(url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def banner(first_run: FirstRun, console_url: str) -> str:
    """What a person looks for once everything has started: where to go and how to sign in."""
    if first_run.admin_password:
        sign_in = f"{ADMIN_USERNAME} / {first_run.admin_password}   (shown only now: change it in the console)"
    elif first_run.admin_created:
        sign_in = f"{ADMIN_USERNAME} / the password in MAILCONSOLE_ADMIN_PASSWORD"
    else:
        sign_in = f"{ADMIN_USERNAME} (lost the password? .venv/bin/python manage.py changepassword {ADMIN_USERNAME})"
    node = settings.NODE_NAME
    services = [f"SMTP {s.ip_address}:{s.port}" for s in VirtualServer.objects.on_node(node).order_by("pk")[:5]]
    services += [f"POP3 {s.ip_address}:{s.port}" for s in Pop3Service.objects.filter(node__name=node)]
    services += [f"IMAP {s.ip_address}:{s.port}" for s in ImapService.objects.filter(node__name=node)]
    rule = "=" * 78
    lines = [
        rule,
        "MailConsole is running.",
        f"  Console:  {console_url}          webmail: {console_url}mail/",
        f"  Sign in:  {sign_in}",
        f"  Mail:     {'  '.join(services)}",
        f"  Logs:     here (web, Celery); SMTP/POP3/IMAP workers in {settings.VAR_DIR / 'log'}/",
        "  Stop:     Ctrl-C (once) stops everything in order.",
        rule,
    ]
    return "\n".join(lines)


class Command(BaseCommand):
    help = "Run web, Celery worker and beat (and the embedded Redis) in the foreground."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument("--celery-concurrency", type=int, default=2)

    def handle(self, *args, web_workers: int, celery_concurrency: int, **options) -> None:
        self.stopping = False
        python = sys.executable
        node = settings.NODE_NAME
        run_dir = settings.VAR_DIR / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        self.children: list[Child] = []
        self.redis_child: Child | None = None
        first_run = set_up()

        if settings.EMBEDDED_REDIS:
            if redis_answers(0.2):
                self.log(f"reusing the Redis already answering at {settings.REDIS_URL}")
            else:
                self.redis_child = Child("redis", embedded_redis_argv())
                self.start(self.redis_child)
                if not redis_answers(10):
                    self.log("the embedded Redis did not start; see the messages above")
                    self.shut_down()
                    raise SystemExit(1)
        elif not redis_answers(10):
            self.log(f"cannot reach Redis at {settings.REDIS_URL}")
            raise SystemExit(1)

        bind = f"{settings.HTTP_HOST}:{settings.HTTP_PORT}"
        self.children = [
            Child(
                "web",
                [
                    python,
                    "-m",
                    "gunicorn",
                    "mailconsole.wsgi",
                    "--bind",
                    bind,
                    "--workers",
                    str(web_workers),
                    "--access-logfile",
                    "-",
                    "--graceful-timeout",
                    "5",
                ],
            ),
            Child(
                "worker",
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "mailconsole",
                    "worker",
                    "--queues",
                    node,
                    "--hostname",
                    f"{node}@%h",
                    "--concurrency",
                    str(celery_concurrency),
                    "--loglevel",
                    "INFO",
                    "--without-gossip",
                    "--without-mingle",
                ],
            ),
            Child(
                "beat",
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "mailconsole",
                    "beat",
                    "--loglevel",
                    "INFO",
                    "--schedule",
                    str(run_dir / "celerybeat-schedule"),
                    "--pidfile",
                    "",
                ],
            ),
        ]
        for child in self.children:
            self.start(child)
        request_reconcile(node)
        web_answers(f"http://{bind}/healthz", timeout_s=30)
        self.stdout.write(banner(first_run, f"http://{bind}/"))
        self.stdout.flush()

        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)
        while not self.stopping:
            self.watch_children()
            time.sleep(0.5)
        self.shut_down()

    def log(self, message: str) -> None:
        self.stdout.write(f"[runstack] {message}")
        self.stdout.flush()

    def request_stop(self, signum, frame) -> None:
        self.stopping = True

    def start(self, child: Child) -> None:
        # Each child in its own session: Ctrl-C reaches only us, and we stop them in order.
        child.process = subprocess.Popen(child.argv, cwd=settings.BASE_DIR, start_new_session=True)
        child.started_at = time.monotonic()
        self.log(f"started {child.name} (pid {child.process.pid})")

    def watch_children(self) -> None:
        for child in [*self.children, *([self.redis_child] if self.redis_child else [])]:
            if child.process is None:
                continue
            code = child.process.poll()
            if code is None:
                continue
            if time.monotonic() - child.started_at < RESTART_DELAY_S:
                continue
            child.restarts += 1
            self.log(f"{child.name} exited with code {code}; restarting (restart {child.restarts})")
            self.start(child)

    def terminate(self, child: Child, timeout_s: float = 15) -> None:
        if child.process is None or child.process.poll() is not None:
            return
        child.process.send_signal(signal.SIGTERM)
        try:
            child.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
        self.log(f"stopped {child.name}")

    def shut_down(self) -> None:
        # Beat and the Celery worker go first, so no reconcile can start a worker behind our back.
        self.log("stopping: beat, Celery worker, SMTP/POP3/IMAP workers, web, Redis")
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        by_name = {child.name: child for child in self.children}
        for name in ("beat", "worker"):
            if name in by_name:
                self.terminate(by_name[name])
        try:
            stop_node_workers(settings.NODE_NAME)
            self.log("stopped SMTP/POP3/IMAP workers (their desired states are kept for the next start)")
        except Exception as exc:  # keep stopping the rest whatever happened here
            self.log(f"could not stop SMTP/POP3/IMAP workers cleanly: {exc}")
        if "web" in by_name:
            self.terminate(by_name["web"])
        if self.redis_child:
            self.terminate(self.redis_child)
        self.log("bye")
