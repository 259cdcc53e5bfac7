"""The IMAP protocol as a state machine without I/O: bytes go in, the bytes to send come out.

RFC 3501 (IMAP4rev1) and RFC 9051 (IMAP4rev2), with RFC 2177 IDLE, RFC 2971 ID, RFC 4315 UIDPLUS,
RFC 4731 ESEARCH, RFC 4959 SASL-IR, RFC 5161 ENABLE, RFC 5258/5819 LIST-EXTENDED/LIST-STATUS,
RFC 6154 SPECIAL-USE, RFC 6851 MOVE, RFC 7888 LITERAL+, RFC 9208 QUOTA.

The adapter (`servers.workers.imapd`) owns the socket and the clock. It sends `greeting()`, feeds
what it receives to `receive_data()` (in a thread: the store touches disk) and sends `Reply.data`
after `Reply.delay_s`; on `Reply.start_tls` it discards anything buffered, upgrades the transport
and calls `tls_started()`; on `Reply.close` it closes. While `idling`, it watches `watch_paths` and
sends what `idle_updates()` returns. After 30 minutes without a command (RFC 9051 5.4) it sends
`autologout()` and closes; an IDLE counts as activity, re-armed every 29 minutes. When the peer goes
away it calls `connection_lost()`.

\\Recent is not tracked: every session reports 0 recent messages (RFC 9051 dropped it).
"""

from __future__ import annotations

import base64
import binascii
import enum
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from servers.imap import responses
from servers.imap.message_commands import MessageCommands
from servers.imap.parser import (
    Command,
    CommandParser,
    CommandSyntaxError,
    ContinuationNeeded,
    Rejected,
    arguments,
    as_astring,
    as_atom,
)
from servers.imap.state import (
    COMMANDS_BY_STATE,
    KNOWN_COMMANDS,
    NO_EXPUNGE_DURING,
    CommandRefusedError,
    Done,
    SessionState,
)
from servers.imap.store_api import Account, Authenticator, AuthStatus, StoreError, UidValidityChangedError

logger = logging.getLogger(__name__)

# Before sign-in nobody needs more than a user name and password in a literal.
MAX_LITERAL_OCTETS_BEFORE_LOGIN = 8 * 1024
MAX_FAILED_SIGN_INS = 3
MAX_CONSECUTIVE_BAD = 10
BASE_CAPABILITIES = (
    "IMAP4rev1 IMAP4rev2 LITERAL+ ID ENABLE IDLE NAMESPACE UIDPLUS MOVE SPECIAL-USE CHILDREN LIST-EXTENDED"
    " LIST-STATUS UNSELECT ESEARCH SEARCHRES QUOTA QUOTA=RES-STORAGE"
)
SERVER_ID = '("name" "MailConsole")'


@dataclass
class Reply:
    data: bytes = b""  # bytes to send now (continuations, untagged and tagged responses)
    start_tls: bool = False  # after sending data: discard anything buffered, upgrade, then call tls_started()
    close: bool = False  # after sending data: close the connection
    delay_s: float = 0.0  # wait this long before sending data (sign-in failure throttle)


def _full_name(command: Command) -> str:
    if command.name == "UID" and command.args and isinstance(command.args[0], str):
        return f"UID {command.args[0].upper()}"
    return command.name


class _Mode(enum.Enum):
    COMMANDS = "commands"
    SASL_RESPONSE = "sasl response"  # AUTHENTICATE PLAIN without an initial response
    IDLE = "idle"
    AWAITING_TLS = "awaiting tls"


class ImapSession(MessageCommands):
    """One client's IMAP conversation, from greeting to LOGOUT, autologout or a dropped connection."""

    def __init__(
        self,
        *,
        hostname: str,
        authenticator: Authenticator,
        tls_available: bool,
        tls_active: bool,
        plaintext_requires_tls: bool,
        default_domain: str = "",
        max_literal_octets: int = 50 * 1024 * 1024,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.hostname = hostname
        self.authenticator = authenticator
        self.tls_available = tls_available
        self.tls_active = tls_active
        self.plaintext_requires_tls = plaintext_requires_tls
        self.default_domain = default_domain
        self.max_literal_octets = max_literal_octets
        self.now = now
        self.last_command_at = now()  # for the console's Current Sessions; the adapter keeps its own timer
        self.state = SessionState.NOT_AUTHENTICATED
        self.account: Account | None = None
        self._user: str | None = None
        self._mode = _Mode.COMMANDS
        self._mode_tag = ""
        self._failed_sign_ins = 0
        self._consecutive_bad = 0
        self._ended = False
        self.rev2_enabled = False
        self._parser = CommandParser(max_literal_octets=min(max_literal_octets, MAX_LITERAL_OCTETS_BEFORE_LOGIN))
        self.selected = None

    # The adapter's entry points.

    def greeting(self) -> bytes:
        return responses.untagged(
            "OK " + responses.GREETING.format(capabilities=self.capabilities(), hostname=self.hostname)
        )

    @property
    def user(self) -> str | None:
        return self._user

    @property
    def selected_folder(self) -> str | None:
        return self.selected.folder.name if self.selected is not None else None

    @property
    def idling(self) -> bool:
        return self._mode is _Mode.IDLE

    @property
    def watch_paths(self) -> Sequence[str]:
        return self.selected.watch_paths if self.selected is not None else ()

    def receive_data(self, data: bytes) -> Reply:
        """Handle received bytes: every complete command in them, in order."""
        if self.state is SessionState.LOGOUT:
            return Reply(close=True)
        if self._mode is _Mode.AWAITING_TLS:
            # RFC 9051 11.1: nothing sent before the handshake is ever executed after it.
            return Reply()
        self.last_command_at = self.now()
        self._parser.feed(data)
        out: list[bytes] = []  # joined once at the end: a FETCH of 50,000 messages is megabytes
        reply = Reply()
        while not (reply.close or reply.start_tls):
            if self._mode is _Mode.COMMANDS:
                event = self._parser.next_command()
                if event is None:
                    break
                step = self._on_event(event)
            else:
                line = self._parser.next_line()
                if line is None:
                    break
                step = self._on_line(line)
            out.append(step.data)
            reply.delay_s += step.delay_s
            reply.close, reply.start_tls = step.close, step.start_tls
        if reply.start_tls:
            self._mode = _Mode.AWAITING_TLS
            self._parser.clear()  # pipelined commands after STARTTLS are dropped, never run
        if reply.close:
            self._end()
        reply.data = out[0] if len(out) == 1 else b"".join(out)
        return reply

    def tls_started(self) -> None:
        """The transport now runs TLS: forget anything received before it."""
        self.tls_active = True
        self._mode = _Mode.COMMANDS
        self._parser.clear()

    def idle_updates(self) -> bytes:
        """While idling: what changed in the selected folder, as untagged responses (b"" if nothing)."""
        if self._mode is not _Mode.IDLE or self.selected is None:
            return b""
        try:
            return self.selected.updates(allow_expunge=True)
        except UidValidityChangedError:
            # The client hangs up on BYE; a session that has ended is no longer idling for the adapter.
            self._end()
            return responses.untagged("BYE " + responses.BYE_UIDVALIDITY_CHANGED)
        except Exception:
            logger.exception("IMAP IDLE refresh failed for %s", self._user)
            return b""

    def autologout(self) -> bytes:
        self._end()
        return responses.untagged("BYE " + responses.BYE_AUTOLOGOUT)

    def connection_lost(self) -> None:
        self._end()

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        self.state = SessionState.LOGOUT
        self._mode = _Mode.COMMANDS
        self._parser.clear()
        try:
            self._deselect()
        finally:
            account, self.account = self.account, None
            if account is not None:
                account.release()

    # Commands.

    def _on_event(self, event: Command | ContinuationNeeded | Rejected) -> Reply:
        if isinstance(event, ContinuationNeeded):
            return Reply(responses.CONTINUE_LITERAL.encode("ascii"))
        if isinstance(event, Rejected):
            return self._counted(Reply(event.response(), close=event.close), event.status)
        return self._execute(event)

    def _execute(self, command: Command, handler: Callable[[Command], Done] | None = None) -> Reply:
        """Run a command (or the second half of one that waited on the client) and write its responses."""
        name = command.name
        if handler is None:
            if name not in KNOWN_COMMANDS:
                return self._counted(Reply(responses.tagged(command.tag, "BAD", responses.BAD_UNKNOWN_COMMAND)), "BAD")
            if name not in COMMANDS_BY_STATE[self.state]:
                return self._counted(Reply(responses.tagged(command.tag, "BAD", responses.BAD_WRONG_STATE)), "BAD")
            handler = getattr(self, f"imap_{name}")
            assert handler is not None
        done = Done()
        delay_s = 0.0
        try:
            done = handler(command)
        except CommandSyntaxError as error:
            status, text = "BAD", str(error)
        except CommandRefusedError as refusal:
            status, text, delay_s, done.untagged = refusal.status, refusal.text, refusal.delay_s, refusal.untagged
        except UidValidityChangedError as error:
            self._end()
            return self._closing(
                Reply(responses.tagged(command.tag, "NO", error.text)), responses.BYE_UIDVALIDITY_CHANGED
            )
        except StoreError as error:
            status, text = "NO", f"[{error.code}] {error.text}" if error.code else error.text
        except Exception:
            logger.exception("IMAP %s failed for %s", name, self._user)
            status, text = "NO", responses.NO_SERVERBUG
        else:
            if self._mode is not _Mode.COMMANDS:  # IDLE or AUTHENTICATE now waits for the client
                return Reply(done.untagged)
            status, text = "OK", done.text or f"{_full_name(command)} completed"
            if done.start_tls:
                return Reply(responses.tagged(command.tag, status, text), start_tls=True)
        try:
            updates = b"" if done.close else self._updates_after(command)
        except UidValidityChangedError:
            self._end()
            return self._closing(
                Reply(done.untagged + responses.tagged(command.tag, status, text)), responses.BYE_UIDVALIDITY_CHANGED
            )
        reply = Reply(
            b"".join((done.untagged, updates, responses.tagged(command.tag, status, text))),
            close=done.close,
            delay_s=delay_s,
        )
        if status == "NO" and self._failed_sign_ins >= MAX_FAILED_SIGN_INS:
            return self._closing(reply, responses.BYE_TOO_MANY_FAILURES)
        return self._counted(reply, status)

    def _counted(self, reply: Reply, status: str) -> Reply:
        """Close a connection that sends nothing but garbage (no legitimate client gets ten BADs in a row)."""
        self._consecutive_bad = self._consecutive_bad + 1 if status == "BAD" else 0
        if self._consecutive_bad >= MAX_CONSECUTIVE_BAD and not reply.close:
            return self._closing(reply, responses.BYE_TOO_MANY_ERRORS)
        return reply

    def _closing(self, reply: Reply, text: str) -> Reply:
        return Reply(reply.data + responses.untagged("BYE " + text), close=True, delay_s=reply.delay_s)

    def _updates_after(self, command: Command) -> bytes:
        if self.selected is None or self.state is not SessionState.SELECTED:
            return b""
        try:
            return self.selected.updates(allow_expunge=command.name not in NO_EXPUNGE_DURING)
        except UidValidityChangedError:
            raise
        except Exception:
            logger.exception("IMAP refresh failed for %s", self._user)
            return b""

    def capabilities(self) -> str:
        words = [BASE_CAPABILITIES]
        if self.state is SessionState.NOT_AUTHENTICATED:
            if self.tls_available and not self.tls_active:
                words.append("STARTTLS")
            if self._plaintext_allowed:
                words.append("SASL-IR AUTH=PLAIN")
            else:
                words.append("LOGINDISABLED")
        return " ".join(words)

    def imap_CAPABILITY(self, command: Command) -> Done:
        arguments(command.args, 0, 0)
        return Done(responses.untagged("CAPABILITY " + self.capabilities()))

    def imap_NOOP(self, command: Command) -> Done:
        arguments(command.args, 0, 0)
        return Done()

    def imap_LOGOUT(self, command: Command) -> Done:
        arguments(command.args, 0, 0)
        return Done(responses.untagged("BYE " + responses.BYE_LOGOUT), close=True)

    def imap_ID(self, command: Command) -> Done:
        # RFC 2971: the client's parameters are only informative; we answer with our name.
        arguments(command.args, 1, 1)
        return Done(responses.untagged("ID " + SERVER_ID))

    def imap_STARTTLS(self, command: Command) -> Done:
        arguments(command.args, 0, 0)
        if self.tls_active:
            raise CommandRefusedError("BAD", responses.BAD_TLS_ACTIVE)
        if not self.tls_available:
            raise CommandRefusedError("NO", responses.NO_TLS_UNAVAILABLE)
        return Done(text=responses.OK_BEGIN_TLS, start_tls=True)

    # Sign-in.

    @property
    def _plaintext_allowed(self) -> bool:
        return self.tls_active or not self.plaintext_requires_tls

    def _qualified(self, name: str) -> str:
        if "@" in name or not self.default_domain:
            return name
        return f"{name}@{self.default_domain}"

    def imap_LOGIN(self, command: Command) -> Done:
        user, password = (as_astring(token) for token in arguments(command.args, 2, 2))
        if not self._plaintext_allowed:
            raise CommandRefusedError("NO", responses.NO_PRIVACY_REQUIRED)
        return self._sign_in(user, password)

    def imap_AUTHENTICATE(self, command: Command) -> Done:
        args = arguments(command.args, 1, 2)
        if as_atom(args[0]).upper() != "PLAIN":
            raise CommandRefusedError("NO", responses.NO_AUTH_MECHANISM)
        if not self._plaintext_allowed:
            raise CommandRefusedError("NO", responses.NO_PRIVACY_REQUIRED)
        if len(args) == 1:
            self._mode, self._mode_tag = _Mode.SASL_RESPONSE, command.tag
            return Done(responses.CONTINUE_SASL.encode("ascii"))
        initial = as_atom(args[1])
        return self._sasl_plain("" if initial == "=" else initial)  # RFC 4959: "=" is an empty response

    def _sasl_plain(self, response: str) -> Done:
        try:
            decoded = base64.b64decode(response, validate=True)
            authzid, authcid, password = (part.decode("utf-8") for part in decoded.split(b"\0"))
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise CommandRefusedError("BAD", responses.BAD_AUTH_MALFORMED) from None
        if not authcid or not password:
            raise CommandRefusedError("BAD", responses.BAD_AUTH_MALFORMED)
        if authzid and self._qualified(authzid) != self._qualified(authcid):
            self._failed_sign_ins += 1
            raise CommandRefusedError("NO", responses.NO_AUTHENTICATION_FAILED)  # nobody signs in as someone else
        return self._sign_in(authcid, password)

    def _sign_in(self, user: str, password: str) -> Done:
        outcome = self.authenticator(self._qualified(user), password)
        if outcome.status is AuthStatus.OK and outcome.account is not None:
            self.account = outcome.account
            self._user = outcome.account.address
            self.state = SessionState.AUTHENTICATED
            self._parser.max_literal_octets = self.max_literal_octets
            return Done(text=f"[CAPABILITY {self.capabilities()}] Logged in")
        self._failed_sign_ins += 1
        text = responses.NO_LOCKED if outcome.status is AuthStatus.LOCKED else responses.NO_AUTHENTICATION_FAILED
        raise CommandRefusedError("NO", text, delay_s=outcome.failure_delay_s)

    def _on_line(self, line: bytes | Rejected) -> Reply:
        tag, mode = self._mode_tag, self._mode
        self._mode = _Mode.COMMANDS
        if isinstance(line, Rejected):
            return Reply(responses.tagged(tag, "BAD", line.text))
        if mode is _Mode.IDLE:
            if line.strip().upper() != b"DONE":
                return Reply(responses.tagged(tag, "BAD", "Expected DONE"))
            return self._execute(Command(tag, "IDLE", []), lambda _: Done(text="IDLE terminated"))
        # AUTHENTICATE's response line.
        if line == b"*":
            return Reply(responses.tagged(tag, "BAD", responses.BAD_AUTH_CANCELLED))
        text = line.decode("ascii", "replace")
        return self._execute(Command(tag, "AUTHENTICATE", []), lambda _: self._sasl_plain(text))

    def imap_IDLE(self, command: Command) -> Done:
        arguments(command.args, 0, 0)
        updates = self.selected.updates(allow_expunge=True) if self.selected is not None else b""
        self._mode, self._mode_tag = _Mode.IDLE, command.tag  # only once nothing can fail any more
        return Done(responses.CONTINUE_IDLE.encode("ascii") + updates)
