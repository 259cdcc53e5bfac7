"""The POP3 service of a node as an OS process (`manage.py run_pop3d --service N`).

A thin asyncio adapter around `servers.pop3.POP3Session`: it reads lines, hands them to the
session in a thread (sign-in and mailbox reads touch the database and the disk), writes replies,
and upgrades the connection when the session asks for STLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis

from servers import pop3_replies
from servers.livestate import pop_login_key, redis_client
from servers.maildir import MailboxLock
from servers.mailstore import MaildirMailbox
from servers.models import Pop3Service
from servers.pop3 import AuthOutcome, AuthStatus, POP3Session, SessionState
from servers.services.mail_signin import sign_in_mail_client
from servers.services.mailboxes import record_logon, touch_logon
from servers.tls import describe_tls_failure, format_peer
from servers.workers.base import run_worker
from servers.workers.mail_service import MailServiceWorker, take_buffered

log = logging.getLogger("mailconsole.pop3d")

IDLE_TIMEOUT_S = 600  # RFC 1939 section 3: at least 10 minutes
MAX_LINE_OCTETS = 1000


class Pop3Connection:
    """One connected POP3 client, as the console's Current Sessions view sees it."""

    def __init__(self, writer: asyncio.StreamWriter, client: str) -> None:
        self.writer = writer
        self.client = client
        self.session_id = uuid.uuid4().hex[:12]
        self.connected_at = time.time()
        self.user = ""
        self.state = "AUTHORIZATION"
        self.messages_retrieved = 0

    def session_info(self) -> dict:
        return {
            "id": self.session_id,
            "protocol": "POP3",
            "client": self.client,
            "user": self.user,
            "connected_at": self.connected_at,
            "state": self.state,
            "messages": self.messages_retrieved,
            "bytes": 0,
            "tls": self.writer.get_extra_info("sslcontext") is not None,
        }

    def close_with(self, reply: str) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            self.writer.write(f"{reply}\r\n".encode())
            self.writer.close()


class POP3Worker(MailServiceWorker):
    kind = "pop3"
    service_model = Pop3Service

    async def serve(self, sockets: list[socket.socket]) -> list[asyncio.Server]:
        plain = await asyncio.start_server(
            lambda r, w: self.handle_client(r, w, implicit_tls=False), sock=sockets[0], limit=MAX_LINE_OCTETS * 4
        )
        servers = [plain]
        if len(sockets) > 1:
            servers.append(
                await asyncio.start_server(
                    lambda r, w: self.handle_client(r, w, implicit_tls=True),
                    sock=sockets[1],
                    ssl=self.tls_context,
                    limit=MAX_LINE_OCTETS * 4,
                )
            )
        return servers

    async def close_sessions(self) -> None:
        """POP3 has no transaction to finish mid-command; tell everyone and hang up (no deletions)."""
        for connection in list(self.control.sessions):
            connection.close_with(pop3_replies.SHUTTING_DOWN.format(hostname=self.snapshot.hostname))

    async def terminate_session(self, session: Pop3Connection) -> None:
        session.close_with(pop3_replies.TERMINATED)

    def authenticator_for(self, connection: Pop3Connection) -> Callable[[str, str], AuthOutcome]:
        """The session's sign-in check, run in a thread: throttle, password, lock, logon record."""

        client = connection.client

        def authenticate(username: str, password: str) -> AuthOutcome:
            result = sign_in_mail_client(username, password, client, cache=self.credentials)
            if result.locked:
                return AuthOutcome(AuthStatus.LOCKED)
            signed_in = result.signed_in
            if signed_in is None:
                return AuthOutcome(AuthStatus.BAD_CREDENTIALS, failure_delay_s=result.failure_delay_s)
            lock = MailboxLock(Path(signed_in.maildir))
            if not lock.acquire():
                return AuthOutcome(AuthStatus.IN_USE)
            # The +OK does not wait for the record; QUIT waits for it (not for the last-access
            # update), so a finished session is always in the Logons list.
            logon = self.logon_writer.submit(record_logon, signed_in.mailbox_id, client, "POP3")
            connection.user = signed_in.address
            connection.state = "TRANSACTION"
            remember_pop_login(client)

            def release() -> None:
                lock.release()
                with contextlib.suppress(Exception):
                    logon.result(timeout=30)
                    self.logon_writer.submit(touch_logon, logon.result())

            return AuthOutcome(AuthStatus.OK, MaildirMailbox(Path(signed_in.maildir), on_release=release))

        return authenticate

    async def handle_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, implicit_tls: bool
    ) -> None:
        snapshot = self.snapshot
        if self.control.refuses_new_sessions:
            # RFC 2449 section 8.2: SYS/TEMP says "try again later".
            writer.write(f"{pop3_replies.SERVICE_PAUSED.format(hostname=snapshot.hostname)}\r\n".encode())
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()
            return
        peer = writer.get_extra_info("peername")
        client = peer[0] if peer else "unknown"
        connection = Pop3Connection(writer, client)
        session = POP3Session(
            authenticator=self.authenticator_for(connection),
            hostname=snapshot.hostname,
            default_domain=snapshot.default_domain,
            tls_active=implicit_tls,
            tls_available=self.tls_context is not None and not implicit_tls,
            plaintext_login_requires_tls=snapshot.plaintext_requires_tls,
            max_line_length=MAX_LINE_OCTETS,
        )
        self.control.sessions.add(connection)
        loop = asyncio.get_running_loop()
        try:
            for line in session.greeting():
                writer.write(line)
            await writer.drain()
            while True:
                try:
                    # asyncio.timeout, not wait_for: wait_for makes a Task for every line read.
                    async with asyncio.timeout(IDLE_TIMEOUT_S):
                        line = await read_command_line(reader)
                except TimeoutError:
                    writer.write(f"{pop3_replies.IDLE_TIMEOUT}\r\n".encode())
                    break
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                if not session.may_block(line):
                    reply = session.receive_line(line)
                elif session.state is SessionState.AUTHORIZATION:
                    async with self.sign_in_slots.hold(client):
                        reply = await loop.run_in_executor(None, session.receive_line, line)
                else:
                    reply = await loop.run_in_executor(None, session.receive_line, line)
                if reply.delay_s:
                    await asyncio.sleep(reply.delay_s)  # a throttled failure: holds no thread
                writer.write(reply.data)
                await writer.drain()
                if reply.start_tls:
                    # RFC 2595 section 4 / RFC 3207 section 5 (the CVE-2011-0411 class): bytes that
                    # arrived before the handshake are plaintext a man in the middle may have added.
                    # They must never be read as commands inside TLS. Every STARTTLS in this project
                    # (SMTP, POP3, IMAP) drains its buffer and refuses what was pipelined.
                    injected = take_buffered(reader)
                    if injected:
                        log.warning("%s: %d bytes pipelined after STLS; closing without TLS", client, len(injected))
                        refusal = session.receive_line(injected.split(b"\n", 1)[0] + b"\n")
                        writer.write(refusal.data)
                        await writer.drain()
                        break
                    try:
                        assert self.tls_context is not None  # the session offers STLS only with a context
                        await writer.start_tls(self.tls_context)
                    except (ConnectionError, ssl.SSLError, TimeoutError) as exc:
                        log.info("TLS handshake failed from %s: %s", format_peer(peer), describe_tls_failure(exc))
                        break
                    session.tls_started()
                if reply.close:
                    break
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            log.info("%s: connection ended: %s", client, exc)
        finally:
            self.control.sessions.discard(connection)
            # A dropped connection deletes nothing (RFC 1939 section 6) and unlocks the mailbox.
            await loop.run_in_executor(None, session.connection_lost)
            with contextlib.suppress(Exception):
                writer.close()


async def read_command_line(reader: asyncio.StreamReader) -> bytes:
    """Read one line; a line longer than the reader's limit is discarded whole and comes back as one
    overlong line, so the session answers it with exactly one -ERR."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError as overrun:
        consumed = overrun.consumed
    while True:
        await reader.readexactly(consumed)
        try:
            await reader.readuntil(b"\n")
            return b"X" * (MAX_LINE_OCTETS + 1) + b"\r\n"
        except asyncio.LimitOverrunError as overrun:
            consumed = overrun.consumed


@functools.cache
def _login_redis() -> redis.Redis:
    # One client (and connection pool) for the process, shared by the sign-in threads.
    return redis_client()


def remember_pop_login(client: str) -> None:
    """Note a successful POP3 login by this address, for POP-before-SMTP relaying."""
    try:
        _login_redis().set(pop_login_key(client), time.time(), ex=24 * 3600)
    except (redis.RedisError, OSError):
        log.warning("cannot record the POP3 login of %s for POP-before-SMTP", client)


def run(service_id: int) -> int:
    return run_worker(POP3Worker(service_id))
