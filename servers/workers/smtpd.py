"""One virtual SMTP server as an OS process (`manage.py run_smtpd --server N`)."""

from __future__ import annotations

import asyncio
import json
import logging
import logging.handlers
import os
import signal
import socket
import ssl
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from aiosmtpd.smtp import TLSSetupException
from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist

from servers import replies
from servers.content_checks import ContentChecks
from servers.inbound_checks import InboundChecks
from servers.livestate import pop_login_key
from servers.models import ServiceState
from servers.smtp import LocalDeliveryHandler, MailConsoleSMTP, WorkerCounters, protocol_log
from servers.smtp_policy import auth_requires_tls, pop_login_recent, server_full_refusal, sweep_reply
from servers.snapshot import ServerSnapshot, load_snapshot
from servers.storage import remove_stale_temp_files
from servers.tls import describe_tls_failure, ensure_self_signed_certificate, format_peer, server_context
from servers.workers.base import EXIT_NO_CONFIGURATION, SupervisedWorker, run_worker
from servers.workers.dispatch import (
    TAG_IMPLICIT_TLS,
    TAG_PLAIN,
    ConnectionReceiver,
    Dispatcher,
    ListenerHandle,
    die_with_parent,
)

log = logging.getLogger("mailconsole.worker")

# The sweep that closes sessions over their time limit or under the minimum data rate.
SWEEP_INTERVAL_S = 2


class WorkerSMTP(MailConsoleSMTP):
    """A session as the worker runs it: a failed STARTTLS handshake is one log line, not a traceback."""

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            # aiosmtpd closes the connection after this; the client gets no reply over a broken channel.
            log.info(
                "TLS handshake failed from %s: %s",
                format_peer(self.session.peer if self.session is not None else None),
                describe_tls_failure(error.__cause__),
            )
            return replies.LOCAL_ERROR
        return await super().handle_exception(error)


class SMTPWorker(SupervisedWorker):
    kind = "smtp"
    snapshot: ServerSnapshot

    def __init__(self, unit_id: int, *, session_channel: socket.socket | None = None, process_index: int = 0) -> None:
        super().__init__(unit_id, process_index)
        self.counters = WorkerCounters()
        self.tls_context: ssl.SSLContext | None = None
        self._log_handler: logging.Handler | None = None
        # Set when this process is one of several session processes of the server.
        self.session_channel = session_channel
        self.dispatcher: Dispatcher | None = None
        self.receiver: ConnectionReceiver | None = None

    def load_snapshot(self) -> ServerSnapshot:
        return load_snapshot(self.unit_id)

    def addresses(self, snapshot: ServerSnapshot) -> list[tuple[str, int]]:
        pairs = [(snapshot.ip_address, snapshot.port)]
        if snapshot.policy.tls_port:
            pairs.append((snapshot.ip_address, snapshot.policy.tls_port))
        return pairs

    def restart_key(self, snapshot: ServerSnapshot) -> tuple:
        return (self.addresses(snapshot), snapshot.policy.worker_processes)

    def session_count(self) -> int:
        if self.dispatcher is not None:
            return self.dispatcher.open_sessions
        return len(self.control.sessions)

    def refusal_counts(self) -> Counter[str]:
        """Anti-spam refusals by reason since the worker started, its session processes' included."""
        total = Counter(self.counters.refusals)
        if self.dispatcher is not None:
            total.update(self.dispatcher.refusal_counts())
        return total

    def heartbeat_fields(self) -> dict[str, str]:
        return {"refusals": json.dumps(dict(sorted(self.refusal_counts().items())))}

    async def before_serving(self) -> None:
        snapshot = self.snapshot
        snapshot.tmp_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, remove_stale_temp_files, snapshot.tmp_dir)
        # A snapshot read from the database always names its certificate (ServerSnapshot allows None).
        assert snapshot.cert_path is not None and snapshot.key_path is not None
        await loop.run_in_executor(
            None, ensure_self_signed_certificate, snapshot.cert_path, snapshot.key_path, snapshot.hostname
        )
        self.tls_context = server_context(snapshot.cert_path, snapshot.key_path)
        self.configure_protocol_log()

    def configure_protocol_log(self) -> None:
        """One line per reply into <home>/Logs/smtp.log, rotated daily, when the General tab says so."""
        if self.snapshot.policy.protocol_logging and self._log_handler is None:
            log_dir = self.snapshot.home_dir / "Logs"
            log_dir.mkdir(parents=True, exist_ok=True)
            handler = logging.handlers.TimedRotatingFileHandler(log_dir / "smtp.log", when="midnight", backupCount=30)
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            protocol_log.addHandler(handler)
            protocol_log.setLevel(logging.INFO)
            protocol_log.propagate = False
            self._log_handler = handler
        elif not self.snapshot.policy.protocol_logging and self._log_handler is not None:
            protocol_log.removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    def pause(self) -> None:
        super().pause()
        if self.dispatcher is not None:
            self.dispatcher.signal_all(signal.SIGUSR1)

    def resume(self) -> None:
        super().resume()
        if self.dispatcher is not None:
            self.dispatcher.signal_all(signal.SIGUSR2)

    async def reload(self) -> None:
        await super().reload()
        if self.dispatcher is not None:
            self.dispatcher.signal_all(signal.SIGHUP)  # each reads the new configuration itself
        self.configure_protocol_log()
        if self.tls_context is not None:
            # In place, so the implicit-TLS listener and new STARTTLS sessions both get a new certificate.
            assert self.snapshot.cert_path is not None and self.snapshot.key_path is not None
            self.tls_context.load_cert_chain(self.snapshot.cert_path, self.snapshot.key_path)

    def session_factory(self, *, implicit_tls: bool) -> MailConsoleSMTP:
        snapshot = self.snapshot
        policy = snapshot.policy
        return WorkerSMTP(
            self.handler,
            control=self.control,
            counters=self.counters,
            snapshot=snapshot,
            implicit_tls=implicit_tls,
            hostname=snapshot.hostname,
            ident="MailConsole ESMTP",
            data_size_limit=snapshot.max_message_size_bytes,
            enable_SMTPUTF8=True,
            timeout=policy.idle_timeout_s,
            tls_context=None if implicit_tls else self.tls_context,
            auth_require_tls=auth_requires_tls(policy, implicit_tls=implicit_tls),
            auth_required=not policy.allow_anonymous,
            auth_exclude_mechanism=[] if policy.allow_basic_auth else ["PLAIN", "LOGIN"],
            loop=asyncio.get_running_loop(),
        )

    async def pop_before_smtp(self, client_ip: str, minutes: int) -> bool:
        try:
            logged_in_at = await self.redis.get(pop_login_key(client_ip))
        except OSError:
            return False
        return pop_login_recent(None if logged_in_at is None else float(logged_in_at), now=time.time(), minutes=minutes)

    async def serve(self, sockets: list[socket.socket]) -> list:
        if self.snapshot.policy.worker_processes > 1:
            return self.serve_through_session_processes(sockets)
        self.handler = LocalDeliveryHandler(
            lambda: self.snapshot,
            self.counters,
            self.pop_before_smtp,
            InboundChecks(self.redis),
            ContentChecks(self.redis),
        )
        loop = asyncio.get_running_loop()
        servers = [await loop.create_server(lambda: self.session_factory(implicit_tls=False), sock=sockets[0])]
        if len(sockets) > 1:
            servers.append(
                await loop.create_server(
                    lambda: self.session_factory(implicit_tls=True), sock=sockets[1], ssl=self.tls_context
                )
            )
        asyncio.create_task(self.sweep_forever())
        return servers

    # -- several processes (servers.workers.dispatch) -------------------------------------------
    def serve_through_session_processes(self, sockets: list[socket.socket]) -> list[ListenerHandle]:
        def child_argv(index: int, channel_fd: int) -> list[str]:
            return [
                sys.executable,
                str(settings.BASE_DIR / "manage.py"),
                "run_smtpd",
                "--server",
                str(self.unit_id),
                "--session-process",
                f"{index}:{channel_fd}:{os.getpid()}",
            ]

        def refusal(open_sessions: int) -> bytes | None:
            reply = server_full_refusal(self.snapshot.policy, open_sessions)
            if reply is None:
                return None
            return f"{reply.format(hostname=self.snapshot.hostname)}\r\n".encode()

        def unavailable() -> bytes:
            return f"{replies.NO_SESSION_PROCESS.format(hostname=self.snapshot.hostname)}\r\n".encode()

        self.dispatcher = Dispatcher(
            count=self.snapshot.policy.worker_processes, child_argv=child_argv, refusal=refusal, unavailable=unavailable
        )
        self.dispatcher.start()
        listeners = [self.dispatcher.listen(sockets[0], TAG_PLAIN)]
        if len(sockets) > 1:
            listeners.append(self.dispatcher.listen(sockets[1], TAG_IMPLICIT_TLS))
        return listeners

    async def run(self) -> int:
        if self.session_channel is None:
            return await super().run()
        return await self.run_as_session_process()

    async def run_as_session_process(self) -> int:
        """Serve the connections the accepting process sends; no socket of our own, no heartbeat."""
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=16, thread_name_prefix="smtpd-io"))
        try:
            self.snapshot = await loop.run_in_executor(None, self._load_snapshot_and_release_db)
        except ObjectDoesNotExist:
            return EXIT_NO_CONFIGURATION
        self.control.paused = self.snapshot.desired_state == ServiceState.PAUSED
        await self.before_serving()
        self.handler = LocalDeliveryHandler(
            lambda: self.snapshot,
            self.counters,
            self.pop_before_smtp,
            InboundChecks(self.redis),
            ContentChecks(self.redis),
        )
        assert self.session_channel is not None
        self.receiver = ConnectionReceiver(
            self.session_channel,
            self.adopt_connection,
            lambda: len(self.control.sessions),
            self.stop_requested.set,
            refusals=lambda: self.counters.refusals,
        )
        self.install_signal_handlers()
        self.receiver.start()
        tasks = [
            asyncio.create_task(self.sweep_forever()),
            asyncio.create_task(self.receiver.report_forever()),
            asyncio.create_task(self.publish_sessions_forever()),
        ]
        log.info("session process %d of smtp %s, pid %s", self.process_index, self.unit_id, os.getpid())
        await self.stop_requested.wait()
        self.control.stopping = True
        self.receiver.stop()
        await self.close_sessions()
        for task in tasks:
            task.cancel()
        await self.publish_sessions_and_take_orders()
        await self.redis.aclose()
        return 0

    def adopt_connection(self, connection: socket.socket, implicit_tls: bool) -> None:
        try:
            peer = connection.getpeername()
        except OSError:
            peer = None

        async def adopt() -> None:
            try:
                await asyncio.get_running_loop().connect_accepted_socket(
                    lambda: self.session_factory(implicit_tls=implicit_tls),
                    connection,
                    ssl=self.tls_context if implicit_tls else None,
                )
            except (TimeoutError, OSError, ssl.SSLError) as exc:
                if implicit_tls:
                    log.info("TLS handshake failed from %s: %s", format_peer(peer), describe_tls_failure(exc))
                else:
                    log.info("connection from %s lost before the session began: %s", format_peer(peer), exc)
                connection.close()

        asyncio.ensure_future(adopt())

    async def publish_sessions_forever(self) -> None:
        while True:
            await self.publish_sessions_and_take_orders()
            await asyncio.sleep(settings.HEARTBEAT_INTERVAL_S)

    async def sweep_forever(self) -> None:
        while not self.control.stopping:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            policy = self.snapshot.policy
            now = time.time()
            for session in list(self.control.sessions):
                reply = sweep_reply(policy, age_s=now - session.connected_at, bytes_in=session.bytes_in)
                if reply is not None:
                    await session.close_with(reply)

    async def terminate_session(self, session: MailConsoleSMTP) -> None:
        await session.close_with(replies.TERMINATED)

    async def close_sessions(self) -> None:
        """Tell idle clients 421 now; let open transactions finish within the grace period."""
        if self.dispatcher is not None:
            await self.dispatcher.stop(settings.STOP_GRACE_S + 1)
            return
        for session in [s for s in self.control.sessions if not s.in_transaction]:
            await session.close_idle()
        deadline = time.monotonic() + settings.STOP_GRACE_S
        while any(s.in_transaction for s in self.control.sessions) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for session in list(self.control.sessions):
            await session.close_idle()


def run(server_id: int, session_process: str | None = None) -> int:
    """Run the server's worker, or with `session_process` ("index:channel_fd:parent_pid") one of
    the session processes that worker started."""
    if session_process is None:
        return run_worker(SMTPWorker(server_id))
    index, channel_fd, parent_pid = (int(part) for part in session_process.split(":"))
    die_with_parent(parent_pid)
    channel = socket.socket(fileno=channel_fd)
    return run_worker(SMTPWorker(server_id, session_channel=channel, process_index=index))
