"""One virtual SMTP server as an OS process (`manage.py run_smtpd --server N`)."""

from __future__ import annotations

import asyncio
import socket
import time

from django.conf import settings

from servers.smtp import LocalDeliveryHandler, MailConsoleSMTP
from servers.snapshot import ServerSnapshot, load_snapshot
from servers.storage import remove_stale_temp_files
from servers.workers.base import SupervisedWorker, run_worker


class SMTPWorker(SupervisedWorker):
    kind = "smtp"
    snapshot: ServerSnapshot

    def load_snapshot(self) -> ServerSnapshot:
        return load_snapshot(self.unit_id)

    def addresses(self, snapshot: ServerSnapshot) -> list[tuple[str, int]]:
        return [(snapshot.ip_address, snapshot.port)]

    async def before_serving(self) -> None:
        self.snapshot.tmp_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.get_running_loop().run_in_executor(None, remove_stale_temp_files, self.snapshot.tmp_dir)

    def session_factory(self) -> MailConsoleSMTP:
        return MailConsoleSMTP(
            self.handler,
            control=self.control,
            hostname=self.snapshot.hostname,
            ident="MailConsole ESMTP",
            data_size_limit=self.snapshot.max_message_size_bytes,
            enable_SMTPUTF8=True,
            timeout=600,
        )

    async def serve(self, sockets: list[socket.socket]) -> list[asyncio.Server]:
        self.handler = LocalDeliveryHandler(lambda: self.snapshot)
        loop = asyncio.get_running_loop()
        return [await loop.create_server(self.session_factory, sock=sock) for sock in sockets]

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
