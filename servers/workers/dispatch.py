"""Several processes for one virtual server: the supervised worker accepts, session processes serve.

With `worker_processes` above 1, the supervised worker keeps the listening sockets and hands each
accepted connection over a Unix socket (SCM_RIGHTS) to a session process chosen by the client's
address. All of one client's sessions land in the same process, so the per-client limits
(connections, hourly counts, AUTH failures) stay exact; the global connection limit is counted
here, from what each session process reports. Session processes set PR_SET_PDEATHSIG, so a SIGKILL
of the supervised pid takes them along, and they never hold a listening socket: a worker restarted
after a crash can bind at once.

The channel's queue is short (a few messages), so a burst of connects fills it while the session
process is busy: a connection that cannot be handed over at once waits in that process's backlog
until the channel has room (its place in the order kept). One that no live process can take, or
that waited HANDOFF_TIMEOUT_S, is told `unavailable` (a 421) and closed: every accepted connection
gets a reply.

A session process gets connections only once it said it is ready (its first report): until then a
client of it goes to another ready process, or waits in its backlog if none is. A descriptor in
flight on the channel of a process that dies is closed by the kernel without a word, so a process
that fails while starting (a database error, a bad certificate) must never hold any.

Messages on the channel (SOCK_SEQPACKET, one per send):
  accepting -> session process: TAG_PLAIN or TAG_IMPLICIT_TLS, with one file descriptor;
  session process -> accepting: b"<open sessions> <connections received so far>[ <reason>=<n>,…]", when
  ready and then every REPORT_INTERVAL_S if it changed; the optional third field is its anti-spam
  refusals by reason since it started, which the accepting process adds to its own for the heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import signal
import socket
import subprocess
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

log = logging.getLogger("mailconsole.worker")

TAG_PLAIN = b"P"
TAG_IMPLICIT_TLS = b"T"
PR_SET_PDEATHSIG = 1
RESPAWN_DELAY_S = 1.0
REPORT_INTERVAL_S = 0.25
# A connection waits at most this long for its session process to take it, then gets a 421.
HANDOFF_TIMEOUT_S = 10.0
# Connections one session process may have waiting; more would only hold descriptors.
MAX_BACKLOG = 2048
ACCEPT_PAUSE_S = 0.1
# A flood of 421s is logged once per this many seconds, with a count.
UNAVAILABLE_LOG_INTERVAL_S = 5.0
# A report is a few numbers and a short list of refusal reasons; a longer one is cut (and ignored).
REPORT_MAX_BYTES = 1024


def format_report(open_sessions: int, received: int, refusals: Mapping[str, int]) -> bytes:
    """What a session process tells the accepting one (see the module's docstring)."""
    text = f"{open_sessions} {received}"
    counted = ",".join(
        f"{re.sub(r'[^A-Za-z0-9_.-]', '_', reason)}={count}" for reason, count in sorted(refusals.items()) if count
    )
    return f"{text} {counted}".encode() if counted else text.encode()


def parse_report(report: bytes) -> tuple[int, int, dict[str, int]]:
    """`format_report`'s numbers back (ValueError if the first two are not numbers); a refusal count that
    does not parse is left out rather than costing the session counts."""
    parts = report.decode("ascii", "replace").split()
    if len(parts) < 2:
        raise ValueError(f"not a report: {report[:80]!r}")
    refusals = {}
    for item in ",".join(parts[2:]).split(","):
        reason, _sep, count = item.partition("=")
        if reason and count.isdigit():
            refusals[reason] = int(count)
    return int(parts[0]), int(parts[1]), refusals


@dataclass
class PendingConnection:
    connection: socket.socket
    client_ip: str
    tag: bytes
    accepted_at: float


def die_with_parent(parent_pid: int) -> None:
    """In a session process: be killed when the accepting process dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # The parent may have died before the prctl: then we were re-parented already.
    if os.getppid() != parent_pid:
        os._exit(1)


@dataclass
class SessionProcess:
    index: int
    process: subprocess.Popen | None = None
    channel: socket.socket | None = None
    open_sessions: int = 0
    sent: int = 0
    received: int = 0  # as last reported by the process
    refusals: dict[str, int] = field(default_factory=dict)  # as last reported by the process
    down_since: float = 0.0
    # Until its first report a process cannot take signals (their default action kills it).
    ready: bool = False
    missed_signal: bool = False
    # Accepted connections waiting for room on the channel, oldest first.
    backlog: deque[PendingConnection] = field(default_factory=deque)

    @property
    def estimated_sessions(self) -> int:
        # Connections sent but not yet seen by the process, or still waiting, count as open.
        return self.open_sessions + max(self.sent - self.received, 0) + len(self.backlog)


class ListenerHandle:
    """What the worker closes on stop: stop accepting on one listening socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self._loop = loop
        self._sock = sock

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


class Dispatcher:
    """The accepting side: spawns the session processes, routes connections, keeps counts."""

    def __init__(
        self,
        *,
        count: int,
        child_argv: Callable[[int, int], list[str]],
        refusal: Callable[[int], bytes | None],
        unavailable: Callable[[], bytes],
    ) -> None:
        """`child_argv(index, channel_fd)` is a session process's command line; `refusal(open)`
        is what to answer a new connection when `open` sessions exist already (None: accept);
        `unavailable()` what to answer one that no session process can take."""
        self.children = [SessionProcess(index) for index in range(1, count + 1)]
        self._child_argv = child_argv
        self._refusal = refusal
        self._unavailable = unavailable
        self._stopping = False
        self._watch_task: asyncio.Task | None = None
        self._unavailable_count = 0
        self._unavailable_logged_at = 0.0
        # What session processes that were replaced had reported: the counts cover the worker's life.
        self._earlier_refusals: Counter[str] = Counter()

    @property
    def open_sessions(self) -> int:
        return sum(child.estimated_sessions for child in self.children)

    def refusal_counts(self) -> Counter[str]:
        """Anti-spam refusals by reason of every session process, past and present, since the worker started."""
        total = Counter(self._earlier_refusals)
        for child in self.children:
            total.update(child.refusals)
        return total

    def _keep_refusals(self, child: SessionProcess) -> None:
        self._earlier_refusals.update(child.refusals)
        child.refusals = {}

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)
        self._watch_task = asyncio.create_task(self._watch())

    def _spawn(self, child: SessionProcess) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            child.process = subprocess.Popen(
                self._child_argv(child.index, theirs.fileno()), pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        child.channel = ours
        child.open_sessions = child.sent = child.received = 0
        self._keep_refusals(child)
        child.ready = child.missed_signal = False
        asyncio.get_running_loop().add_reader(ours.fileno(), self._read_reports, child)
        log.info("session process %d started, pid %d", child.index, child.process.pid)

    def _read_reports(self, child: SessionProcess) -> None:
        channel = child.channel
        while channel is not None:
            try:
                report = channel.recv(REPORT_MAX_BYTES)
            except BlockingIOError:
                return
            except OSError:
                report = b""
            if not report:
                self._forget_channel(child)
                return
            with contextlib.suppress(ValueError):
                open_sessions, received, refusals = parse_report(report)
                child.open_sessions, child.received, child.refusals = open_sessions, received, refusals
            if not child.ready:
                child.ready = True
                if child.backlog and child.channel is not None:
                    # What waited for it to start: handed over as the channel has room.
                    asyncio.get_running_loop().add_writer(child.channel.fileno(), self._flush_backlog, child)
                if child.missed_signal and child.process is not None:
                    # It may have read the configuration before the change it was not told of.
                    with contextlib.suppress(ProcessLookupError):
                        child.process.send_signal(signal.SIGHUP)

    def _forget_channel(self, child: SessionProcess) -> None:
        if child.channel is not None:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(child.channel.fileno())
            with contextlib.suppress(ValueError, OSError):
                loop.remove_writer(child.channel.fileno())
            child.channel.close()
            child.channel = None
        if not child.down_since:
            child.down_since = time.monotonic()
        # Its waiting connections go to another process (or get their 421).
        waiting, child.backlog = child.backlog, deque()
        for pending in waiting:
            self._hand_over(pending)

    async def _watch(self) -> None:
        """Start again a session process that died (its sessions died with it)."""
        while not self._stopping:
            await asyncio.sleep(0.2)
            for child in self.children:
                if child.process is not None and child.process.poll() is not None:
                    log.warning(
                        "session process %d (pid %d) exited with %s",
                        child.index,
                        child.process.pid,
                        child.process.returncode,
                    )
                    self._forget_channel(child)
                    child.process = None
                if child.process is None and time.monotonic() - child.down_since >= RESPAWN_DELAY_S:
                    with contextlib.suppress(OSError):
                        self._spawn(child)
                        child.down_since = 0.0
                self._expire_backlog(child)

    def _expire_backlog(self, child: SessionProcess) -> None:
        """Answer 421 to connections a stuck session process has not taken in time."""
        deadline = time.monotonic() - HANDOFF_TIMEOUT_S
        while child.backlog and child.backlog[0].accepted_at < deadline:
            pending = child.backlog.popleft()
            self._answer_unavailable(pending, f"session process {child.index} did not take it in {HANDOFF_TIMEOUT_S}s")

    def listen(self, sock: socket.socket, tag: bytes) -> ListenerHandle:
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._accept, sock, tag)
        return ListenerHandle(loop, sock)

    def _accept(self, listening: socket.socket, tag: bytes) -> None:
        for _ in range(64):  # a burst at a time, then let the loop read reports
            try:
                connection, peer = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # Out of descriptors or memory: the connection waits in the listen queue. Pause rather
                # than spin on a socket that stays readable.
                log.warning("accept failed: %s; accepting again in %ss", exc, ACCEPT_PAUSE_S)
                loop = asyncio.get_running_loop()
                loop.remove_reader(listening.fileno())
                loop.call_later(ACCEPT_PAUSE_S, self._resume_accepting, listening, tag)
                return
            self._dispatch(connection, peer[0] if peer else "", tag)

    def _resume_accepting(self, listening: socket.socket, tag: bytes) -> None:
        if listening.fileno() != -1 and not self._stopping:  # not closed meanwhile
            asyncio.get_running_loop().add_reader(listening.fileno(), self._accept, listening, tag)

    @staticmethod
    def _answer_and_close(connection: socket.socket, reply: bytes) -> None:
        with contextlib.suppress(OSError):
            connection.setblocking(False)
            connection.send(reply)
        connection.close()

    def _dispatch(self, connection: socket.socket, client_ip: str, tag: bytes) -> None:
        """Take charge of an accepted connection: refuse it, or hand it to a session process."""
        refusal = self._refusal(self.open_sessions)
        if refusal is not None:
            self._answer_and_close(connection, refusal)
            return
        self._hand_over(PendingConnection(connection, client_ip, tag, time.monotonic()))

    def _hand_over(self, pending: PendingConnection) -> None:
        for child in self._candidates(pending.client_ip):
            if child.backlog or not child.ready:
                if len(child.backlog) >= MAX_BACKLOG:
                    break
                child.backlog.append(pending)  # behind the ones already waiting, in order
                return
            assert child.channel is not None
            try:
                self._send(child, pending)
            except BlockingIOError:
                # The channel's queue is full: wait for room rather than drop the connection.
                child.backlog.append(pending)
                asyncio.get_running_loop().add_writer(child.channel.fileno(), self._flush_backlog, child)
                return
            except OSError:
                continue  # dead: the next one
            return
        self._answer_unavailable(pending, "no session process could take it")

    def _candidates(self, client_ip: str) -> list[SessionProcess]:
        """The processes that may take a client's connection, best first.

        The same client always goes to the same process while it runs, so per-client state is whole;
        while that one is (re)starting, to the next ready one; a starting process only when none is ready.
        """
        if self._stopping:
            return []
        start = zlib.crc32(client_ip.encode()) % len(self.children)
        in_order = [self.children[(start + offset) % len(self.children)] for offset in range(len(self.children))]
        live = [child for child in in_order if child.channel is not None]
        return [child for child in live if child.ready] + [child for child in live if not child.ready]

    def _answer_unavailable(self, pending: PendingConnection, why: str) -> None:
        self._answer_and_close(pending.connection, self._unavailable())
        self._unavailable_count += 1
        now = time.monotonic()
        if now - self._unavailable_logged_at >= UNAVAILABLE_LOG_INTERVAL_S:
            log.warning(
                "answered 421 to a connection from %s: %s (%d such since the last report)",
                pending.client_ip,
                why,
                self._unavailable_count,
            )
            self._unavailable_logged_at, self._unavailable_count = now, 0

    @staticmethod
    def _send(child: SessionProcess, pending: PendingConnection) -> None:
        assert child.channel is not None
        socket.send_fds(child.channel, [pending.tag], [pending.connection.fileno()])
        child.sent += 1
        pending.connection.close()  # the session process has its own copy now

    def _flush_backlog(self, child: SessionProcess) -> None:
        """The channel has room: hand over the waiting connections, oldest first."""
        while child.backlog and child.channel is not None:
            try:
                self._send(child, child.backlog[0])
            except BlockingIOError:
                return  # still full; called again when there is room
            except OSError:
                self._forget_channel(child)  # re-routes the backlog
                return
            child.backlog.popleft()
        if child.channel is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_writer(child.channel.fileno())

    def signal_all(self, sig: signal.Signals) -> None:
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                if not child.ready and sig not in (signal.SIGTERM, signal.SIGKILL):
                    child.missed_signal = True
                    continue
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(sig)

    async def stop(self, grace_s: float) -> None:
        """Ask every session process to stop (they finish open transactions), then make sure."""
        self._stopping = True
        if self._watch_task is not None:
            self._watch_task.cancel()
        for child in self.children:
            while child.backlog:
                self._answer_and_close(child.backlog.popleft().connection, self._unavailable())
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(
            c.process is not None and c.process.poll() is None for c in self.children
        ):
            await asyncio.sleep(0.05)
        self.signal_all(signal.SIGKILL)
        for child in self.children:
            if child.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.process.wait(timeout=2)
            self._forget_channel(child)


class ConnectionReceiver:
    """The session-process side of the channel: adopt connections, report counts."""

    def __init__(
        self,
        channel: socket.socket,
        adopt: Callable[[socket.socket, bool], None],
        open_sessions: Callable[[], int],
        on_parent_gone: Callable[[], None],
        refusals: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        self.channel = channel
        self._adopt = adopt
        self._open_sessions = open_sessions
        self._on_parent_gone = on_parent_gone
        self.received = 0
        self._refusals = refusals
        self._last_report: bytes | None = None

    def start(self) -> None:
        """Start taking connections; the first report tells the accepting process we are ready."""
        self.channel.setblocking(False)
        asyncio.get_running_loop().add_reader(self.channel.fileno(), self._receive)
        self.report(force=True)

    def stop(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self.channel.fileno())

    def _receive(self) -> None:
        while True:
            try:
                message, fds, _flags, _address = socket.recv_fds(self.channel, 16, 4)
            except BlockingIOError:
                break
            except OSError:
                message, fds = b"", []
            if not message and not fds:
                self.stop()
                self._on_parent_gone()
                return
            for fd in fds:
                self.received += 1
                self._adopt(socket.socket(fileno=fd), message.startswith(TAG_IMPLICIT_TLS))
        # No report here: the accepting side counts what it sent, and the periodic report catches up.

    def report(self, *, force: bool = False) -> None:
        current = format_report(self._open_sessions(), self.received, self._refusals())
        if current == self._last_report and not force:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            self.channel.send(current)
            self._last_report = current

    async def report_forever(self) -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL_S)
            self.report()
