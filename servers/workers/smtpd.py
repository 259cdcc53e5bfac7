"""One virtual SMTP server as an OS process: listen, heartbeat, obey signals from the supervisor.

Signals: SIGUSR1 pauses, SIGUSR2 resumes, SIGHUP reloads the configuration, SIGTERM/SIGINT stop
gracefully (stop accepting, let open transactions finish within the grace period, then exit).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import redis.asyncio as aioredis
from django.conf import settings

from servers.livestate import heartbeat_key
from servers.models import ObservedState, ServiceState, VirtualServer
from servers.smtp import DropHandler, ListenerControl, MailConsoleSMTP
from servers.snapshot import ServerSnapshot, load_snapshot
from servers.storage import remove_stale_temp_files

log = logging.getLogger("mailconsole.smtpd")

# Exit codes the supervisor reads: the configuration is unusable, or the port could not be bound.
EXIT_NO_SERVER = 2
EXIT_BIND_FAILED = 3


class SMTPWorker:
    def __init__(self, server_id: int) -> None:
        self.server_id = server_id
        self.snapshot: ServerSnapshot | None = None
        self.control = ListenerControl()
        self.redis = aioredis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        self.stop_requested = asyncio.Event()
        self._redis_down_logged = False

    # -- heartbeat ---------------------------------------------------------------------------
    @property
    def reported_state(self) -> str:
        if self.control.stopping:
            return ObservedState.STOPPING
        return ObservedState.PAUSED if self.control.paused else ObservedState.RUNNING

    async def publish_heartbeat(self, *, state: str | None = None, error: str = "", ttl_s: int | None = None) -> None:
        key = heartbeat_key("smtp", self.server_id)
        fields = {
            "pid": os.getpid(),
            "state": state or self.reported_state,
            "config_version": self.snapshot.config_version if self.snapshot else 0,
            "sent_at": time.time(),
            "error": error,
            "sessions": len(self.control.sessions),
            "node": settings.NODE_NAME,
        }
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=fields)
                pipe.expire(key, ttl_s or settings.HEARTBEAT_TTL_S)
                await pipe.execute()
            self._redis_down_logged = False
        except (aioredis.RedisError, OSError) as exc:
            # Live state may vanish; mail keeps flowing. Say so once, not every second.
            if not self._redis_down_logged:
                log.warning("cannot publish heartbeat: %s", exc)
                self._redis_down_logged = True

    async def heartbeat_forever(self) -> None:
        while True:
            await self.publish_heartbeat()
            await asyncio.sleep(settings.HEARTBEAT_INTERVAL_S)

    # -- control -----------------------------------------------------------------------------
    def pause(self) -> None:
        log.info("paused: new connections get 421")
        self.control.paused = True
        asyncio.ensure_future(self.publish_heartbeat())

    def resume(self) -> None:
        log.info("running")
        self.control.paused = False
        asyncio.ensure_future(self.publish_heartbeat())

    async def reload(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            snapshot = await loop.run_in_executor(None, load_snapshot, self.server_id)
        except VirtualServer.DoesNotExist:
            log.warning("server %s was deleted; stopping", self.server_id)
            self.stop_requested.set()
            return
        except Exception:
            log.exception("reload failed; keeping the previous configuration")
            return
        if (snapshot.ip_address, snapshot.port) != (self.snapshot.ip_address, self.snapshot.port):
            # A new address needs a new socket: exit and let the supervisor start us again.
            log.info("listening address changed; restarting")
            self.stop_requested.set()
        self.snapshot = snapshot
        self.control.paused = snapshot.desired_state == ServiceState.PAUSED
        await self.publish_heartbeat()
        log.info("configuration version %s loaded", snapshot.config_version)

    # -- lifecycle ---------------------------------------------------------------------------
    def bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.snapshot.ip_address else socket.AF_INET
        return socket.create_server(
            (self.snapshot.ip_address, self.snapshot.port), family=family, backlog=1024, reuse_port=False
        )

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

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=16, thread_name_prefix="smtpd-io"))
        try:
            self.snapshot = await loop.run_in_executor(None, load_snapshot, self.server_id)
        except VirtualServer.DoesNotExist:
            log.error("virtual server %s does not exist", self.server_id)
            return EXIT_NO_SERVER
        self.handler = DropHandler(lambda: self.snapshot)
        self.control.paused = self.snapshot.desired_state == ServiceState.PAUSED
        address = f"{self.snapshot.ip_address}:{self.snapshot.port}"
        try:
            sock = self.bind()
        except OSError as exc:
            message = f"cannot listen on {address}: {exc.strerror or exc}"
            log.error(message)
            await self.publish_heartbeat(state=ObservedState.ERROR, error=message, ttl_s=3600)
            return EXIT_BIND_FAILED
        self.snapshot.tmp_dir.mkdir(parents=True, exist_ok=True)
        await loop.run_in_executor(None, remove_stale_temp_files, self.snapshot.tmp_dir)

        listener = await loop.create_server(self.session_factory, sock=sock)
        loop.add_signal_handler(signal.SIGUSR1, self.pause)
        loop.add_signal_handler(signal.SIGUSR2, self.resume)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        loop.add_signal_handler(signal.SIGTERM, self.stop_requested.set)
        loop.add_signal_handler(signal.SIGINT, self.stop_requested.set)
        heartbeat = asyncio.create_task(self.heartbeat_forever())
        log.info("server %s (%s) listening on %s, pid %s", self.server_id, self.snapshot.name, address, os.getpid())

        await self.stop_requested.wait()
        await self.shut_down(listener)
        heartbeat.cancel()
        await self.publish_heartbeat(state=ObservedState.STOPPED, ttl_s=settings.HEARTBEAT_TTL_S)
        await self.redis.aclose()
        return 0

    async def shut_down(self, listener: asyncio.Server) -> None:
        """Stop accepting, let open transactions finish (bounded), then close every session."""
        log.info("stopping: %d session(s) open", len(self.control.sessions))
        self.control.stopping = True
        listener.close()
        await self.publish_heartbeat()
        for session in [s for s in self.control.sessions if not s.in_transaction]:
            await session.close_idle()
        deadline = time.monotonic() + settings.STOP_GRACE_S
        while self.control.sessions_in_transaction() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for session in list(self.control.sessions):
            await session.close_idle()
        await listener.wait_closed()


def run_worker(server_id: int) -> int:
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s smtpd[{server_id}] %(levelname)s %(message)s", stream=sys.stderr
    )
    return asyncio.run(SMTPWorker(server_id).run())
