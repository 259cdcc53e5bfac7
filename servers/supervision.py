"""Bring a node's worker processes to the state the database asks for.

The database holds the desired state; Redis heartbeats and the process table tell what is
actually running. `reconcile_node` compares the two and acts: start what should run, signal a
pause/resume/reload, stop what should not run, restart what died (with back-off). Only the
node's own Celery worker (or `runstack` on shutdown) calls it, under a node-wide file lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta

import psutil
import redis
from django.conf import settings
from django.utils import timezone

from servers.livestate import Heartbeat, heartbeat_key, heartbeat_server_ids, read_heartbeats, redis_client
from servers.models import Node, ObservedState, ServiceState, VirtualServer

log = logging.getLogger(__name__)

# How long a freshly started worker has to report in before the reconcile stops waiting for it.
START_WAIT_S = 8.0
# A worker that stayed up this long is healthy again: its back-off starts from zero.
HEALTHY_UPTIME_S = 60
MAX_BACKOFF_S = 300
SIGNAL_FOR_STATE = {ServiceState.PAUSED: signal.SIGUSR1, ServiceState.RUNNING: signal.SIGUSR2}


@dataclass
class ReconcileReport:
    started: list[int] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)
    signalled: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


@contextmanager
def node_lock(node_name: str, timeout_s: float = 60) -> Iterator[None]:
    """Serialize supervision of one node across the processes of this host."""
    lock_dir = settings.VAR_DIR / "run"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"supervise-{node_name}.lock", "w") as lock_file:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"supervision of node {node_name} is busy") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def reap_children() -> None:
    """Collect exit statuses of workers we spawned, so they do not linger as zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def worker_alive(pid: int | None, server_id: int) -> bool:
    """Whether `pid` is a live SMTP worker for `server_id` (not a zombie, not a reused pid)."""
    if not pid:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return "run_smtpd" in cmdline and str(server_id) in cmdline


def send_signal(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def backoff_s(consecutive_failures: int, *, first_is_free: bool) -> float:
    """Delay before restarting a worker that failed `consecutive_failures` times in a row."""
    if consecutive_failures <= 1 and first_is_free:
        return 0
    return min(5 * 2 ** max(consecutive_failures - 1, 0), MAX_BACKOFF_S)


def spawn_worker(server: VirtualServer) -> subprocess.Popen:
    log_dir = settings.VAR_DIR / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"smtpd-{server.pk}.log", "ab") as log_file:
        return subprocess.Popen(
            [sys.executable, str(settings.BASE_DIR / "manage.py"), "run_smtpd", "--server", str(server.pk)],
            cwd=settings.BASE_DIR,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C meant for the console does not reach it; the supervisor decides.
            start_new_session=True,
        )


class NodeSupervisor:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.redis = redis_client()
        self.redis_ok = True
        self.report = ReconcileReport()

    def heartbeats(self, server_ids: list[int]) -> dict[int, Heartbeat]:
        try:
            beats = read_heartbeats(self.redis, server_ids)
            self.redis_ok = True
            return beats
        except (redis.RedisError, OSError) as exc:
            log.warning("cannot read heartbeats: %s", exc)
            self.redis_ok = False
            return {}

    def heartbeat(self, server_id: int) -> Heartbeat | None:
        return self.heartbeats([server_id]).get(server_id)

    # -- one server --------------------------------------------------------------------------
    def reconcile(self, server: VirtualServer, beat: Heartbeat | None) -> None:
        desired = ServiceState(server.effective_desired_state)
        if not worker_alive(server.pid, server.pk) and beat and worker_alive(beat.pid, server.pk):
            # A worker that outlived a crashed supervisor: adopt it rather than start a second one.
            server.pid = beat.pid
        alive = worker_alive(server.pid, server.pk)
        if desired == ServiceState.STOPPED:
            self._stop(server, alive)
        elif alive:
            self._steer(server, beat, desired)
        else:
            self._start(server, beat)

    def _save(self, server: VirtualServer, **changes) -> None:
        if "state" in changes and changes["state"] != server.state:
            changes["state_changed_at"] = timezone.now()
        changes = {k: v for k, v in changes.items() if getattr(server, k) != v}
        if not changes:
            return
        for key, value in changes.items():
            setattr(server, key, value)
        VirtualServer.objects.filter(pk=server.pk).update(**changes)

    def _stop(self, server: VirtualServer, alive: bool) -> None:
        if not alive:
            self._save(server, state=ObservedState.STOPPED, pid=None)
            return
        if server.state != ObservedState.STOPPING:
            send_signal(server.pid, signal.SIGTERM)
            self._save(server, state=ObservedState.STOPPING)
        elif server.state_changed_at and timezone.now() - server.state_changed_at > timedelta(
            seconds=settings.STOP_GRACE_S + 5
        ):
            log.warning("server %s did not stop in time; killing pid %s", server.pk, server.pid)
            send_signal(server.pid, signal.SIGKILL)
        if self._wait_for_exit(server.pid, server.pk, settings.STOP_GRACE_S + 2):
            self._save(server, state=ObservedState.STOPPED, pid=None)
            self.report.stopped.append(server.pk)

    def _wait_for_exit(self, pid: int, server_id: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            reap_children()
            if not worker_alive(pid, server_id):
                return True
            time.sleep(0.05)
        return False

    def _steer(self, server: VirtualServer, beat: Heartbeat | None, desired: ServiceState) -> None:
        now = timezone.now()
        if beat is None or beat.pid != server.pid or beat.age_s > settings.HEARTBEAT_TTL_S:
            running_for_s = (now - server.started_at).total_seconds() if server.started_at else 1e9
            if self.redis_ok and running_for_s > settings.HEARTBEAT_TTL_S:
                log.warning("server %s: pid %s stopped sending heartbeats; killing it", server.pk, server.pid)
                send_signal(server.pid, signal.SIGKILL)
                self._wait_for_exit(server.pid, server.pk, 2)
            return
        if beat.state in (ObservedState.RUNNING, ObservedState.PAUSED) and beat.state != desired:
            send_signal(server.pid, SIGNAL_FOR_STATE[desired])
            self.report.signalled.append(server.pk)
            beat = self._await_heartbeat(server.pk, server.pid, desired) or beat
        if beat.config_version < server.config_version:
            send_signal(server.pid, signal.SIGHUP)
            self.report.signalled.append(server.pk)
        changes = {"state": beat.state}
        if server.consecutive_failures and server.started_at and (
            (now - server.started_at).total_seconds() > HEALTHY_UPTIME_S
        ):
            changes["consecutive_failures"] = 0
        if not server.heartbeat_at or (now - server.heartbeat_at).total_seconds() > 30 or (
            beat.state != server.state
        ):
            changes["heartbeat_at"] = now
        if beat.state in (ObservedState.RUNNING, ObservedState.PAUSED):
            changes["last_error"] = ""
        self._save(server, **changes)

    def _await_heartbeat(self, server_id: int, pid: int, state: str, timeout_s: float = 3) -> Heartbeat | None:
        """Wait for the worker to confirm a state change, so the database shows it at once."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            beat = self.heartbeat(server_id)
            if beat is not None and beat.pid == pid and beat.state == state:
                return beat
            time.sleep(0.05)
        return None

    def _start(self, server: VirtualServer, beat: Heartbeat | None) -> None:
        now = timezone.now()
        if server.pid is not None or server.state in (
            ObservedState.STARTING, ObservedState.RUNNING, ObservedState.PAUSED, ObservedState.STOPPING
        ):
            self._record_exit(server, beat)
        if server.next_start_at and now < server.next_start_at:
            return
        with suppress(redis.RedisError, OSError):
            self.redis.delete(heartbeat_key(server.pk))
        process = spawn_worker(server)
        self._save(server, state=ObservedState.STARTING, pid=process.pid, started_at=now, next_start_at=None)
        self.report.started.append(server.pk)
        self._wait_for_report(server, process)

    def _record_exit(self, server: VirtualServer, beat: Heartbeat | None) -> None:
        """The worker is gone though it should run: note why and schedule the restart."""
        reap_children()
        if beat is not None and beat.state == ObservedState.STOPPED and beat.pid == server.pid:
            # It left on purpose (e.g. to rebind a changed address): start again at once.
            self._save(server, pid=None, state=ObservedState.STOPPED)
            return
        failed_on_error = beat is not None and beat.state == ObservedState.ERROR
        failures = server.consecutive_failures + 1
        delay = backoff_s(failures, first_is_free=not failed_on_error)
        error = beat.error if failed_on_error else f"worker process {server.pid} exited unexpectedly"
        log.warning("server %s: %s; restart in %ss", server.pk, error, delay)
        self._save(
            server,
            pid=None,
            state=ObservedState.ERROR,
            last_error=error,
            restart_count=server.restart_count + 1,
            consecutive_failures=failures,
            next_start_at=timezone.now() + timedelta(seconds=delay),
        )
        self.report.failed.append(server.pk)

    def _wait_for_report(self, server: VirtualServer, process: subprocess.Popen) -> None:
        """Wait until the new worker heartbeats or exits, so the caller sees a settled state."""
        deadline = time.monotonic() + START_WAIT_S
        while time.monotonic() < deadline:
            beat = self.heartbeat(server.pk)
            if beat is not None and beat.pid == process.pid and beat.state != ObservedState.STOPPED:
                if beat.state == ObservedState.ERROR:
                    process.wait(timeout=5)
                    self._record_exit(server, beat)
                else:
                    self._save(server, state=beat.state, heartbeat_at=timezone.now(), last_error="")
                return
            if process.poll() is not None:
                self._record_exit(server, self.heartbeat(server.pk))
                return
            time.sleep(0.05)

    # -- the whole node ----------------------------------------------------------------------
    def reconcile_all(self) -> ReconcileReport:
        reap_children()
        servers = list(VirtualServer.objects.on_node(self.node).select_related("node"))
        beats = self.heartbeats([s.pk for s in servers])
        for server in servers:
            try:
                self.reconcile(server, beats.get(server.pk))
            except Exception:
                log.exception("reconcile of server %s failed", server.pk)
        self.terminate_orphans({s.pk for s in servers})
        return self.report

    def terminate_orphans(self, known_ids: set[int]) -> None:
        """Stop workers of servers that no longer exist (deleted while running)."""
        if not self.redis_ok:
            return
        try:
            orphan_ids = [i for i in heartbeat_server_ids(self.redis) if i not in known_ids]
        except (redis.RedisError, OSError):
            return
        if orphan_ids and VirtualServer.objects.filter(pk__in=orphan_ids).exists():
            # Servers of another node sharing this Redis: not ours to touch.
            orphan_ids = [i for i in orphan_ids if not VirtualServer.objects.filter(pk=i).exists()]
        for server_id, beat in self.heartbeats(orphan_ids).items():
            if worker_alive(beat.pid, server_id):
                log.info("stopping worker %s of deleted server %s", beat.pid, server_id)
                send_signal(beat.pid, signal.SIGTERM)

    def stop_all(self, timeout_s: float) -> None:
        """Stop every worker of the node without changing what is desired (stack shutdown)."""
        servers = [s for s in VirtualServer.objects.on_node(self.node) if worker_alive(s.pid, s.pk)]
        for server in servers:
            send_signal(server.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for server in servers:
            if not self._wait_for_exit(server.pid, server.pk, max(deadline - time.monotonic(), 0.1)):
                send_signal(server.pid, signal.SIGKILL)
                self._wait_for_exit(server.pid, server.pk, 2)
            self._save(server, state=ObservedState.STOPPED, pid=None)


def reconcile_node(node_name: str) -> ReconcileReport:
    """Bring every worker of a node to its desired state (the periodic and on-demand step)."""
    with node_lock(node_name):
        node, _ = Node.objects.get_or_create(name=node_name)
        now = timezone.now()
        if not node.last_seen_at or (now - node.last_seen_at).total_seconds() > 30:
            Node.objects.filter(pk=node.pk).update(last_seen_at=now)
        return NodeSupervisor(node).reconcile_all()


def stop_node_workers(node_name: str, timeout_s: float | None = None) -> None:
    """Stop the node's workers for a stack shutdown; desired states stay for the next start."""
    with node_lock(node_name):
        node = Node.objects.filter(name=node_name).first()
        if node is not None:
            NodeSupervisor(node).stop_all(timeout_s if timeout_s is not None else settings.STOP_GRACE_S + 2)


def terminate_worker(server_id: int, pid: int) -> bool:
    """Stop the worker of a deleted server, if it is still that server's worker."""
    if worker_alive(pid, server_id):
        return send_signal(pid, signal.SIGTERM)
    return False
