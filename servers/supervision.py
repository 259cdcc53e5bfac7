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

from servers.livestate import Heartbeat, heartbeat_key, heartbeat_unit_ids, read_heartbeats, redis_client
from servers.models import (
    ImapService,
    Node,
    ObservedState,
    Pop3Service,
    ServiceState,
    SupervisedProcess,
    VirtualServer,
)
from servers.workers.base import EXIT_BIND_FAILED, EXIT_NO_CONFIGURATION

# Everything a node supervises, each kind with its own worker command and heartbeat keys.
SUPERVISED_MODELS: tuple[type[SupervisedProcess], ...] = (VirtualServer, Pop3Service, ImapService)

log = logging.getLogger(__name__)

# How long a freshly started worker has to report in before the reconcile stops waiting for it.
START_WAIT_S = 8.0
# A worker that stayed up this long is healthy again: its back-off starts from zero.
HEALTHY_UPTIME_S = 60
MAX_BACKOFF_S = 300
# How much of a dead worker's own log the supervisor keeps (and shows) with its exit status.
LOG_TAIL_LINES = 20
LOG_TAIL_LINE_CHARS = 500
# Exit notes of reaped workers nobody asked about (expected stops) are removed after this long.
EXIT_NOTE_MAX_AGE_S = 24 * 3600
# What our workers' own exit codes mean (servers.workers.base).
EXIT_CODE_MEANINGS = {EXIT_NO_CONFIGURATION: "its configuration is gone", EXIT_BIND_FAILED: "it could not listen"}
UNKNOWN_NOT_OUR_CHILD = "exit status unknown (not a child of this supervisor)"
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


# The workers this process started. Keeping the Popen objects means the subprocess module never
# reaps one behind our back (it waits for dropped ones), which would lose its exit status.
_spawned: dict[int, subprocess.Popen] = {}


def exit_notes_dir():
    return settings.VAR_DIR / "run" / "exits"


def note_exit(pid: int, exit_code: int) -> None:
    """Keep a reaped worker's exit code where any supervisor process of the node can read it.

    The reconcile runs in whichever Celery process is free, and only a worker's parent can wait for it.
    `exit_code` is the subprocess convention: the code, or minus the signal number.
    """
    notes = exit_notes_dir()
    notes.mkdir(parents=True, exist_ok=True)
    path = notes / str(pid)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(f"{exit_code}\n")
    temporary.replace(path)


def describe_exit_code(exit_code: int) -> str:
    if exit_code < 0:
        try:
            return f"killed by signal {signal.Signals(-exit_code).name}"
        except ValueError:
            return f"killed by signal {-exit_code}"
    meaning = EXIT_CODE_MEANINGS.get(exit_code)
    return f"exited with code {exit_code}" + (f" ({meaning})" if meaning else "")


def _zombie_exit_code(pid: int) -> int | None:
    """The exit code of a dead process its parent has not waited for yet (/proc/<pid>/stat field 52)."""
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            fields = stat_file.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # fields[0] is field 3 (the state); the exit status in waitpid's form is field 52.
    if fields[0] != "Z" or len(fields) < 50:
        return None
    with suppress(ValueError):
        return os.waitstatus_to_exitcode(int(fields[49]))
    return None


def _known_exit_code(pid: int, started_at) -> int | None:
    note = exit_notes_dir() / str(pid)
    with suppress(OSError, ValueError):
        # A note older than the worker belongs to an earlier process with the same pid.
        if started_at is None or note.stat().st_mtime >= started_at.timestamp() - 1:
            exit_code = int(note.read_text())
            note.unlink(missing_ok=True)
            return exit_code
    # Dead, but its parent (another Celery process of the node) has not waited for it yet. The pid was
    # our worker at the last look, so a zombie under it now is that worker.
    return _zombie_exit_code(pid)


def _dying(pid: int) -> bool:
    """Still in the process table but not a zombie yet: a killed process tearing itself down."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def exit_status(pid: int, started_at, *, settle_s: float = 2.0) -> str:
    """How worker `pid` (started at `started_at`) ended, in words, as far as this node can know."""
    deadline = time.monotonic() + settle_s
    while True:
        reap_children()
        exit_code = _known_exit_code(pid, started_at)
        if exit_code is not None:
            return describe_exit_code(exit_code)
        # A killed process loses its command line before it becomes a zombie: give it a moment.
        if not _dying(pid) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if pid in _spawned:
        return "exit status unknown"
    # Adopted after a supervisor restart, or its parent is gone: only that parent could have waited for it.
    return UNKNOWN_NOT_OUR_CHILD


def log_path(unit: SupervisedProcess):
    return settings.VAR_DIR / "log" / f"{unit.process_kind}d-{unit.pk}.log"


def log_tail(unit: SupervisedProcess, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of the worker's own log (its stdout and stderr)."""
    try:
        with open(log_path(unit), "rb") as log_file:
            log_file.seek(0, os.SEEK_END)
            log_file.seek(max(log_file.tell() - 64 * 1024, 0))
            text = log_file.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    tail = text.splitlines()[-lines:]
    return "\n".join(line[:LOG_TAIL_LINE_CHARS] for line in tail)


def _forget_old_exit_notes() -> None:
    with suppress(OSError):
        cutoff = time.time() - EXIT_NOTE_MAX_AGE_S
        for note in exit_notes_dir().iterdir():
            with suppress(OSError):
                if note.stat().st_mtime < cutoff:
                    note.unlink()


def _reaped(process: subprocess.Popen) -> None:
    """`process` was waited for through its Popen: keep its exit code like reap_children does."""
    _spawned.pop(process.pid, None)
    if process.returncode is not None:
        note_exit(process.pid, process.returncode)


def reap_children() -> None:
    """Collect exit statuses of workers we spawned, so they do not linger as zombies, and note them."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        process = _spawned.pop(pid, None)
        if process is not None:
            with suppress(ValueError):
                process.returncode = os.waitstatus_to_exitcode(status)
                note_exit(pid, process.returncode)


def worker_alive(pid: int | None, kind: str, unit_id: int) -> bool:
    """Whether `pid` is a live `kind` worker for `unit_id` (not a zombie, not a reused pid)."""
    if not pid:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return f"run_{kind}d" in cmdline and str(unit_id) in cmdline


def is_descendant(pid: int, ancestor_pid: int | None) -> bool:
    """Whether `pid` is a live process started (directly or not) by `ancestor_pid`."""
    if not ancestor_pid:
        return False
    try:
        return any(child.pid == pid for child in psutil.Process(ancestor_pid).children(recursive=True))
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


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


def spawn_worker(unit: SupervisedProcess) -> subprocess.Popen:
    log_dir = settings.VAR_DIR / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{unit.process_kind}d-{unit.pk}.log", "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(settings.BASE_DIR / "manage.py"), *unit.worker_argv()],
            cwd=settings.BASE_DIR,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": settings.WORKER_SETTINGS_MODULE},
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C meant for the console does not reach it; the supervisor decides.
            start_new_session=True,
        )
    _spawned[process.pid] = process
    return process


class NodeSupervisor:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.redis = redis_client()
        self.redis_ok = True
        self.report = ReconcileReport()

    def heartbeats(self, kind: str, unit_ids: list[int]) -> dict[int, Heartbeat]:
        try:
            beats = read_heartbeats(self.redis, kind, unit_ids)
            self.redis_ok = True
            return beats
        except (redis.RedisError, OSError) as exc:
            log.warning("cannot read heartbeats: %s", exc)
            self.redis_ok = False
            return {}

    def heartbeat(self, unit: SupervisedProcess) -> Heartbeat | None:
        return self.heartbeats(unit.process_kind, [unit.pk]).get(unit.pk)

    # -- one server --------------------------------------------------------------------------
    def reconcile(self, unit: SupervisedProcess, beat: Heartbeat | None) -> None:
        desired = ServiceState(unit.effective_desired_state)
        if not self.alive(unit, unit.pid) and beat and self.alive(unit, beat.pid):
            # A worker that outlived a crashed supervisor: adopt it rather than start a second one.
            unit.pid = beat.pid
        alive = self.alive(unit, unit.pid)
        if desired == ServiceState.STOPPED:
            self._stop(unit, alive)
        elif alive:
            self._steer(unit, beat, desired)
        else:
            self._start(unit, beat)

    def _save(self, unit: SupervisedProcess, **changes) -> None:
        if "state" in changes and changes["state"] != unit.state:
            changes["state_changed_at"] = timezone.now()
        changes = {k: v for k, v in changes.items() if getattr(unit, k) != v}
        if not changes:
            return
        for key, value in changes.items():
            setattr(unit, key, value)
        type(unit).objects.filter(pk=unit.pk).update(**changes)

    def _stop(self, unit: SupervisedProcess, alive: bool) -> None:
        if not alive:
            self._save(unit, state=ObservedState.STOPPED, pid=None)
            return
        if unit.state != ObservedState.STOPPING:
            send_signal(unit.pid, signal.SIGTERM)
            self._save(unit, state=ObservedState.STOPPING)
        elif unit.state_changed_at and timezone.now() - unit.state_changed_at > timedelta(
            seconds=settings.STOP_GRACE_S + 5
        ):
            log.warning("%s %s did not stop in time; killing pid %s", unit.process_kind, unit.pk, unit.pid)
            send_signal(unit.pid, signal.SIGKILL)
        if self._wait_for_exit(unit, unit.pid, settings.STOP_GRACE_S + 2):
            self._save(unit, state=ObservedState.STOPPED, pid=None)
            self.report.stopped.append(unit.pk)

    @staticmethod
    def alive(unit: SupervisedProcess, pid: int | None) -> bool:
        return worker_alive(pid, unit.process_kind, unit.pk)

    def _wait_for_exit(self, unit: SupervisedProcess, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            reap_children()
            if not self.alive(unit, pid):
                return True
            time.sleep(0.05)
        return False

    def _steer(self, unit: SupervisedProcess, beat: Heartbeat | None, desired: ServiceState) -> None:
        now = timezone.now()
        if beat is not None and beat.pid != unit.pid and is_descendant(beat.pid, unit.pid):
            # Only the worker writes its heartbeat; a line from one of its own session processes is no
            # sign of a hang. Wait for the worker's next beat rather than kill a healthy process.
            log.warning(
                "%s %s: heartbeat names pid %s, a child of worker %s; ignoring it",
                unit.process_kind,
                unit.pk,
                beat.pid,
                unit.pid,
            )
            return
        if beat is None or beat.pid != unit.pid or beat.age_s > settings.HEARTBEAT_TTL_S:
            running_for_s = (now - unit.started_at).total_seconds() if unit.started_at else 1e9
            if self.redis_ok and running_for_s > settings.HEARTBEAT_TTL_S:
                log.warning(
                    "%s %s: pid %s stopped sending heartbeats; killing it", unit.process_kind, unit.pk, unit.pid
                )
                send_signal(unit.pid, signal.SIGKILL)
                if self._wait_for_exit(unit, unit.pid, 2):
                    self._record_exit(unit, None, cause="stopped sending heartbeats and was killed by the supervisor")
            return
        if beat.state in (ObservedState.RUNNING, ObservedState.PAUSED) and beat.state != desired:
            send_signal(unit.pid, SIGNAL_FOR_STATE[desired])
            self.report.signalled.append(unit.pk)
            beat = self._await_heartbeat(unit, unit.pid, desired) or beat
        if beat.config_version < unit.config_version:
            send_signal(unit.pid, signal.SIGHUP)
            self.report.signalled.append(unit.pk)
        changes: dict[str, object] = {"state": beat.state}
        if (
            unit.consecutive_failures
            and unit.started_at
            and ((now - unit.started_at).total_seconds() > HEALTHY_UPTIME_S)
        ):
            changes["consecutive_failures"] = 0
        if not unit.heartbeat_at or (now - unit.heartbeat_at).total_seconds() > 30 or (beat.state != unit.state):
            changes["heartbeat_at"] = now
        if beat.state in (ObservedState.RUNNING, ObservedState.PAUSED):
            changes["last_error"] = ""
        self._save(unit, **changes)

    def _await_heartbeat(self, unit: SupervisedProcess, pid: int, state: str, timeout_s: float = 3) -> Heartbeat | None:
        """Wait for the worker to confirm a state change, so the database shows it at once."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            beat = self.heartbeat(unit)
            if beat is not None and beat.pid == pid and beat.state == state:
                return beat
            time.sleep(0.05)
        return None

    def _start(self, unit: SupervisedProcess, beat: Heartbeat | None) -> None:
        now = timezone.now()
        if unit.pid is not None or unit.state in (
            ObservedState.STARTING,
            ObservedState.RUNNING,
            ObservedState.PAUSED,
            ObservedState.STOPPING,
        ):
            self._record_exit(unit, beat)
        if unit.next_start_at and now < unit.next_start_at:
            return
        with suppress(redis.RedisError, OSError):
            self.redis.delete(heartbeat_key(unit.process_kind, unit.pk))
        process = spawn_worker(unit)
        self._save(unit, state=ObservedState.STARTING, pid=process.pid, started_at=now, next_start_at=None)
        self.report.started.append(unit.pk)
        self._wait_for_report(unit, process)

    def _record_exit(
        self, unit: SupervisedProcess, beat: Heartbeat | None, *, cause: str = "exited unexpectedly"
    ) -> None:
        """The worker is gone though it should run: note why and schedule the restart."""
        reap_children()
        if beat is not None and beat.state == ObservedState.STOPPED and beat.pid == unit.pid:
            # It left on purpose (e.g. to rebind a changed address): start again at once.
            self._save(unit, pid=None, state=ObservedState.STOPPED)
            return
        failed_on_error = beat is not None and beat.state == ObservedState.ERROR
        failures = unit.consecutive_failures + 1
        delay = backoff_s(failures, first_is_free=not failed_on_error)
        status = exit_status(unit.pid, unit.started_at) if unit.pid else "exit status unknown (no process recorded)"
        tail = log_tail(unit)
        error = beat.error if failed_on_error and beat is not None else f"worker process {unit.pid} {cause}: {status}"
        log.warning(
            "%s %s: %s (%s); restart in %ss; last lines of %s:\n%s",
            unit.process_kind,
            unit.pk,
            error,
            status,
            delay,
            log_path(unit),
            "\n".join(f"  | {line}" for line in tail.splitlines()) or "  | (empty)",
        )
        self._save(
            unit,
            pid=None,
            state=ObservedState.ERROR,
            last_error=error,
            restart_count=unit.restart_count + 1,
            consecutive_failures=failures,
            next_start_at=timezone.now() + timedelta(seconds=delay),
            last_exit_at=timezone.now(),
            last_exit_status=status[:200],
            last_exit_log=tail,
        )
        self.report.failed.append(unit.pk)

    def _wait_for_report(self, unit: SupervisedProcess, process: subprocess.Popen) -> None:
        """Wait until the new worker heartbeats or exits, so the caller sees a settled state."""
        deadline = time.monotonic() + START_WAIT_S
        while time.monotonic() < deadline:
            beat = self.heartbeat(unit)
            if beat is not None and beat.pid == process.pid and beat.state != ObservedState.STOPPED:
                if beat.state == ObservedState.ERROR:
                    with suppress(subprocess.TimeoutExpired):
                        process.wait(timeout=5)
                    _reaped(process)
                    self._record_exit(unit, beat)
                else:
                    self._save(unit, state=beat.state, heartbeat_at=timezone.now(), last_error="")
                return
            if process.poll() is not None:
                _reaped(process)
                self._record_exit(unit, self.heartbeat(unit))
                return
            time.sleep(0.05)

    # -- the whole node ----------------------------------------------------------------------
    def units(self) -> list[SupervisedProcess]:
        units: list[SupervisedProcess] = []
        for model in SUPERVISED_MODELS:
            units += list(model.objects.on_node(self.node).select_related("node"))
        return units

    def reconcile_all(self) -> ReconcileReport:
        reap_children()
        _forget_old_exit_notes()
        for model in SUPERVISED_MODELS:
            units = list(model.objects.on_node(self.node).select_related("node"))
            beats = self.heartbeats(model.process_kind, [u.pk for u in units])
            for unit in units:
                try:
                    self.reconcile(unit, beats.get(unit.pk))
                except Exception:
                    log.exception("reconcile of %s %s failed", model.process_kind, unit.pk)
            self.terminate_orphans(model)
        return self.report

    def terminate_orphans(self, model: type[SupervisedProcess]) -> None:
        """Stop workers whose configuration was deleted while they ran."""
        if not self.redis_ok:
            return
        kind = model.process_kind
        try:
            beat_ids = heartbeat_unit_ids(self.redis, kind)
        except (redis.RedisError, OSError):
            return
        existing = set(model.objects.filter(pk__in=beat_ids).values_list("pk", flat=True))
        for unit_id, beat in self.heartbeats(kind, [i for i in beat_ids if i not in existing]).items():
            # Only our own node's workers: another node sharing this Redis runs its own.
            if beat.node == self.node.name and worker_alive(beat.pid, kind, unit_id):
                log.info("stopping worker %s of deleted %s %s", beat.pid, kind, unit_id)
                send_signal(beat.pid, signal.SIGTERM)

    def stop_all(self, timeout_s: float) -> None:
        """Stop every worker of the node without changing what is desired (stack shutdown)."""
        units = [u for u in self.units() if self.alive(u, u.pid)]
        for unit in units:
            send_signal(unit.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for unit in units:
            if not self._wait_for_exit(unit, unit.pid, max(deadline - time.monotonic(), 0.1)):
                send_signal(unit.pid, signal.SIGKILL)
                self._wait_for_exit(unit, unit.pid, 2)
            self._save(unit, state=ObservedState.STOPPED, pid=None)


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


def terminate_worker(kind: str, unit_id: int, pid: int) -> bool:
    """Stop the worker of a deleted server or service, if it is still that one's worker."""
    if worker_alive(pid, kind, unit_id):
        return send_signal(pid, signal.SIGTERM)
    return False
