"""The IMAP service of a node as an OS process (`manage.py run_imapd --service N`).

A thin asyncio adapter around the sans-I/O `servers.imap.session.ImapSession`: it reads whatever
the client sends, hands it to the session in a thread (sign-in and every folder operation touch the
database or the disk; one call at a time per session), waits the reply's delay on the loop, writes
its bytes, and upgrades the connection when the session asks for STARTTLS.

IDLE (RFC 2177): one watcher task per worker stats the folders the sessions have open every
`IDLE_POLL_S` (one stat per directory, however many sessions watch it) and asks each idling session
whose folder changed for its updates, so a delivery reaches an IDLE client within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from django.db import connection as db_connection

from servers.imap.session import ImapSession
from servers.imap.store_api import Account, AuthOutcome, AuthStatus
from servers.mailfolders import MaildirAccount
from servers.models import ImapService
from servers.services.mail_signin import sign_in_mail_client
from servers.services.mailboxes import SignedIn, record_logon, touch_logon
from servers.tls import describe_tls_failure, format_peer
from servers.workers.base import run_worker
from servers.workers.mail_service import MailServiceWorker, take_buffered

log = logging.getLogger("mailconsole.imapd")

# How much one read takes from the socket; the session buffers partial lines and literals itself.
READ_CHUNK_OCTETS = 64 * 1024
# A reply at least this big (a FETCH of a big folder) is followed by a heap trim (HeapTrimmer).
BIG_REPLY_OCTETS = 1024 * 1024
# How often the IDLE watcher looks at the watched folders (a delivery shows within twice this).
IDLE_POLL_S = 0.5
# How long a stopping worker lets a command in progress (an APPEND, a COPY) finish.
STOP_GRACE_S = 5.0

# Untagged BYEs the adapter says itself (RFC 9051 7.1.5); response codes from RFC 5530.
PAUSED_BYE = "* BYE [UNAVAILABLE] {hostname} IMAP service paused, try again later\r\n"
SHUTTING_DOWN_BYE = "* BYE [UNAVAILABLE] {hostname} IMAP service shutting down\r\n"
TERMINATED_BYE = "* BYE [ADMINISTRATOR] Your session was closed by an administrator\r\n"
SERVER_BUG_BYE = "* BYE [SERVERBUG] Internal error; the session is closed\r\n"


class Reply(Protocol):
    """What `ImapSession.receive_data` answers (servers.imap.session.Reply)."""

    data: bytes
    start_tls: bool
    close: bool
    delay_s: float


class Session(Protocol):
    """The part of `servers.imap.session.ImapSession` the adapter drives."""

    def greeting(self) -> bytes: ...
    def receive_data(self, data: bytes) -> Reply: ...
    def tls_started(self) -> None: ...
    def idle_updates(self) -> bytes: ...
    def autologout(self) -> bytes: ...
    def connection_lost(self) -> None: ...

    @property
    def idling(self) -> bool: ...

    @property
    def watch_paths(self) -> Sequence[str]: ...

    @property
    def user(self) -> str | None: ...

    @property
    def selected_folder(self) -> str | None: ...


SessionFactory = Callable[..., Session]
# (the signed-in mailbox, the callback that ends its Logon) -> the store's account for the session
AccountFactory = Callable[[SignedIn, Callable[[], None]], Account]


def maildir_account(signed_in: SignedIn, on_release: Callable[[], None]) -> Account:
    """The Maildir++ account of a signed-in mailbox, with its quota."""
    return MaildirAccount(
        Path(signed_in.maildir),
        signed_in.address,
        quota_octets=signed_in.quota_bytes,
        quota_messages=signed_in.quota_messages,
        on_release=on_release,
    )


class ImapConnection:
    """One connected IMAP client: its session, and what the loop may read about it without a thread."""

    def __init__(self, writer: asyncio.StreamWriter, client: str, *, tls: bool) -> None:
        self.writer = writer
        self.client = client
        self.session_id = uuid.uuid4().hex[:12]
        self.connected_at = time.time()
        self.tls = tls
        self.session: Session | None = None
        # One session call at a time: a command, an IDLE update or the auto-logout.
        self.busy = asyncio.Lock()
        # Copied from the session right after each call, in the thread that made it: the loop and the
        # IDLE watcher read these, never the session while a thread may be changing it.
        self.user = ""
        self.folder = ""
        self.idling = False
        self.watch_paths: tuple[str, ...] = ()
        # What each watched directory looked like just before the session last looked at its folder:
        # a different stamp now means a change the session has not seen. A path missing here (a folder
        # just selected) counts as changed, so the first look after SELECT costs one refresh at most.
        self.seen_stamps: dict[str, Stamp] = {}
        self.update_pending = False
        self.closed = False
        self.octets_sent = 0  # what the client was sent: Current Sessions' Bytes column

    def session_info(self) -> dict:
        return {
            "id": self.session_id,
            "protocol": "IMAP",
            "client": self.client,
            "user": self.user,
            "connected_at": self.connected_at,
            "state": ("IDLE" if self.idling else "SELECTED")
            if self.folder
            else ("AUTHENTICATED" if self.user else "NOT AUTHENTICATED"),
            "folder": self.folder,
            "messages": 0,
            "bytes": self.octets_sent,
            "tls": self.tls,
        }

    def observe(self, stamps_before: dict[str, Stamp]) -> None:
        """Copy what the console and the watcher need from the session (in the session's thread)."""
        session = self.session
        if session is None:
            return
        self.user = session.user or ""
        self.folder = session.selected_folder or ""
        self.idling = bool(session.idling)
        self.watch_paths = tuple(session.watch_paths)
        self.seen_stamps = {path: stamps_before[path] for path in self.watch_paths if path in stamps_before}

    def call(self, method: Callable[..., Any], *args: Any) -> Any:
        """Run one session method and observe the session afterwards (runs in a thread).

        The folder is stamped before the call: a change during it is either in what the session
        read or shows as a difference at the watcher's next look (an update that may find nothing).
        """
        stamps_before = stat_paths(self.watch_paths) if self._may_idle_after(args) else {}
        try:
            return method(*args)
        finally:
            self.observe(stamps_before)

    def _may_idle_after(self, args: tuple[Any, ...]) -> bool:
        """Whether the session may be idling after this call: only then does the watcher need stamps.

        Without them the watcher counts the folder as changed and asks once for updates that may be
        none, so guessing "yes" is always safe; a FETCH one message at a time saves two stats.
        """
        return self.idling or any(
            isinstance(arg, bytes) and (len(arg) > 64 * 1024 or b"IDLE" in arg.upper()) for arg in args
        )

    def has_unseen_changes(self, stamps_now: dict[str, Stamp]) -> bool:
        return any(stamps_now.get(path) != self.seen_stamps.get(path, UNSEEN) for path in self.watch_paths)

    def close_with(self, text: str) -> None:
        self.closed = True
        with contextlib.suppress(ConnectionError, RuntimeError):
            self.writer.write(text.encode())
            self.writer.close()


# A watched path's change stamp: its mtime, ctime, inode and size (a folder's change stamp file
# grows by an octet per change, within a clock tick too), or None while it does not exist.
Stamp = tuple[int, int, int, int] | None
UNSEEN = (-1, -1, -1, -1)


def stat_paths(paths: Iterable[str]) -> dict[str, Stamp]:
    """The change stamp of each watched path."""
    stamps: dict[str, Stamp] = {}
    for path in paths:
        try:
            status = os.stat(path)
        except OSError:
            stamps[path] = None
        else:
            stamps[path] = (status.st_mtime_ns, status.st_ctime_ns, status.st_ino, status.st_size)
    return stamps


def pieces_for_starttls(data: bytes) -> list[bytes]:
    """`data` cut after each line ending when it may hold a STARTTLS, else whole.

    Fed piece by piece, the session answers a STARTTLS before it sees the next line, and what
    follows it in the same packet is never given to the session (CVE-2011-0411).
    """
    if b"STARTTLS" not in data.upper():
        return [data]
    return data.splitlines(keepends=True)


class IMAPWorker(MailServiceWorker):
    kind = "imap"
    service_model = ImapService

    def __init__(
        self,
        unit_id: int,
        *,
        session_factory: SessionFactory | None = None,
        account_factory: AccountFactory | None = None,
    ) -> None:
        super().__init__(unit_id)
        self.session_factory: SessionFactory = session_factory or ImapSession
        self.account_factory = account_factory or maildir_account
        self.autologout_s = settings.IMAP_AUTOLOGOUT_S
        self.background: set[asyncio.Task] = set()
        self.heap_trimmer = HeapTrimmer()

    async def serve(self, sockets: list[socket.socket]) -> list[asyncio.Server]:
        servers = [
            await asyncio.start_server(
                lambda r, w: self.handle_client(r, w, implicit_tls=False), sock=sockets[0], limit=READ_CHUNK_OCTETS
            )
        ]
        if len(sockets) > 1:
            servers.append(
                await asyncio.start_server(
                    lambda r, w: self.handle_client(r, w, implicit_tls=True),
                    sock=sockets[1],
                    ssl=self.tls_context,
                    limit=READ_CHUNK_OCTETS,
                )
            )
        self._keep(asyncio.create_task(self.watch_idle_forever()))
        return servers

    def _keep(self, task: asyncio.Task) -> None:
        # The loop holds only weak references to tasks: keep ours until they are done.
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def close_sessions(self) -> None:
        """Let a command in progress finish (bounded), then say BYE and hang up."""
        deadline = time.monotonic() + min(STOP_GRACE_S, settings.STOP_GRACE_S)
        while any(c.busy.locked() for c in self.control.sessions) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.control.sessions):
            connection.close_with(SHUTTING_DOWN_BYE.format(hostname=self.snapshot.hostname))
        for task in list(self.background):
            task.cancel()
        # Each connection's task ends its session (the account released, the Logon's last access
        # noted) before it leaves `sessions`; give them a moment, then let the Logon writer finish.
        deadline = time.monotonic() + 3
        while self.control.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.get_running_loop().run_in_executor(None, self.logon_writer.shutdown)

    async def terminate_session(self, session: ImapConnection) -> None:
        session.close_with(TERMINATED_BYE)

    # -- sign-in -----------------------------------------------------------------------------
    def authenticator_for(self, connection: ImapConnection) -> Callable[[str, str], AuthOutcome]:
        """The session's sign-in check, run in a thread: the shared guard and password check, the Logon."""
        client = connection.client
        default_domain = self.snapshot.default_domain

        def authenticate(username: str, password: str) -> AuthOutcome:
            try:
                result = sign_in_mail_client(
                    username, password, client, default_domain=default_domain, cache=self.credentials
                )
                if result.locked:
                    return AuthOutcome(AuthStatus.LOCKED)
                signed_in = result.signed_in
                if signed_in is None:
                    return AuthOutcome(AuthStatus.BAD_CREDENTIALS, failure_delay_s=result.failure_delay_s)
                # The OK does not wait for the record; the end of the session notes the last access.
                logon = self.logon_writer.submit(_write_then_close, record_logon, signed_in.mailbox_id, client, "IMAP")
                return AuthOutcome(AuthStatus.OK, account=self.account_factory(signed_in, self._logon_ender(logon)))
            finally:
                release_db_connection()

        return authenticate

    def _logon_ender(self, logon: Future) -> Callable[[], None]:
        def end() -> None:
            with contextlib.suppress(Exception):
                self.logon_writer.submit(_write_then_close, touch_logon, logon.result(timeout=30))

        return end

    # -- one connection ----------------------------------------------------------------------
    async def handle_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, implicit_tls: bool
    ) -> None:
        snapshot = self.snapshot
        if self.control.refuses_new_sessions:
            writer.write(PAUSED_BYE.format(hostname=snapshot.hostname).encode())
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()
            return
        peer = writer.get_extra_info("peername")
        client = peer[0] if peer else "unknown"
        connection = ImapConnection(writer, client, tls=implicit_tls)
        session = self.session_factory(
            hostname=snapshot.hostname,
            authenticator=self.authenticator_for(connection),
            tls_available=self.tls_context is not None and not implicit_tls,
            tls_active=implicit_tls,
            plaintext_requires_tls=snapshot.plaintext_requires_tls,
            default_domain=snapshot.default_domain,
        )
        connection.session = session
        self.control.sessions.add(connection)
        loop = asyncio.get_running_loop()
        try:
            greeting = session.greeting()
            writer.write(greeting)
            connection.octets_sent += len(greeting)
            await writer.drain()
            while not connection.closed:
                try:
                    # asyncio.timeout, not wait_for: wait_for makes a Task for every read.
                    async with asyncio.timeout(self.autologout_s):
                        data = await reader.read(READ_CHUNK_OCTETS)
                except TimeoutError:
                    # RFC 9051 5.4: the autologout timer is at least 30 minutes, IDLE included.
                    async with connection.busy:
                        farewell = await loop.run_in_executor(None, connection.call, session.autologout)
                    writer.write(farewell)
                    await writer.drain()
                    break
                if not data:
                    break
                if not await self.feed(connection, reader, data, peer):
                    break
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            log.info("%s: connection ended: %s", client, exc)
        except Exception:
            # A bug must cost one connection a BYE, never the worker or a silent hang.
            log.exception("%s: IMAP session failed", client)
            with contextlib.suppress(ConnectionError, RuntimeError):
                writer.write(SERVER_BUG_BYE.encode())
                connection.octets_sent += len(SERVER_BUG_BYE)
        finally:
            connection.closed = True
            try:
                # Releases the account (and so the Logon's last access) and closes the selected folder.
                async with connection.busy:
                    await loop.run_in_executor(None, connection.call, session.connection_lost)
            finally:
                self.control.sessions.discard(connection)
                with contextlib.suppress(Exception):
                    writer.close()

    async def feed(self, connection: ImapConnection, reader: asyncio.StreamReader, data: bytes, peer: object) -> bool:
        """Give the session what arrived and act on its replies; False when the connection is to end."""
        session = connection.session
        assert session is not None
        loop = asyncio.get_running_loop()
        pieces = pieces_for_starttls(data) if not connection.tls else [data]
        for index, piece in enumerate(pieces):
            async with connection.busy:
                if connection.user:
                    reply = await loop.run_in_executor(None, connection.call, session.receive_data, piece)
                else:
                    # Before sign-in a piece may hold a LOGIN: at most a few password checks per client.
                    async with self.sign_in_slots.hold(connection.client):
                        reply = await loop.run_in_executor(None, connection.call, session.receive_data, piece)
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)  # a throttled failure: holds no thread
            connection.writer.write(reply.data)
            connection.octets_sent += len(reply.data)
            await connection.writer.drain()
            if len(reply.data) >= BIG_REPLY_OCTETS:
                self.heap_trimmer.after_big_reply(loop)
            if reply.start_tls:
                injected = b"".join(pieces[index + 1 :]) + take_buffered(reader)
                if injected:
                    # Never executed: it was sent in plaintext before the handshake.
                    log.warning("%s: discarded %d bytes of plaintext after STARTTLS", connection.client, len(injected))
                if not await self.start_tls(connection, peer):
                    return False
                return not reply.close
            if reply.close:
                return False
        return True

    async def start_tls(self, connection: ImapConnection, peer: object) -> bool:
        assert self.tls_context is not None and connection.session is not None  # STARTTLS is offered only then
        try:
            await connection.writer.start_tls(self.tls_context)
        except (ConnectionError, ssl.SSLError, TimeoutError) as exc:
            log.info("TLS handshake failed from %s: %s", format_peer(peer), describe_tls_failure(exc))
            return False
        connection.tls = True
        connection.session.tls_started()
        return True

    # -- IDLE --------------------------------------------------------------------------------
    async def watch_idle_forever(self) -> None:
        """Every IDLE_POLL_S, stat the folders idling sessions watch; wake those with unseen changes."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(IDLE_POLL_S)
            idling = [c for c in self.control.sessions if c.idling and not c.update_pending and not c.closed]
            watched = {path for connection in idling for path in connection.watch_paths}
            if not watched:
                continue
            try:
                stamps_now = await loop.run_in_executor(None, stat_paths, watched)
            except RuntimeError:  # the executor shut down: the worker is stopping
                return
            for connection in idling:
                if connection.has_unseen_changes(stamps_now):
                    connection.update_pending = True
                    self._keep(asyncio.create_task(self.send_idle_updates(connection)))

    async def send_idle_updates(self, connection: ImapConnection) -> None:
        try:
            await self._send_idle_updates(connection)
        finally:
            connection.update_pending = False

    async def _send_idle_updates(self, connection: ImapConnection) -> None:
        session = connection.session
        if session is None:
            return
        loop = asyncio.get_running_loop()
        async with connection.busy:
            if connection.closed or not connection.idling:
                return  # the client said DONE meanwhile: the next command's reply carries the news
            try:
                updates = await loop.run_in_executor(None, connection.call, session.idle_updates)
            except Exception:
                log.exception("%s: IDLE update failed", connection.client)
                return
        if updates and not connection.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                connection.writer.write(updates)
                connection.octets_sent += len(updates)
                await connection.writer.drain()


class HeapTrimmer:
    """Give the C heap's free pages back to the system after big replies, at most once per `every_s`.

    A FETCH of 50,000 ENVELOPEs builds megabytes in many pieces; once they are freed, glibc keeps
    the pages for reuse, so a worker that served a few big folders stayed tens of MiB larger, with
    1,000 IDLE sessions doing nothing. `malloc_trim` (glibc only; elsewhere this does nothing) takes
    a few ms, in a thread.
    """

    def __init__(self, every_s: float = 2.0) -> None:
        self.every_s = every_s
        self._last = -every_s
        self._pending = False
        try:
            self._trim: Callable[[int], int] | None = ctypes.CDLL(
                ctypes.util.find_library("c") or "libc.so.6"
            ).malloc_trim
        except (OSError, AttributeError):
            self._trim = None

    def after_big_reply(self, loop: asyncio.AbstractEventLoop) -> None:
        """Trim now, or once `every_s` after the last trim (so the last of many big replies counts too)."""
        if self._trim is None or self._pending:
            return
        wait_s = self._last + self.every_s - time.monotonic()
        self._pending = True
        if wait_s <= 0:
            self._start(loop)
        else:
            loop.call_later(wait_s, self._start, loop)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._pending = False
        self._last = time.monotonic()
        assert self._trim is not None
        with contextlib.suppress(RuntimeError):  # the executor shut down: the worker is stopping
            loop.run_in_executor(None, self._trim, 0)


def release_db_connection() -> None:
    """Give this thread's database connection back: it may not touch the database again for hours."""
    if not db_connection.in_atomic_block:  # a test's transaction: not ours to end
        db_connection.close()


def _write_then_close(write: Callable[..., Any], *args: Any) -> Any:
    """Run one database write in the Logon writer's thread and give its connection back."""
    try:
        return write(*args)
    finally:
        release_db_connection()


def run(service_id: int) -> int:
    return run_worker(IMAPWorker(service_id))
