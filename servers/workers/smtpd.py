"""One virtual SMTP server as an OS process (`manage.py run_smtpd --server N`)."""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import socket
import ssl
import time

from django.conf import settings

from servers import replies
from servers.smtp import LocalDeliveryHandler, MailConsoleSMTP, WorkerCounters, protocol_log
from servers.snapshot import ServerSnapshot, load_snapshot
from servers.storage import remove_stale_temp_files
from servers.tls import ensure_self_signed_certificate, server_context
from servers.workers.base import SupervisedWorker, run_worker
from servers.workers.pop3d import POP_AUTH_PREFIX

# The sweep that closes sessions over their time limit or under the minimum data rate.
SWEEP_INTERVAL_S = 2
RATE_GRACE_S = 60


class SMTPWorker(SupervisedWorker):
    kind = "smtp"
    snapshot: ServerSnapshot

    def __init__(self, unit_id: int) -> None:
        super().__init__(unit_id)
        self.counters = WorkerCounters()
        self.tls_context: ssl.SSLContext | None = None
        self._log_handler: logging.Handler | None = None

    def load_snapshot(self) -> ServerSnapshot:
        return load_snapshot(self.unit_id)

    def addresses(self, snapshot: ServerSnapshot) -> list[tuple[str, int]]:
        pairs = [(snapshot.ip_address, snapshot.port)]
        if snapshot.policy.tls_port:
            pairs.append((snapshot.ip_address, snapshot.policy.tls_port))
        return pairs

    async def before_serving(self) -> None:
        snapshot = self.snapshot
        snapshot.tmp_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, remove_stale_temp_files, snapshot.tmp_dir)
        await loop.run_in_executor(None, ensure_self_signed_certificate, snapshot.cert_path, snapshot.key_path,
                                   snapshot.hostname)
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

    async def reload(self) -> None:
        await super().reload()
        self.configure_protocol_log()
        if self.tls_context is not None:
            # In place, so the implicit-TLS listener and new STARTTLS sessions both get a new certificate.
            self.tls_context.load_cert_chain(self.snapshot.cert_path, self.snapshot.key_path)

    def session_factory(self, *, implicit_tls: bool) -> MailConsoleSMTP:
        snapshot = self.snapshot
        policy = snapshot.policy
        return MailConsoleSMTP(
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
            auth_require_tls=policy.require_tls and not implicit_tls,
            auth_required=not policy.allow_anonymous,
            auth_exclude_mechanism=[] if policy.allow_basic_auth else ["PLAIN", "LOGIN"],
        )

    async def pop_before_smtp(self, client_ip: str, minutes: int) -> bool:
        try:
            logged_in_at = await self.redis.get(f"{POP_AUTH_PREFIX}{client_ip}")
        except OSError:
            return False
        return logged_in_at is not None and time.time() - float(logged_in_at) <= minutes * 60

    async def serve(self, sockets: list[socket.socket]) -> list[asyncio.Server]:
        self.handler = LocalDeliveryHandler(lambda: self.snapshot, self.counters, self.pop_before_smtp)
        loop = asyncio.get_running_loop()
        servers = [await loop.create_server(lambda: self.session_factory(implicit_tls=False), sock=sockets[0])]
        if len(sockets) > 1:
            servers.append(await loop.create_server(lambda: self.session_factory(implicit_tls=True),
                                                    sock=sockets[1], ssl=self.tls_context))
        asyncio.create_task(self.sweep_forever())
        return servers

    async def sweep_forever(self) -> None:
        while not self.control.stopping:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            policy = self.snapshot.policy
            now = time.time()
            for session in list(self.control.sessions):
                age_s = now - session.connected_at
                if age_s > policy.max_session_duration_s:
                    await session.close_with(replies.SESSION_TOO_LONG)
                elif policy.min_data_rate_bps and age_s > RATE_GRACE_S and (
                    session.bytes_in / age_s < policy.min_data_rate_bps
                ):
                    await session.close_with(replies.TOO_SLOW)

    async def terminate_session(self, session: MailConsoleSMTP) -> None:
        await session.close_with(replies.TERMINATED)

    async def close_sessions(self) -> None:
        """Tell idle clients 421 now; let open transactions finish within the grace period."""
        for session in [s for s in self.control.sessions if not s.in_transaction]:
            await session.close_idle()
        deadline = time.monotonic() + settings.STOP_GRACE_S
        while any(s.in_transaction for s in self.control.sessions) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for session in list(self.control.sessions):
            await session.close_idle()


def run(server_id: int) -> int:
    return run_worker(SMTPWorker(server_id))
