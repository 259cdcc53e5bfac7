"""The POP3 protocol as a state machine without I/O: a line goes in, the bytes to send come out.

RFC 1939 (POP3), RFC 2449 (CAPA, response codes), RFC 2595 (STLS), RFC 5034 (AUTH) with RFC 4616
PLAIN. The adapter owns the socket and the clock: it sends `greeting()`, feeds each received line
to `receive_line()` and sends `Reply.data`; on `Reply.start_tls` it discards anything already
buffered, upgrades the transport and calls `tls_started()`; on `Reply.close` it closes; if the peer
goes away it calls `connection_lost()`. The authenticator and the mailbox may touch disk or the
database, so the adapter should call `receive_line()` off the event loop.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from servers import pop3_replies as replies


class AuthStatus(enum.Enum):
    OK = "ok"
    BAD_CREDENTIALS = "bad-credentials"
    LOCKED = "locked"
    IN_USE = "in-use"


class MessageInfo(Protocol):
    """What the session needs to know about one message before reading it."""

    @property
    def uid(self) -> str: ...

    @property
    def size_octets(self) -> int: ...


class Mailbox(Protocol):
    """One mailbox, opened (and locked) for one session by a successful login."""

    def messages(self) -> Sequence[MessageInfo]:
        """Return the messages, oldest first; called once, at login."""
        ...

    def read(self, uid: str) -> bytes:
        """Return the stored bytes of one message; raise OSError if it cannot be read."""
        ...

    def commit_deletions(self, uids: Collection[str]) -> None:
        """Remove these messages for good; raise OSError if that fails."""
        ...

    def release(self) -> None:
        """Give the mailbox up (unlock it); called exactly once, when the session ends."""
        ...


@dataclass(frozen=True)
class AuthOutcome:
    """What the authenticator says about a login: a status, and the mailbox when it succeeded.

    Return LOCKED or IN_USE only after checking the password, or they reveal that the user exists.
    """

    status: AuthStatus
    mailbox: Mailbox | None = None
    # How long the adapter waits before it answers a failure: throttling without holding a thread.
    failure_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if (self.status is AuthStatus.OK) != (self.mailbox is not None):
            raise ValueError("an OK outcome carries a mailbox, and only an OK outcome does")


Authenticator = Callable[[str, str], AuthOutcome]


class SessionState(enum.Enum):
    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    UPDATE = "update"
    CLOSED = "closed"


@dataclass(frozen=True)
class Reply:
    """Bytes to send (CRLF-terminated, multi-line responses dot-stuffed) and what to do next."""

    data: bytes
    close: bool = False
    start_tls: bool = False
    # Wait this long (without blocking anyone else) before sending: a throttled sign-in failure.
    delay_s: float = 0.0


# The commands each state accepts: RFC 1939 sections 4-6, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH.
COMMANDS_BY_STATE: dict[SessionState, frozenset[str]] = {
    SessionState.AUTHORIZATION: frozenset({"USER", "PASS", "AUTH", "STLS", "CAPA", "QUIT"}),
    SessionState.TRANSACTION: frozenset(
        {"STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "CAPA", "QUIT"}
    ),
}
KNOWN_COMMANDS = frozenset().union(*COMMANDS_BY_STATE.values())
# Commands that may wait on the database or the disk: sign-in, and QUIT's deletions and unlock.
BLOCKING_COMMANDS = frozenset({"PASS", "AUTH", "APOP", "QUIT"})
# RETR and TOP of a message up to this size read it inline: from the page cache that takes
# microseconds, less than handing the command to a thread.
INLINE_READ_MAX_OCTETS = 128 * 1024

# Control characters (CR, LF, NUL, ...) have no place inside a command line.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class _CommandError(Exception):
    """Stop handling a command and answer with this -ERR reply text."""

    def __init__(self, text: str, *, delay_s: float = 0.0) -> None:
        super().__init__(text)
        self.text = text
        self.delay_s = delay_s


def message_lines(content: bytes) -> list[bytes]:
    """Split stored message bytes into lines without their CRLF or bare-LF endings.

    A CR is part of a line ending only right before an LF, so an unterminated last line keeps a
    trailing CR. `servers.maildir.crlf_size_octets` counts octets by the same rule.
    """
    *terminated, last = content.split(b"\n")
    lines = [line.removesuffix(b"\r") for line in terminated]
    if last:
        lines.append(last)
    return lines


def _status_line(text: str) -> bytes:
    return text.encode("utf-8") + b"\r\n"


def _multiline(status: str, lines: Iterable[bytes]) -> bytes:
    # RFC 1939 section 3: a line starting with "." gets another one; "." alone ends the response.
    stuffed = (b"." + line if line.startswith(b".") else line for line in lines)
    return b"".join([_status_line(status), *(line + b"\r\n" for line in stuffed), b".\r\n"])


def _message_response(status: str, content: bytes) -> bytes:
    """RETR's response: `_multiline(status, message_lines(content))`, in one pass when it can be.

    A message stored with CRLF line endings only (what our SMTP side writes) needs no splitting:
    dot-stuffing is one replace. Anything else (bare LFs) takes the line-by-line path.
    """
    if content.count(b"\n") != content.count(b"\r\n"):
        return _multiline(status, message_lines(content))
    body = content.replace(b"\r\n.", b"\r\n..")
    if body.startswith(b"."):
        body = b"." + body
    if body and not body.endswith(b"\n"):
        body += b"\r\n"
    return b"".join((_status_line(status), body, b".\r\n"))


def _arguments(args: str, *, at_least: int, at_most: int) -> list[str]:
    parts = args.split()
    if not at_least <= len(parts) <= at_most:
        raise _CommandError(replies.SYNTAX_ERROR)
    return parts


def _is_number(token: str) -> bool:
    # isdigit() alone accepts other scripts' digits ("٣"); POP3 numbers are ASCII.
    return token.isascii() and token.isdigit()


class POP3Session:
    """One client's POP3 conversation, from greeting to QUIT or a dropped connection."""

    def __init__(
        self,
        *,
        authenticator: Authenticator,
        hostname: str,
        default_domain: str = "",
        tls_active: bool = False,
        tls_available: bool = False,
        plaintext_login_requires_tls: bool = True,
        max_bad_commands: int = 10,
        max_line_length: int = 1000,
    ) -> None:
        if max_bad_commands < 1:
            raise ValueError("max_bad_commands must be at least 1")
        self.authenticator = authenticator
        self.hostname = hostname
        self.default_domain = default_domain
        self.tls_active = tls_active
        self.tls_available = tls_available
        self.plaintext_login_requires_tls = plaintext_login_requires_tls
        self.max_bad_commands = max_bad_commands
        self.max_line_length = max_line_length

        self.state = SessionState.AUTHORIZATION
        self.username: str | None = None
        self._pending_user: str | None = None
        self._awaiting_sasl_response = False
        self._awaiting_tls = False
        self._consecutive_errors = 0
        self._mailbox: Mailbox | None = None
        self._messages: list[MessageInfo] = []
        self._marked_numbers: set[int] = set()

    # The adapter's entry points.

    def greeting(self) -> list[bytes]:
        """Return the lines to send as soon as the client connects."""
        return [_status_line(replies.GREETING.format(hostname=self.hostname))]

    def receive_line(self, line: bytes) -> Reply:
        """Handle one line from the client (with or without its CRLF) and return the reply."""
        if self.state is SessionState.CLOSED:
            return Reply(b"", close=True)
        if self._awaiting_tls:
            # RFC 2595 section 4: nothing may come between STLS and the handshake (no plaintext injection).
            return self._closing(replies.TLS_EXPECTED)
        sasl_response_expected, self._awaiting_sasl_response = self._awaiting_sasl_response, False
        try:
            reply = self._handle(line, sasl_response_expected)
        except _CommandError as refusal:
            reply = Reply(_status_line(refusal.text), delay_s=refusal.delay_s)
        return self._after(reply)

    def may_block(self, line: bytes) -> bool:
        """Whether answering `line` may wait on the database or the disk.

        The adapter runs such lines in a thread and answers the rest on its event loop. A line that
        could end the session counts as blocking too: ending it unlocks the mailbox.
        """
        if self._awaiting_sasl_response or self._awaiting_tls or self._consecutive_errors + 1 >= self.max_bad_commands:
            return True
        verb, _, args = line.strip().partition(b" ")
        verb = verb.upper()
        if verb in (b"RETR", b"TOP"):
            number = args.split(b" ", 1)[0]
            if number.isdigit() and 1 <= int(number) <= len(self._messages):
                return self._messages[int(number) - 1].size_octets > INLINE_READ_MAX_OCTETS
            return False
        return verb.decode("ascii", "replace") in BLOCKING_COMMANDS

    def tls_started(self) -> None:
        """Record that the transport now runs TLS; forget anything said before it."""
        self.tls_active = True
        self._awaiting_tls = False
        self._pending_user = None

    def connection_lost(self) -> None:
        """End the session after the peer went away; marked deletions are dropped (RFC 1939 section 6)."""
        self._end()

    # Line handling.

    def _handle(self, line: bytes, sasl_response_expected: bool) -> Reply:
        if line.endswith(b"\n"):
            line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        if len(line) > self.max_line_length:
            raise _CommandError(replies.LINE_TOO_LONG)
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise _CommandError(replies.INVALID_CHARACTERS) from None
        if _CONTROL_CHARACTERS.search(text):
            raise _CommandError(replies.INVALID_CHARACTERS)
        if sasl_response_expected:
            if text == "*":
                raise _CommandError(replies.AUTH_CANCELLED)  # RFC 5034 section 4
            return self._complete_auth_plain(text)

        verb, _, args = text.partition(" ")
        # Uppercasing non-ASCII can produce ASCII ("ſtat" -> "STAT"), so check first.
        verb = verb.upper() if verb.isascii() else ""
        if verb not in KNOWN_COMMANDS:
            raise _CommandError(replies.UNKNOWN_COMMAND)
        if verb not in COMMANDS_BY_STATE.get(self.state, frozenset()):
            raise _CommandError(replies.WRONG_STATE)
        handler: Callable[[str], Reply] = getattr(self, f"pop_{verb}")
        return handler(args)

    def _after(self, reply: Reply) -> Reply:
        if reply.data.startswith(b"+OK"):
            self._consecutive_errors = 0
        elif reply.data.startswith(b"-ERR") and not reply.close:
            self._consecutive_errors += 1
            if self._consecutive_errors >= self.max_bad_commands:
                return self._closing(replies.TOO_MANY_ERRORS)
        if reply.close:
            self._end()
        return reply

    def _closing(self, text: str) -> Reply:
        self._end()
        return Reply(_status_line(text), close=True)

    def _end(self) -> None:
        self.state = SessionState.CLOSED
        self._awaiting_sasl_response = False
        self._awaiting_tls = False
        self._marked_numbers.clear()
        mailbox, self._mailbox = self._mailbox, None
        if mailbox is not None:
            mailbox.release()

    # Authorization.

    @property
    def plaintext_login_allowed(self) -> bool:
        return self.tls_active or not self.plaintext_login_requires_tls

    def _qualified(self, name: str) -> str:
        # Like the SMTP side: a bare name belongs to the server's default domain.
        if "@" in name or not self.default_domain:
            return name
        return f"{name}@{self.default_domain}"

    def _require_plaintext_login(self) -> None:
        if not self.plaintext_login_allowed:
            raise _CommandError(replies.PLAINTEXT_NEEDS_TLS)

    def pop_USER(self, args: str) -> Reply:
        self._require_plaintext_login()
        (name,) = _arguments(args, at_least=1, at_most=1)
        self._pending_user = self._qualified(name)
        return Reply(_status_line(replies.USER_ACCEPTED))

    def pop_PASS(self, args: str) -> Reply:
        self._require_plaintext_login()
        username, self._pending_user = self._pending_user, None
        if username is None:
            raise _CommandError(replies.USER_FIRST)
        # RFC 1939 section 7: PASS has one argument, so spaces belong to the password.
        if not args:
            raise _CommandError(replies.SYNTAX_ERROR)
        return self._log_in(username, args)

    def pop_AUTH(self, args: str) -> Reply:
        parts = _arguments(args, at_least=1, at_most=2)
        if parts[0].upper() != "PLAIN":
            raise _CommandError(replies.AUTH_MECHANISM_UNSUPPORTED)
        self._require_plaintext_login()
        self._pending_user = None
        if len(parts) == 1:
            self._awaiting_sasl_response = True
            return Reply(_status_line(replies.SASL_CONTINUE))
        # RFC 5034 section 4: "=" is an empty initial response.
        return self._complete_auth_plain("" if parts[1] == "=" else parts[1])

    def _complete_auth_plain(self, response: str) -> Reply:
        try:
            decoded = base64.b64decode(response, validate=True)
            # RFC 4616: authzid NUL authcid NUL passwd, all UTF-8.
            authzid, authcid, password = (field.decode("utf-8") for field in decoded.split(b"\0"))
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise _CommandError(replies.AUTH_MALFORMED) from None
        if not authcid or not password:
            raise _CommandError(replies.AUTH_MALFORMED)
        username = self._qualified(authcid)
        if authzid and self._qualified(authzid) != username:
            raise _CommandError(replies.AUTH_FAILED)  # nobody may log in as someone else
        return self._log_in(username, password)

    def _log_in(self, username: str, password: str) -> Reply:
        outcome = self.authenticator(username, password)
        if outcome.status is AuthStatus.LOCKED:
            raise _CommandError(replies.MAILBOX_LOCKED)
        if outcome.status is AuthStatus.IN_USE:
            raise _CommandError(replies.MAILBOX_IN_USE)
        if outcome.status is not AuthStatus.OK or outcome.mailbox is None:
            raise _CommandError(replies.AUTH_FAILED, delay_s=outcome.failure_delay_s)
        mailbox = outcome.mailbox
        try:
            messages = list(mailbox.messages())
        except OSError:
            mailbox.release()
            raise _CommandError(replies.MAILBOX_UNAVAILABLE) from None
        self._mailbox = mailbox
        self._messages = messages
        self.username = username
        self.state = SessionState.TRANSACTION
        return Reply(_status_line(replies.LOGGED_IN.format(count=len(messages), octets=self._total_octets())))

    def pop_STLS(self, args: str) -> Reply:
        _arguments(args, at_least=0, at_most=0)
        if self.tls_active:
            raise _CommandError(replies.TLS_ALREADY_ACTIVE)
        if not self.tls_available:
            raise _CommandError(replies.TLS_UNAVAILABLE)
        self._pending_user = None
        self._awaiting_tls = True
        return Reply(_status_line(replies.TLS_BEGIN), start_tls=True)

    def pop_CAPA(self, args: str) -> Reply:
        _arguments(args, at_least=0, at_most=0)
        capabilities = [
            replies.CAPABILITY_TOP,
            replies.CAPABILITY_UIDL,
            replies.CAPABILITY_RESP_CODES,
            replies.CAPABILITY_AUTH_RESP_CODE,
        ]
        # Only what would work right now: no USER/SASL before TLS if plaintext needs it.
        if self.plaintext_login_allowed:
            capabilities += [replies.CAPABILITY_USER, replies.CAPABILITY_SASL_PLAIN]
        if self.state is SessionState.AUTHORIZATION and self.tls_available and not self.tls_active:
            capabilities.append(replies.CAPABILITY_STLS)
        return Reply(_multiline(replies.CAPABILITIES_FOLLOW, (c.encode("ascii") for c in capabilities)))

    def pop_QUIT(self, args: str) -> Reply:
        _arguments(args, at_least=0, at_most=0)
        if self.state is SessionState.TRANSACTION and self._mailbox is not None:
            self.state = SessionState.UPDATE
            uids = [self._messages[number - 1].uid for number in sorted(self._marked_numbers)]
            try:
                if uids:
                    self._mailbox.commit_deletions(uids)
            except OSError:
                return Reply(_status_line(replies.DELETIONS_NOT_COMMITTED), close=True)
        return Reply(_status_line(replies.BYE.format(hostname=self.hostname)), close=True)

    # Transaction.

    def _live_messages(self) -> list[tuple[int, MessageInfo]]:
        return [
            (number, message)
            for number, message in enumerate(self._messages, start=1)
            if number not in self._marked_numbers
        ]

    def _total_octets(self) -> int:
        return sum(message.size_octets for _, message in self._live_messages())

    def _live_message(self, token: str) -> tuple[int, MessageInfo]:
        if not _is_number(token):
            raise _CommandError(replies.INVALID_MESSAGE_NUMBER)
        number = int(token)
        if not 1 <= number <= len(self._messages):
            raise _CommandError(replies.NO_SUCH_MESSAGE)
        if number in self._marked_numbers:
            raise _CommandError(replies.MESSAGE_ALREADY_DELETED.format(number=number))
        return number, self._messages[number - 1]

    def _read_lines(self, number: int, message: MessageInfo) -> list[bytes]:
        assert self._mailbox is not None
        try:
            return message_lines(self._mailbox.read(message.uid))
        except OSError:
            raise _CommandError(replies.MESSAGE_UNREADABLE.format(number=number)) from None

    def pop_STAT(self, args: str) -> Reply:
        _arguments(args, at_least=0, at_most=0)
        text = replies.MAILDROP_STAT.format(count=len(self._live_messages()), octets=self._total_octets())
        return Reply(_status_line(text))

    def pop_LIST(self, args: str) -> Reply:
        parts = _arguments(args, at_least=0, at_most=1)
        if parts:
            number, message = self._live_message(parts[0])
            return Reply(_status_line(replies.SCAN_LISTING.format(number=number, octets=message.size_octets)))
        live = self._live_messages()
        status = replies.SCAN_LISTING_FOLLOWS.format(count=len(live), octets=self._total_octets())
        lines = (replies.SCAN_LISTING_LINE.format(number=n, octets=m.size_octets).encode("ascii") for n, m in live)
        return Reply(_multiline(status, lines))

    def pop_UIDL(self, args: str) -> Reply:
        parts = _arguments(args, at_least=0, at_most=1)
        if parts:
            number, message = self._live_message(parts[0])
            return Reply(_status_line(replies.UID_LISTING.format(number=number, uid=message.uid)))
        lines = (replies.UID_LISTING_LINE.format(number=n, uid=m.uid).encode("utf-8") for n, m in self._live_messages())
        return Reply(_multiline(replies.UID_LISTING_FOLLOWS, lines))

    def pop_RETR(self, args: str) -> Reply:
        (token,) = _arguments(args, at_least=1, at_most=1)
        number, message = self._live_message(token)
        assert self._mailbox is not None
        try:
            content = self._mailbox.read(message.uid)
        except OSError:
            raise _CommandError(replies.MESSAGE_UNREADABLE.format(number=number)) from None
        return Reply(_message_response(replies.MESSAGE_FOLLOWS.format(octets=message.size_octets), content))

    def pop_TOP(self, args: str) -> Reply:
        token, body_line_count = _arguments(args, at_least=2, at_most=2)
        number, message = self._live_message(token)
        if not _is_number(body_line_count):
            raise _CommandError(replies.SYNTAX_ERROR)
        lines = self._read_lines(number, message)
        try:
            blank_index = lines.index(b"")
        except ValueError:
            selected = lines  # no body: the whole message is headers
        else:
            selected = lines[: blank_index + 1 + int(body_line_count)]
        return Reply(_multiline(replies.TOP_FOLLOWS, selected))

    def pop_DELE(self, args: str) -> Reply:
        (token,) = _arguments(args, at_least=1, at_most=1)
        number, _ = self._live_message(token)
        # Only marked: RFC 1939 section 6 removes messages in the UPDATE state, after QUIT.
        self._marked_numbers.add(number)
        return Reply(_status_line(replies.MESSAGE_DELETED.format(number=number)))

    def pop_RSET(self, args: str) -> Reply:
        _arguments(args, at_least=0, at_most=0)
        self._marked_numbers.clear()
        text = replies.MAILDROP_RESET.format(count=len(self._messages), octets=self._total_octets())
        return Reply(_status_line(text))

    def pop_NOOP(self, args: str) -> Reply:
        _arguments(args, at_least=0, at_most=0)
        return Reply(_status_line(replies.OK))
