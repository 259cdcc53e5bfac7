"""What every supervised worker process shares: heartbeats, control signals, graceful stop.

Signals: SIGUSR1 pauses, SIGUSR2 resumes, SIGHUP reloads the configuration, SIGTERM/SIGINT stop
gracefully. A subclass says how to load its configuration, which sockets to open and how to serve
and close its sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import connection

from servers.livestate import heartbeat_key, sessions_key, terminate_key
from servers.models import ObservedState, ServiceState

log = logging.getLogger("mailconsole.worker")

# Exit codes the supervisor reads: the configuration is gone, or a port could not be bound.
EXIT_NO_CONFIGURATION = 2
EXIT_BIND_FAILED = 3


class WorkerControl:
    """State shared by every session of one worker: paused or stopping, and who is connected."""

    def __init__(self) -> None:
        self.paused = False
        self.stopping = False
        self.sessions: set[Any] = set()

    @property
    def refuses_new_sessions(self) -> bool:
        return self.paused or self.stopping


def listening_socket(ip_address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in ip_address else socket.AF_INET
    return socket.create_server((ip_address, port), family=family, backlog=1024, reuse_port=False)


class SupervisedWorker:
    kind = ""

    def __init__(self, unit_id: int, process_index: int = 0) -> None:
        self.unit_id = unit_id
        # 0: the supervised process; 1..n: a session process it started (servers.workers.dispatch).
        self.process_index = process_index
        self.snapshot: Any = None
        self.control = WorkerControl()
        self.redis = aioredis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        self.stop_requested = asyncio.Event()
        self._redis_down_logged = False

    # -- for subclasses ----------------------------------------------------------------------
    def load_snapshot(self) -> Any:
        """Read this worker's configuration from the database (runs in a thread)."""
        raise NotImplementedError

    def addresses(self, snapshot: Any) -> list[tuple[str, int]]:
        """The (ip, port) pairs to listen on; a change means a restart."""
        raise NotImplementedError

    def restart_key(self, snapshot: Any) -> Any:
        """The settings only a restart can apply: the addresses, unless a subclass adds more."""
        return self.addresses(snapshot)

    def session_count(self) -> int:
        return len(self.control.sessions)

    def heartbeat_fields(self) -> dict[str, str]:
        """More live state for the heartbeat (the SMTP worker's refusal counts)."""
        return {}

    async def serve(self, sockets: list[socket.socket]) -> list[asyncio.Server]:
        raise NotImplementedError

    async def close_sessions(self) -> None:
        """Stop: let sessions finish what they are in the middle of (bounded), then close them."""
        raise NotImplementedError

    def _load_snapshot_and_release_db(self) -> Any:
        try:
            return self.load_snapshot()
        finally:
            # The worker may not touch the database again for hours: give the connection back.
            connection.close()

    async def before_serving(self) -> None:
        """Start-up work after the configuration is loaded (runs on the loop; offload disk work)."""

    # -- heartbeat ---------------------------------------------------------------------------
    @property
    def reported_state(self) -> str:
        if self.control.stopping:
            return ObservedState.STOPPING
        return ObservedState.PAUSED if self.control.paused else ObservedState.RUNNING

    @property
    def writes_heartbeat(self) -> bool:
        """Only the supervised process names itself in the heartbeat; its session processes never do."""
        return self.process_index == 0

    async def publish_heartbeat(self, *, state: str | None = None, error: str = "", ttl_s: int | None = None) -> None:
        if not self.writes_heartbeat:
            # The supervisor takes the pid in the heartbeat for the worker's: a session process that
            # wrote its own there (after a forwarded reload or pause) would get the worker killed.
            return
        fields: dict[str, str | int | float] = {
            "pid": os.getpid(),
            "state": state or self.reported_state,
            "config_version": getattr(self.snapshot, "config_version", 0),
            "sent_at": time.time(),
            "error": error,
            "sessions": self.session_count(),
            "node": settings.NODE_NAME,
            **self.heartbeat_fields(),
        }
        key = heartbeat_key(self.kind, self.unit_id)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                # redis-py's Mapping is invariant in its key type, so no dict[str, ...] fits it.
                pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
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
            await self.publish_sessions_and_take_orders()
            await asyncio.sleep(settings.HEARTBEAT_INTERVAL_S)

    async def publish_sessions_and_take_orders(self) -> None:
        """Show who is connected (the console's Current Sessions) and close the ones asked to go."""
        sessions = {s.session_id: s for s in self.control.sessions if hasattr(s, "session_info")}
        key = sessions_key(self.kind, self.unit_id, self.process_index)
        orders_key = terminate_key(self.kind, self.unit_id)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                if sessions:
                    pipe.hset(key, mapping={sid: json.dumps(s.session_info()) for sid, s in sessions.items()})
                    pipe.expire(key, settings.HEARTBEAT_TTL_S)
                pipe.smembers(orders_key)
                results = await pipe.execute()
            ordered = [sid.decode() if isinstance(sid, bytes) else sid for sid in results[-1]]
            # Take only our own sessions' orders: a sibling session process takes the rest.
            mine = [sid for sid in ordered if sid in sessions]
            if mine:
                await self.redis.srem(orders_key, *mine)
        except (aioredis.RedisError, OSError):
            return
        for session_id in mine:
            session = sessions[session_id]
            log.info("terminating session %s at the administrator's request", session.session_id)
            await self.terminate_session(session)

    async def terminate_session(self, session: Any) -> None:
        raise NotImplementedError

    # -- control -----------------------------------------------------------------------------
    def pause(self) -> None:
        log.info("paused: new connections are refused politely")
        self.control.paused = True
        asyncio.ensure_future(self.publish_heartbeat())

    def resume(self) -> None:
        log.info("running")
        self.control.paused = False
        asyncio.ensure_future(self.publish_heartbeat())

    async def reload(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            snapshot = await loop.run_in_executor(None, self._load_snapshot_and_release_db)
        except ObjectDoesNotExist:
            log.warning("%s %s was deleted; stopping", self.kind, self.unit_id)
            self.stop_requested.set()
            return
        except Exception:
            log.exception("reload failed; keeping the previous configuration")
            return
        if self.restart_key(snapshot) != self.restart_key(self.snapshot):
            # A new address needs a new socket: exit and let the supervisor start us again. The old
            # version stays in our heartbeat, so nobody mistakes this process for the new one.
            log.info("listening address changed; restarting")
            self.stop_requested.set()
            return
        self.snapshot = snapshot
        self.control.paused = snapshot.desired_state == ServiceState.PAUSED
        await self.publish_heartbeat()
        log.info("configuration version %s loaded", snapshot.config_version)

    # -- lifecycle ---------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, self.pause)
        loop.add_signal_handler(signal.SIGUSR2, self.resume)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        loop.add_signal_handler(signal.SIGTERM, self.stop_requested.set)
        loop.add_signal_handler(signal.SIGINT, self.stop_requested.set)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=16, thread_name_prefix=f"{self.kind}d-io"))
        try:
            self.snapshot = await loop.run_in_executor(None, self._load_snapshot_and_release_db)
        except ObjectDoesNotExist:
            log.error("%s %s does not exist", self.kind, self.unit_id)
            return EXIT_NO_CONFIGURATION
        self.control.paused = self.snapshot.desired_state == ServiceState.PAUSED
        sockets = []
        for ip_address, port in self.addresses(self.snapshot):
            try:
                sockets.append(listening_socket(ip_address, port))
            except OSError as exc:
                message = f"cannot listen on {ip_address}:{port}: {exc.strerror or exc}"
                log.error(message)
                for sock in sockets:
                    sock.close()
                await self.publish_heartbeat(state=ObservedState.ERROR, error=message, ttl_s=3600)
                return EXIT_BIND_FAILED
        await self.before_serving()
        listeners = await self.serve(sockets)
        self.install_signal_handlers()
        heartbeat = asyncio.create_task(self.heartbeat_forever())
        where = ", ".join(f"{ip}:{port}" for ip, port in self.addresses(self.snapshot))
        log.info("%s %s listening on %s, pid %s", self.kind, self.unit_id, where, os.getpid())

        await self.stop_requested.wait()
        log.info("stopping: %d session(s) open", len(self.control.sessions))
        self.control.stopping = True
        for listener in listeners:
            listener.close()
        await self.publish_heartbeat()
        await self.close_sessions()
        heartbeat.cancel()
        await self.publish_heartbeat(state=ObservedState.STOPPED)
        await self.redis.aclose()
        return 0


def raise_open_file_limit() -> None:
    """Allow as many descriptors as the hard limit does: every connection holds one, or two while
    it is handed to a session process; a soft limit of 1024 would refuse a burst."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))


def run_worker(worker: SupervisedWorker) -> int:
    raise_open_file_limit()
    name = f"{worker.unit_id}.{worker.process_index}" if worker.process_index else str(worker.unit_id)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {worker.kind}d[{name}] %(levelname)s %(message)s")
    # aiosmtpd logs every command at INFO; the opt-in protocol log covers that, at a fraction of the cost.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    return asyncio.run(worker.run())
