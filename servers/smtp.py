"""The SMTP adapter of a virtual server: aiosmtpd's session, the policy's answers, durable delivery.

The worker process (`servers.workers.smtpd`) owns the listening sockets and the event loop; this
module is the I/O around each command: it reads and writes the connection, looks up what the rules
need (reverse DNS, POP-before-SMTP in Redis, quotas on disk, the password in a thread) and asks
`servers.smtp_policy` -- pure functions, no I/O -- for every decision, then sends the reply it got.
Accepted mail is stored before the 250 (Maildirs, IIS's Drop folder, the Queue for remote
recipients). It does not import the worker layer: the worker is seen through `WorkerState`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from email._header_value_parser import AddrSpec, AngleAddr, get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from servers import maildir, mailstore, replies
from servers.inbound_auth import dmarc_sample
from servers.message_auth import authentication_results, strip_our_results
from servers.message_filters import removal_notice, strip_parts, walk_message, with_spam_headers
from servers.outbound_counters import OutboundCounters
from servers.sender_checks import SenderChecks
from servers.services import signin_guard
from servers.services.mailboxes import LoginRefusedError, VerifiedCredentials, authenticate_mailbox
from servers.services.names import canonical_client_address
from servers.smtp_policy import (
    MAX_COMMAND_ERRORS,
    Recipient,
    antispam_exempt,
    attachment_verdict,
    auth_failure_reply,
    auth_requires_tls,
    client_refusal,
    closes_connection,
    command_refusal,
    connect_refusal,
    data_refusal,
    dmarc_quarantines,
    dmarc_refusal,
    dnsbl_header,
    dnsbl_refusal,
    domain_allows_sender,
    ehlo_lines,
    harvest_penalty,
    is_command_error,
    mail_refusal,
    message_rate_keys,
    needs_client_name,
    relay_permitted,
    route_recipient,
    sender_allowed,
    sender_auth_applies,
    spam_headers,
    spam_verdict,
    spf_refusal,
    virus_reply,
)
from servers.smtp_sender_rules import SenderRules
from servers.snapshot import MailboxEntry, ServerSnapshot

if TYPE_CHECKING:
    from servers.content_checks import ContentChecks
    from servers.inbound_checks import InboundChecks
    from servers.spf import SpfResult
from servers.storage import unique_message_name

log = logging.getLogger(__name__)
protocol_log = logging.getLogger("mailconsole.smtp.protocol")

# What a protocol log may show of a command whose argument is a secret.
SECRET_COMMANDS = ("AUTH",)
# Password checks one client address may have running at once in a process: the thread pool is
# shared by every session, so one address guessing in parallel must not take all of it.
SIGN_INS_PER_CLIENT = 2
DATA_END = b"\r\n.\r\n"
# Not ASCII, so aiosmtpd answers it "500 Error: bad syntax" (see RecordingReader.readuntil).
BARE_LINE_ENDING = b"\xff\r\n"
# Added to a message DMARC quarantines (p=quarantine): it goes into Junk where the mailbox has one.
QUARANTINE_HEADER = b"X-Spam-Flag: YES\r\n"


# -- Shims for aiosmtpd 1.4.6 (pinned in requirements.txt) --------------------------------------
# Where we lean on aiosmtpd's (or asyncio's) internals, for speed or for a rule aiosmtpd has no
# hook for. Each is named "SHIM" here and has a test in tests/test_smtp_session_setup.py that fails
# if the version under it changes:
#   1. _ProtocolNamesOnly.__dir__ and handle_EHLO.__signature__: aiosmtpd's per-connection method
#      lookup, done once per class (below).
#   2. MailConsoleSMTP._getaddr: aiosmtpd's address parsing, remembered per argument.
#   3. MailConsoleSMTP._create_envelope: our envelope class (aiosmtpd calls it on every reset).
#   4. MailConsoleSMTP._cb_client_connected: wraps the StreamReader in RecordingReader.
#   5. MailConsoleSMTP._handle_client: the connect rules before aiosmtpd's greeting.
#   6. MailConsoleSMTP._timeout_cb: 421 before aiosmtpd's silent idle hang-up.
#   7. MailConsoleSMTP._authenticate + auth_PLAIN/auth_LOGIN: the password check leaves the loop.
#   8. MailConsoleSMTP.smtp_DATA/_read_data: the block DATA reader, on StreamReader._buffer/_limit.
#   9. MailConsoleSMTP._discard_plaintext_after_starttls: StreamReader._buffer, aiosmtpd's
#      _original_transport and _tls_protocol.
AIOSMTPD_VERSION = "1.4.6"
# aiosmtpd's SMTP.__init__ finds its command, AUTH and hook methods with `dir()`,
# `inspect.getmembers()` and `inspect.signature()` on every new connection: every attribute read,
# properties included. It only keeps names that start with these.
_AIOSMTPD_PREFIXES = ("auth_", "handle_", "smtp_")


_protocol_names: dict[type, list[str]] = {}  # class -> the names aiosmtpd looks for on its instances


class _ProtocolNamesOnly:
    """SHIM 1: `dir()` of a session or handler lists only what aiosmtpd looks for.

    Python lets `__dir__` return a shorter list (dir() is "an interesting set of names"), so
    aiosmtpd's lookups stop reading every attribute, with no change inside aiosmtpd (it was patched
    for the whole process before). Session setup: about 30 us, against 20 us with the patch and
    over 250 us with neither.
    tests/test_smtp_session_setup.py checks aiosmtpd derives the same commands, AUTH mechanisms and
    hooks as with the full dir().
    """

    def __dir__(self) -> list[str]:
        cls = type(self)
        names = _protocol_names.get(cls)
        if names is None:
            names = _protocol_names[cls] = [name for name in dir(cls) if name.startswith(_AIOSMTPD_PREFIXES)]
        return names


# Session ids: unique on the node (pid and a counter), cheaper than a random UUID per connection.
_session_numbers = itertools.count(1)


@functools.lru_cache(maxsize=4096)
def _parsed_address(arg: str) -> tuple[str | None, str | None]:
    """aiosmtpd's address parsing (the email package's RFC 5322 parser), remembered per argument:
    senders and recipients repeat, and the parser is one of the costliest steps of MAIL and RCPT."""
    address: AngleAddr | AddrSpec
    try:
        if arg.lstrip().startswith("<"):
            address, rest = get_angle_addr(arg)
        else:
            address, rest = get_addr_spec(arg)
    except HeaderParseError:
        return None, None
    return address.addr_spec, rest


class WorkerState(Protocol):
    """What a session reads of the worker that runs it (servers.workers.base.WorkerControl)."""

    paused: bool
    stopping: bool
    sessions: set[Any]


class WorkerCounters:
    """Per-worker memory shared by the sessions: connections per client, hourly counts."""

    def __init__(self) -> None:
        self.credentials = VerifiedCredentials()
        self.connections_by_client: dict[str, int] = {}
        self._events: dict[str, list[float]] = {}
        self.sign_in_slots = signin_guard.ClientSlots(SIGN_INS_PER_CLIENT)
        # Anti-spam refusals by reason ("dnsbl", "greylisted") since the worker started.
        self.refusals: Counter[str] = Counter()
        # Filters tab actions that keep the message ("attachment_stripped", "junk"), by action.
        self.filtered: Counter[str] = Counter()

    def count_refusal(self, reason: str, session_id: str, client_ip: str, detail: str) -> None:
        """Count one refusal and log it, with its reason, in one line."""
        self.refusals[reason] += 1
        log.info("SMTP %s %s: refused (%s): %s", session_id, client_ip, reason, detail)

    def count_filtered(self, action: str, session_id: str, client_ip: str, detail: str) -> None:
        """Count one message a filter changed or filed, and log it, with its reason, in one line."""
        self.filtered[action] += 1
        log.info("SMTP %s %s: accepted (%s): %s", session_id, client_ip, action, detail)

    def count_recent(self, key: str, window_s: float = 3600) -> int:
        cutoff = time.monotonic() - window_s
        events = [t for t in self._events.get(key, ()) if t > cutoff]
        self._events[key] = events
        return len(events)

    def record(self, key: str) -> None:
        self._events.setdefault(key, []).append(time.monotonic())


class RecordingReader:
    """Wraps the session's StreamReader: counts bytes, remembers the last command line, and answers
    command lines that must never reach the parser (bare CR or LF, NUL, stray 8-bit) itself."""

    _own = ("_inner", "_owner")

    def __init__(self, inner: asyncio.StreamReader, owner: MailConsoleSMTP) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_owner", owner)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        owner = self._owner
        while True:
            if owner.hanging_up:
                # We said 421 and closed: run nothing more of what the client had pipelined. The
                # session task is cancelled when the connection is gone.
                await asyncio.get_running_loop().create_future()
            line = await self._inner.readuntil(separator)
            owner.note_input(line)
            if separator != b"\n" or owner.in_data:
                return line
            if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
                # RFC 5321 2.3.8: commands end with CRLF only. A bare LF or CR would let a client smuggle
                # commands past a filter; hand aiosmtpd a line it refuses with "500 bad syntax".
                return BARE_LINE_ENDING
            refusal = command_refusal(line[:-2], smtputf8_transaction=owner.smtputf8_transaction)
            if refusal is None:
                return line
            await owner.push(refusal)

    async def read(self, n: int = -1) -> bytes:
        data = await self._inner.read(n)
        self._owner.bytes_in += len(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # aiosmtpd swaps the transport under the reader on STARTTLS: that must reach the real reader.
        setattr(self._inner, name, value)


class MailConsoleSMTP(_ProtocolNamesOnly, SMTP):
    """One SMTP session: aiosmtpd's protocol engine plus the virtual server's policy."""

    def __init__(
        self,
        handler: LocalDeliveryHandler,
        *,
        control: WorkerState,
        counters: WorkerCounters,
        snapshot: ServerSnapshot,
        implicit_tls: bool = False,
        **kwargs,
    ) -> None:
        if auth_requires_tls(snapshot.policy, implicit_tls=implicit_tls):
            kwargs["auth_require_tls"] = True
        super().__init__(handler, **kwargs)
        self.control = control
        self.counters = counters
        self.snapshot = snapshot
        self.implicit_tls = implicit_tls
        self.session_id = f"{os.getpid():x}-{next(_session_numbers):x}"
        self.connected_at = time.time()
        self.bytes_in = 0
        self.messages_accepted = 0
        self.bytes_accepted = 0
        self.auth_failures = 0
        self.unknown_recipients = 0
        self.command_errors = 0
        self.signed_in_as: str | None = None
        # The DNSBL zones that list this client (None: not asked yet, or exempt).
        self.dnsbl_listed: tuple[str, ...] | None = None
        self.last_command = ""
        self.client_ip = ""
        self._counted_client = False
        self._in_data = False
        self._awaiting_secret = False
        self._pending_credentials: tuple[str, LoginPassword] | None = None

    def _create_envelope(self) -> LocalEnvelope:
        # SHIM 3: aiosmtpd builds every envelope (connect, RSET, after DATA) through this.
        return LocalEnvelope()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # SHIM 2: aiosmtpd 1.4.6's own _getaddr, without the typing class it builds on every call.
        if not arg:
            return "", ""
        addr, rest = _parsed_address(arg)
        if addr is None:
            return None, None
        if self.local_part_limit and len(addr.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return addr, rest

    # -- live state ---------------------------------------------------------------------------
    @property
    def in_transaction(self) -> bool:
        envelope = getattr(self, "envelope", None)
        return envelope is not None and envelope.mail_from is not None

    @property
    def in_data(self) -> bool:
        return self._in_data or self._awaiting_secret

    @property
    def smtputf8_transaction(self) -> bool:
        """Whether the current transaction's MAIL carried SMTPUTF8 (RFC 6531), so RCPT may be UTF-8."""
        envelope = getattr(self, "envelope", None)
        return envelope is not None and envelope.mail_from is not None and bool(envelope.smtp_utf8)

    @property
    def hanging_up(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    @property
    def tls_active(self) -> bool:
        return self.implicit_tls or self._tls_protocol is not None

    def session_info(self) -> dict[str, Any]:
        """What the console's Current Sessions view shows."""
        return {
            "id": self.session_id,
            "protocol": "SMTP",
            "client": self.client_ip,
            "user": self.signed_in_as or "",
            "connected_at": self.connected_at,
            "state": self.last_command.split(" ", 1)[0] or "CONNECTED",
            "messages": self.messages_accepted,
            "bytes": self.bytes_accepted,
            "tls": self.tls_active,
        }

    def note_input(self, line: bytes) -> None:
        self.bytes_in += len(line)
        if self._in_data:
            return
        if self._awaiting_secret:
            self.last_command = "(credentials)"
            return
        verb, _, argument = line.decode("ascii", "replace").rstrip("\r\n").partition(" ")
        verb = verb.upper()
        if verb in SECRET_COMMANDS and argument:
            argument = argument.split(" ", 1)[0] + " ****"
        self.last_command = f"{verb} {argument}".strip()[:200]

    # -- connection ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is not None and self._original_transport is not None:
            self._discard_plaintext_after_starttls()
        first_connection = self.transport is None
        super().connection_made(transport)
        if first_connection:
            self.control.sessions.add(self)
            peer = transport.get_extra_info("peername")
            self.client_ip = peer[0] if peer else ""

    def _discard_plaintext_after_starttls(self) -> None:
        """Drop what the client sent in plaintext after STARTTLS; called when the handshake is done.

        The rule for every STARTTLS we serve (SMTP STARTTLS, POP3 STLS, IMAP STARTTLS): input read
        before the TLS handshake is never executed after it (RFC 3207 4.2, RFC 2595 4; the
        CVE-2011-0411 class: "STARTTLS\\r\\nRSET\\r\\n..." in one packet must not become commands
        inside the TLS session). aiosmtpd clears this buffer too; we do not rely on it.
        SHIM 9: StreamReader._buffer, and aiosmtpd's _original_transport (set by STARTTLS).
        """
        reader: Any = getattr(self._reader, "_inner", self._reader)  # _buffer is not in typeshed
        discarded = len(reader._buffer)
        if discarded:
            reader._buffer.clear()
            log.warning(
                "SMTP %s %s: discarded %d bytes sent in plaintext after STARTTLS",
                self.session_id,
                self.client_ip,
                discarded,
            )

    def connection_lost(self, error: Exception | None) -> None:
        self.control.sessions.discard(self)
        if self._counted_client:
            counts = self.counters.connections_by_client
            counts[self.client_ip] = counts.get(self.client_ip, 1) - 1
            if counts[self.client_ip] <= 0:
                counts.pop(self.client_ip, None)
            self._counted_client = False
        super().connection_lost(error)

    def _cb_client_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # SHIM 4: every line aiosmtpd reads passes through RecordingReader.
        # A duck-typed StreamReader: it has every method aiosmtpd calls and forwards the rest.
        super()._cb_client_connected(RecordingReader(reader, self), writer)  # type: ignore[arg-type]

    async def _refuse(self, reply: str) -> None:
        await self.push(reply.format(hostname=self.hostname))
        if self.transport is not None:
            self.transport.close()

    async def _handle_client(self) -> None:
        # SHIM 5: aiosmtpd has no hook before its greeting; the connect rules (smtp_policy) run here.
        policy = self.snapshot.policy
        control, counts = self.control, self.counters.connections_by_client
        from_client = counts.get(self.client_ip, 0)
        refusal = connect_refusal(
            policy,
            paused=control.paused,
            stopping=control.stopping,
            open_sessions=len(control.sessions) - 1,  # connection_made added this one
            from_client=from_client,
        )
        if refusal is not None:
            await self._refuse(refusal)
            return
        counts[self.client_ip] = from_client + 1
        self._counted_client = True
        confirmed_name = None
        if needs_client_name(policy):
            from servers.dnsutil import forward_confirmed_name

            confirmed_name = await forward_confirmed_name(self.client_ip)
        refusal = client_refusal(policy, self.client_ip, confirmed_name)
        if refusal is not None:
            await self._refuse(refusal)
            return
        await super()._handle_client()

    def _timeout_cb(self) -> None:
        # SHIM 6: aiosmtpd hangs up silently; RFC 5321 4.2.3 wants a 421 first.
        if self.transport is not None and not self.transport.is_closing():
            # aiosmtpd types the transport as BaseTransport; asyncio gives a stream protocol a Transport.
            self.transport.write(f"{replies.IDLE_TIMEOUT.format(hostname=self.hostname)}\r\n".encode())  # type: ignore[attr-defined]
        super()._timeout_cb()

    async def push(self, status: str | bytes) -> None:
        if not isinstance(status, str):
            await super().push(status)
            return
        status = replies.with_enhanced_code(replies.STOCK_REWRITES.get(status, status), self.hostname)
        self._in_data = status.startswith("354")
        self._awaiting_secret = status.startswith("334")
        if self.snapshot.policy.protocol_logging:
            protocol_log.info("%s %s %r %s", self.session_id, self.client_ip, self.last_command, status[:3])
        await super().push(status)
        if is_command_error(status):
            self.command_errors += 1
            if self.command_errors == MAX_COMMAND_ERRORS:
                # Postfix's hard error limit: a client that keeps getting it wrong is not a mail client.
                log.info("SMTP %s %s: %d bad commands, closing", self.session_id, self.client_ip, self.command_errors)
                await self.close_with(replies.TOO_MANY_ERRORS)

    async def close_with(self, reply: str) -> None:
        """Say why we are hanging up (stop, terminate, limits) and close the connection."""
        if self.transport is None:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.push(reply.format(hostname=self.hostname))
        if self.transport is not None:
            self.transport.close()

    async def close_idle(self) -> None:
        await self.close_with(replies.SHUTTING_DOWN)

    # -- DATA: read in blocks, not line by line ------------------------------------------------
    async def smtp_DATA(self, arg: str) -> None:
        """RFC 5321 4.1.1.4, with aiosmtpd's checks, reading the message in large blocks.

        Only <CRLF>.<CRLF> ends the data (no bare-LF variants), so one DATA can never become two
        messages; at most the size limit (plus the terminator) is ever buffered.
        """
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None  # aiosmtpd creates it with the session
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            content = await self._read_data()
        except asyncio.CancelledError:
            self._writer.close()
            raise
        except (asyncio.IncompleteReadError, ConnectionError):
            if self.transport is not None:
                self.transport.close()
            return
        if content is None:
            self._set_post_data_state()
            await self.push(replies.MESSAGE_TOO_BIG)
            return
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(self) -> bytes | None:
        """The dot-unstuffed message, or None (after reading up to the terminator) if it is too big.

        SHIM 8: reads asyncio's StreamReader `_buffer` and `_limit`, which have no public API.
        """
        reader = self._reader._inner  # type: ignore[attr-defined]  # our RecordingReader (SHIM 4)
        limit = self.data_size_limit or 2**31
        original_limit = reader._limit
        # A virtual CRLF in front lets an empty message's ".\r\n" end it like any other, so one search
        # for CRLF.CRLF finds the end however many lines end in a dot (searching for ".\r\n" stopped
        # at each of them, and every stop moved the rest of the buffer).
        reader._buffer[0:0] = b"\r\n"
        reader._limit = max(original_limit, min(limit, 2**24) + len(DATA_END))
        too_big = False
        try:
            while True:
                try:
                    data = await reader.readuntil(DATA_END)
                    break
                except asyncio.LimitOverrunError as overrun:
                    # Far too much without the terminator: skip what cannot hold its start, keep reading.
                    skipped = await reader.readexactly(overrun.consumed)
                    self.bytes_in += len(skipped)
                    too_big = True
        finally:
            reader._limit = original_limit
        self.bytes_in += len(data) - 2
        # The message octets: between the virtual CRLF and the final ".\r\n" (its last CRLF included).
        if too_big or len(data) - len(DATA_END) > limit:
            return None
        # RFC 5321 4.5.2: remove the first dot of every line that starts with one.
        return data[:-3].replace(b"\r\n.", b"\r\n")[2:]

    # -- AUTH: aiosmtpd parses PLAIN and LOGIN; the password check leaves the event loop --------
    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        # SHIM 7: aiosmtpd's auth_PLAIN/auth_LOGIN call this synchronously, on the event loop; we only
        # keep the credentials, and _verified checks them in a thread.
        self._pending_credentials = (mechanism, auth_data)
        return AuthResult(success=False, handled=False)

    async def auth_PLAIN(self, _, args: list[str]) -> AuthResult:
        return await self._verified(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _, args: list[str]) -> AuthResult:
        return await self._verified(await super().auth_LOGIN(_, args))

    async def _verified(self, parsed: AuthResult) -> AuthResult:
        pending, self._pending_credentials = self._pending_credentials, None
        if pending is None:
            return parsed  # aiosmtpd already answered (bad base64, cancelled exchange)
        policy = self.snapshot.policy
        _, credentials = pending
        login = credentials.login.decode("utf-8", "replace")
        password = credentials.password.decode("utf-8", "replace")
        # The server's own hourly limit per client, beside the mailbox and client counters that
        # every protocol shares; all reserved atomically before the password hash is computed.
        server_limit = signin_guard.Counter(
            f"smtp-client:{self.snapshot.server_id}",
            canonical_client_address(self.client_ip),
            policy.max_auth_failures_per_client_per_hour,
            3600,
        )
        loop = asyncio.get_running_loop()
        signed_in, reason = None, "refused"
        async with self.counters.sign_in_slots.hold(self.client_ip):
            attempt = await loop.run_in_executor(
                None, signin_guard.reserve_mailbox_sign_in, login, self.client_ip, server_limit
            )
            if attempt.allowed:
                try:
                    signed_in = await loop.run_in_executor(
                        None, functools.partial(authenticate_mailbox, login, password, cache=self.counters.credentials)
                    )
                except LoginRefusedError as refusal:
                    reason = refusal.reason
        if not attempt.allowed:
            # Over a limit: refused without a hash; the wait holds neither a thread nor a slot.
            await asyncio.sleep(attempt.failure_delay_s)
            await self.close_with(replies.TOO_MANY_AUTH_FAILURES)
            return AuthResult(success=False, handled=True)
        if signed_in is None:
            if reason == "locked":
                attempt.succeeded()  # the right password: not a guess
            else:
                attempt.failed()
                await asyncio.sleep(attempt.failure_delay_s)  # throttled without holding a thread
            self.auth_failures += 1
            reply = auth_failure_reply(policy, failures=self.auth_failures, reason=reason)
            if closes_connection(reply):
                await self.close_with(reply)
                return AuthResult(success=False, handled=True)
            return AuthResult(success=False, handled=False, message=reply)
        attempt.succeeded()
        self.signed_in_as = signed_in.address
        return AuthResult(success=True, auth_data=signed_in.address, message=replies.AUTH_SUCCEEDED)


def received_header(
    snapshot: ServerSnapshot, session: Session, message_id: str, *, tls: bool = False, user: str | None = None
) -> bytes:
    """The trace header (RFC 5321 4.4) we prepend to every message we accept."""
    peer_ip = session.peer[0] if session.peer else "unknown"
    helo = session.host_name or "unknown"
    protocol = "ESMTP" if session.extended_smtp else "SMTP"
    # RFC 3848 protocol types: S for TLS, A for authenticated.
    protocol += ("S" if tls else "") + ("A" if user else "")
    return (
        f"Received: from {helo} ([{peer_ip}])\r\n"
        f"\tby {snapshot.hostname} (MailConsole) with {protocol} id {message_id};\r\n"
        f"\t{formatdate(localtime=False)}\r\n"
    ).encode("utf-8", "surrogateescape")


def over_quota(entry: MailboxEntry, extra_octets: int, extra_messages: int) -> bool:
    """Whether a mailbox would pass its quota after taking `extra_octets` in `extra_messages` messages."""
    return maildir.would_exceed_quota(
        entry.maildir, entry.quota_bytes, entry.quota_messages, extra_octets, extra_messages
    )


class Filtered(NamedTuple):
    """A message as the Filters tab leaves it: its bytes, a refusal, or whether it goes to Junk."""

    content: bytes
    refusal: str | None = None
    junk: bool = False


class LocalEnvelope(Envelope):
    """aiosmtpd's envelope plus where each accepted recipient's copy goes."""

    def __init__(self) -> None:
        super().__init__()
        self.mailbox_targets: dict[str, MailboxEntry] = {}
        self.drop_recipients: list[str] = []
        self.remote_recipients: list[str] = []
        # Sender authentication: the SPF result at MAIL, and whether DMARC sent the message to Junk.
        self.spf: SpfResult | None = None
        self.spf_identity = "mailfrom"
        self.quarantine = False
        # A MAIL-stage anti-spam refusal (reason, reply) kept for RCPT, because a local domain's
        # allow list has the sender: it applies to the recipients of the other domains only.
        self.deferred_refusal: tuple[str, str] | None = None


class LocalDeliveryHandler(SenderRules, _ProtocolNamesOnly):
    """The policy hooks of a session, and delivery before the 250.

    aiosmtpd passes each hook the session's protocol object (`MailConsoleSMTP`) first; it is named
    `protocol` here, not `server` as in aiosmtpd's docs: it is one connection, not the virtual server.
    """

    def __init__(
        self,
        snapshot_getter: Callable[[], ServerSnapshot],
        counters: WorkerCounters,
        relay_check: Callable[[str, int], Awaitable[bool]] | None = None,
        checks: InboundChecks | None = None,
        content_checks: ContentChecks | None = None,
        sender_checks: SenderChecks | None = None,
        outbound: OutboundCounters | None = None,
    ) -> None:
        self._snapshot = snapshot_getter
        self.counters = counters
        # The virus scanner and rspamd (servers.content_checks); None: neither is asked.
        self.content_checks = content_checks
        # DNSBL lookups and the greylist (servers.inbound_checks); None: the Anti-spam tab is not applied.
        self.checks = checks
        # The sender checks' DNS and the outbound limits' counters come with the Anti-spam tab's I/O.
        if sender_checks is None and checks is not None:
            sender_checks = SenderChecks()
        if outbound is None and checks is not None:
            outbound = OutboundCounters(getattr(checks, "redis", None))
        self.sender_checks = sender_checks
        self.outbound = outbound
        # Async callable: did this client address log in to POP3 recently? (POP-before-SMTP)
        self._pop_before_smtp = relay_check

    async def handle_exception(self, error: Exception) -> str:
        # Never show a client our internals; the log has the traceback.
        log.exception("SMTP session error", exc_info=error)
        return replies.LOCAL_ERROR

    async def handle_EHLO(
        self, protocol: MailConsoleSMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return ehlo_lines(self._snapshot().policy, responses)

    # SHIM 1 (continued): aiosmtpd reads the hook's signature on every connection (to tell its old
    # 4-argument form from the 5-argument one); computed once here instead.
    handle_EHLO.__signature__ = inspect.signature(handle_EHLO)  # type: ignore[attr-defined]

    async def handle_MAIL(
        self,
        protocol: MailConsoleSMTP,
        session: Session,
        envelope: LocalEnvelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        refusal = mail_refusal(
            self._snapshot(),
            address,
            tls_active=protocol.tls_active,
            messages_accepted=protocol.messages_accepted,
            bytes_accepted=protocol.bytes_accepted,
            signed_in_as=protocol.signed_in_as,
        )
        if refusal is not None:
            if closes_connection(refusal):
                await protocol.close_with(refusal)
                return refusal.format(hostname=protocol.hostname)
            return refusal
        refusal = await self._sending_blocked_refusal(protocol)
        if refusal is not None:
            return refusal
        refusal = self._sender_deny_refusal(protocol, address)
        if refusal is not None:
            return refusal
        refusal = await self._mail_antispam_refusal(protocol, envelope, address)
        if refusal is not None:
            return refusal
        refusal = await self._spf_refusal(protocol, session, envelope, address)
        if refusal is not None:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def _dnsbl_refusal(self, protocol: MailConsoleSMTP) -> str | None:
        """Ask the DNSBL zones about the client once per session, lazily at its first MAIL (after AUTH)."""
        policy = self._snapshot().policy
        if not policy.dnsbl_zones or self.checks is None:
            return None
        if antispam_exempt(policy, signed_in_as=protocol.signed_in_as, client_ip=protocol.client_ip):
            protocol.dnsbl_listed = None
            return None
        if protocol.dnsbl_listed is None:
            protocol.dnsbl_listed = await self.checks.listed_zones(
                protocol.client_ip, policy.dnsbl_zones, policy.dns_server
            )
        # Counted by the caller, which may keep it for RCPT (`_mail_antispam_refusal`).
        return dnsbl_refusal(policy, protocol.client_ip, protocol.dnsbl_listed)

    async def _spf_refusal(
        self, protocol: MailConsoleSMTP, session: Session, envelope: LocalEnvelope, address: str
    ) -> str | None:
        """SPF of MAIL FROM (of the HELO name for <>) once per transaction, unless the client is exempt."""
        envelope.spf = None
        policy = self._snapshot().policy
        if not sender_auth_applies(policy) or self.checks is None:
            return None
        if antispam_exempt(policy, signed_in_as=protocol.signed_in_as, client_ip=protocol.client_ip):
            return None
        sender = "" if address in ("<>", None) else address  # aiosmtpd hands the null sender over as "<>"
        envelope.spf, envelope.spf_identity = await self.checks.auth.spf(
            protocol.client_ip, sender, session.host_name or "", policy.dns_server
        )
        refusal = spf_refusal(
            policy, envelope.spf.result, address=sender, domain=envelope.spf.domain, client_ip=protocol.client_ip
        )
        if refusal is not None:
            self.counters.count_refusal("spf", protocol.session_id, protocol.client_ip, refusal)
        return refusal

    async def _sender_auth(self, protocol: MailConsoleSMTP, envelope: LocalEnvelope) -> tuple[bytes, str | None]:
        """DKIM and DMARC after DATA: the Authentication-Results header to add, or DMARC's refusal.

        Incoming Authentication-Results naming our host are removed whatever the settings (RFC 8601 5).
        Signed-in users get `auth=pass smtp.auth=...`, relay-list clients `none`: neither is checked.
        """
        snapshot = self._snapshot()
        policy = snapshot.policy
        content = envelope.original_content or b""
        envelope.original_content = strip_our_results(content, snapshot.hostname)
        if not sender_auth_applies(policy) or self.checks is None:
            return b"", None
        if antispam_exempt(policy, signed_in_as=protocol.signed_in_as, client_ip=protocol.client_ip):
            return authentication_results(snapshot.hostname, signed_in_as=protocol.signed_in_as), None
        dkim_results, dmarc = await self.checks.auth.dkim_and_dmarc(
            content, envelope.spf, policy.dns_server, sample=dmarc_sample()
        )
        refusal = dmarc_refusal(policy, dmarc.action, dmarc.domain)
        if refusal is not None:
            self.counters.count_refusal("dmarc", protocol.session_id, protocol.client_ip, refusal)
            return b"", refusal
        header = authentication_results(
            snapshot.hostname,
            spf=envelope.spf,
            spf_identity=envelope.spf_identity,
            spf_sender="" if envelope.mail_from == "<>" else envelope.mail_from or "",
            dkim=dkim_results,
            dmarc=dmarc,
        )
        envelope.quarantine = dmarc_quarantines(policy, dmarc.action)
        if envelope.quarantine:
            log.info(
                "SMTP %s %s: quarantined (dmarc): %s p=quarantine, to Junk",
                protocol.session_id,
                protocol.client_ip,
                dmarc.domain,
            )
            header += QUARANTINE_HEADER
        return header, None

    async def _greylisted(self, protocol: MailConsoleSMTP, envelope: Envelope, recipient: str) -> bool:
        policy = self._snapshot().policy
        if not policy.greylisting or self.checks is None:
            return False
        if antispam_exempt(policy, signed_in_as=protocol.signed_in_as, client_ip=protocol.client_ip):
            return False
        sender = envelope.mail_from or ""
        if sender_allowed(policy, sender) or domain_allows_sender(
            self._snapshot(), recipient.rpartition("@")[2], sender
        ):
            return False
        deferred = await self.checks.greylisted(
            self._snapshot().server_id, protocol.client_ip, sender, recipient, policy.greylisting_delay_s
        )
        if deferred:
            self.counters.count_refusal(
                "greylisted", protocol.session_id, protocol.client_ip, f"<{sender}> -> <{recipient}>"
            )
        return deferred

    async def may_relay(self, protocol: MailConsoleSMTP, domain: str) -> bool:
        snapshot = self._snapshot()
        if relay_permitted(snapshot, signed_in_as=protocol.signed_in_as, client_ip=protocol.client_ip, domain=domain):
            return True
        if snapshot.policy.pop_before_smtp_minutes and self._pop_before_smtp is not None:
            return await self._pop_before_smtp(protocol.client_ip, snapshot.policy.pop_before_smtp_minutes)
        return False

    async def handle_RCPT(
        self,
        protocol: MailConsoleSMTP,
        session: Session,
        envelope: LocalEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        snapshot = self._snapshot()
        route = route_recipient(snapshot, address, accepted_so_far=len(envelope.rcpt_tos))
        if not isinstance(route, Recipient):
            return route
        if route.needs_relay and not await self.may_relay(protocol, route.domain):
            return replies.RELAY_DENIED.format(address=address)
        recipient = route.address
        refusal = self._recipient_sender_refusal(protocol, envelope, route.domain, recipient)
        if refusal is not None:
            return refusal
        if route.remote:
            # Only mail we relay for a remote domain (a backup MX) is greylisted; a client that may
            # relay anywhere else signed in, is on the relay list or read its mail (POP before SMTP).
            if route.domain in snapshot.relay_domains and await self._greylisted(protocol, envelope, recipient):
                return replies.GREYLISTED.format(address=recipient)
            envelope.remote_recipients.append(recipient)
            envelope.rcpt_tos.append(recipient)
            envelope.rcpt_options.extend(rcpt_options)
            return replies.OK_RECIPIENT
        destination = route.destination
        if destination is None:
            protocol.unknown_recipients += 1
            delay_s, hang_up = harvest_penalty(snapshot.policy, protocol.unknown_recipients)
            if delay_s:
                # Directory harvesting: slow the client down, then send it away.
                await asyncio.sleep(delay_s)
            if hang_up:
                await protocol.close_with(replies.HARVEST_LIMIT)
            return replies.UNKNOWN_USER.format(address=recipient)
        if await self._greylisted(protocol, envelope, recipient):
            return replies.GREYLISTED.format(address=recipient)
        loop = asyncio.get_running_loop()
        for entry in destination.mailboxes:
            # A mailbox that is already full refuses at RCPT, so the other recipients still get the mail.
            # Without a quota there is nothing to count: no trip to a thread.
            if (entry.quota_bytes is not None or entry.quota_messages is not None) and (
                await loop.run_in_executor(None, over_quota, entry, 1, 1)
            ):
                return replies.MAILBOX_FULL.format(address=recipient)
        for entry in destination.mailboxes:
            envelope.mailbox_targets[entry.address] = entry
        if destination.to_drop:
            envelope.drop_recipients.append(recipient)
        envelope.rcpt_tos.append(recipient)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.OK_RECIPIENT

    async def handle_DATA(self, protocol: MailConsoleSMTP, session: Session, envelope: LocalEnvelope) -> str:
        snapshot = self._snapshot()
        policy = snapshot.policy
        content = envelope.original_content or b""
        rate_keys = message_rate_keys(policy, client_ip=protocol.client_ip, sender=envelope.mail_from or "")
        count_recent = self.counters.count_recent
        refusal = data_refusal(
            policy,
            content,
            bytes_accepted=protocol.bytes_accepted,
            recent_counts=((count_recent(key), limit) for key, limit in rate_keys),
        )
        if refusal is not None:
            return refusal
        refusal = await self._outbound_limit_refusal(protocol, envelope)
        if refusal is not None:
            return refusal
        auth_header, refusal = await self._sender_auth(protocol, envelope)
        if refusal is not None:
            return refusal
        # Without the Authentication-Results naming our host that the sender may have forged.
        content = envelope.original_content or b""
        message_id = unique_message_name("")
        filtered = await self._content_filters(protocol, session, envelope, content, message_id)
        if filtered.refusal is not None:
            return filtered.refusal
        received = received_header(snapshot, session, message_id, tls=protocol.tls_active, user=protocol.signed_in_as)
        if protocol.dnsbl_listed:
            received = dnsbl_header(policy, protocol.client_ip, protocol.dnsbl_listed) + received
        received = auth_header + received
        loop = asyncio.get_running_loop()
        try:
            # Disk work leaves the event loop; the 250 goes out only once every copy is durable.
            refusal = await loop.run_in_executor(
                None, self._store, snapshot, envelope, received, filtered.content, filtered.junk
            )
        except OSError:
            log.exception("could not store message %s", message_id)
            return replies.LOCAL_ERROR
        if refusal:
            return refusal
        protocol.messages_accepted += 1
        protocol.bytes_accepted += len(content)
        for key, _ in rate_keys:
            self.counters.record(key)
        return replies.OK_QUEUED.format(message_id=message_id)

    # -- the Filters tab, at the end of DATA (attachments, virus scan, spam score) ----------------
    async def _content_filters(
        self, protocol: MailConsoleSMTP, session: Session, envelope: LocalEnvelope, content: bytes, message_id: str
    ) -> Filtered:
        """The message as the Filters tab leaves it, or its refusal; signed-in users and relay-list
        clients pass untouched (`antispam_exempt`)."""
        policy = self._snapshot().policy
        if antispam_exempt(policy, signed_in_as=protocol.signed_in_as, client_ip=protocol.client_ip):
            return Filtered(content)
        content, refusal = await self._attachment_filter(protocol, content)
        if refusal is None:
            refusal = await self._virus_scan(protocol, content)
        if refusal is not None:
            return Filtered(content, refusal)
        return await self._spam_score(protocol, session, envelope, content, message_id)

    async def _attachment_filter(self, protocol: MailConsoleSMTP, content: bytes) -> tuple[bytes, str | None]:
        snapshot = self._snapshot()
        if snapshot.policy.attachment_filter == "off":
            return content, None
        loop = asyncio.get_running_loop()
        parts, complete = await loop.run_in_executor(None, walk_message, content)  # parsing is CPU work
        verdict = attachment_verdict(snapshot.policy, parts, complete=complete)
        if verdict.refusal is not None:
            self.counters.count_refusal("attachment", protocol.session_id, protocol.client_ip, verdict.refusal)
            return content, verdict.refusal
        if verdict.to_strip:
            notices = [(finding.part, removal_notice(finding, snapshot.hostname)) for finding in verdict.to_strip]
            content = await loop.run_in_executor(None, strip_parts, content, notices)
            for finding in verdict.to_strip:
                detail = f"removed attachment {finding.name!r}: it {finding.reason}"
                self.counters.count_filtered("attachment_stripped", protocol.session_id, protocol.client_ip, detail)
        return content, None

    async def _virus_scan(self, protocol: MailConsoleSMTP, content: bytes) -> str | None:
        policy = self._snapshot().policy
        if not policy.virus_scanner or self.content_checks is None:
            return None
        result = await self.content_checks.scan(policy.virus_scanner, content)
        refusal = virus_reply(policy, result)
        if refusal is not None:
            reason = "virus" if result.signature else "virus_scanner_unavailable"
            self.counters.count_refusal(reason, protocol.session_id, protocol.client_ip, refusal)
        elif result.error:
            self.counters.count_filtered(
                "virus_scan_skipped", protocol.session_id, protocol.client_ip, f"scanner failed: {result.error}"
            )
        return refusal

    async def _spam_score(
        self, protocol: MailConsoleSMTP, session: Session, envelope: LocalEnvelope, content: bytes, message_id: str
    ) -> Filtered:
        snapshot = self._snapshot()
        policy = snapshot.policy
        if not policy.rspamd_url or self.content_checks is None:
            return Filtered(content)
        headers = [
            ("From", envelope.mail_from or ""),
            *(("Rcpt", recipient) for recipient in envelope.rcpt_tos),
            ("IP", protocol.client_ip),
            ("Helo", session.host_name or ""),
            ("Queue-Id", message_id),
            ("MTA-Name", snapshot.hostname),
        ]
        if protocol.signed_in_as:
            headers.append(("User", protocol.signed_in_as))
        score = await self.content_checks.spam_score(policy.rspamd_url, content, headers)
        if score is None:
            return Filtered(content)  # fail open: logged once by ContentChecks
        verdict = spam_verdict(policy, score)
        if verdict.refusal is not None:
            self.counters.count_refusal("spam", protocol.session_id, protocol.client_ip, verdict.refusal)
            return Filtered(content, verdict.refusal)
        prefix = policy.spam_subject_prefix if verdict.spam else ""
        content = with_spam_headers(content, spam_headers(policy, score, verdict), prefix)
        if verdict.junk and envelope.mailbox_targets:
            self.counters.count_filtered(
                "junk", protocol.session_id, protocol.client_ip, f"score {score:.2f}: filed in Junk ({message_id})"
            )
        return Filtered(content, junk=verdict.junk)

    @staticmethod
    def _store(
        snapshot: ServerSnapshot,
        envelope: LocalEnvelope,
        received: bytes,
        content: bytes | None = None,
        junk: bool = False,
    ) -> str | None:
        mail_from = envelope.mail_from or ""
        if content is None:
            content = envelope.original_content or b""
        chunks = [received, content]
        targets = list(envelope.mailbox_targets.values())
        if targets:
            size_octets = mailstore.stored_size_octets(mail_from, chunks)
            for entry in targets:
                if over_quota(entry, size_octets, 1):
                    return replies.MESSAGE_EXCEEDS_QUOTA.format(address=entry.address)
        mailstore.store_message(
            home_dir=snapshot.home_dir,
            mail_from=mail_from,
            chunks=chunks,
            maildirs=[entry.maildir for entry in targets],
            # The spam score or an honoured DMARC quarantine: the mailboxes' Junk folder.
            folder=mailstore.JUNK_FOLDER if junk or envelope.quarantine else None,
            drop_recipients=envelope.drop_recipients,
            remote_recipients=envelope.remote_recipients,
        )
        return None
