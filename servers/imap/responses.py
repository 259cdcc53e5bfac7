"""How IMAP responses are written: strings, lists, dates, and the fixed texts tests compare against."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

# RFC 9051 7.1: status responses. Texts the tests compare against.
GREETING = "[CAPABILITY {capabilities}] {hostname} IMAP4rev1 ready"
BYE_LOGOUT = "IMAP4rev1 server logging out"
BYE_AUTOLOGOUT = "Autologout; idle too long"
BYE_TOO_MANY_FAILURES = "Too many failed sign-ins"
BYE_TOO_MANY_ERRORS = "Too many bad commands"
BYE_UIDVALIDITY_CHANGED = "The selected folder was renumbered (UIDVALIDITY changed); select it again"
BAD_UNKNOWN_COMMAND = "Unknown command"
BAD_WRONG_STATE = "Command not valid in this state"
NO_AUTHENTICATION_FAILED = "[AUTHENTICATIONFAILED] Authentication failed"
NO_LOCKED = "[CONTACTADMIN] Account locked"
NO_PRIVACY_REQUIRED = "[PRIVACYREQUIRED] Sign in over TLS (STARTTLS) first"
NO_SERVERBUG = "[SERVERBUG] Internal error, try again"
NO_TLS_UNAVAILABLE = "TLS not available"
BAD_TLS_ACTIVE = "TLS already active"
OK_BEGIN_TLS = "Begin TLS negotiation now"
BAD_AUTH_CANCELLED = "Authentication cancelled"
BAD_AUTH_MALFORMED = "Malformed authentication response"
NO_AUTH_MECHANISM = "Unsupported authentication mechanism"
NO_READ_ONLY = "[READ-ONLY] The folder is open read-only (EXAMINE)"
NO_TRYCREATE = "[TRYCREATE] No such folder"
NO_UNKNOWN_CTE = "[UNKNOWN-CTE] Cannot decode this part's transfer encoding"
CONTINUE_LITERAL = "+ Ready for literal\r\n"
CONTINUE_IDLE = "+ idling\r\n"
CONTINUE_SASL = "+ \r\n"
NO_BAD_CHARSET = "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset"

_QUOTABLE = re.compile(r"[^\x00\r\n\x80-\U0010ffff]*\Z")
_ATOM_SAFE = re.compile(r"[!#$&\'+,\-.0-9:;<=>?@A-Z^_`a-z|}~\[]+\Z")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# RFC 3501 date-month, any case, to its number: for APPEND's date-time and SEARCH's dates.
MONTH_NUMBERS = {name.lower(): number for number, name in enumerate(MONTHS, start=1)}


def line(text: str) -> bytes:
    return text.encode("utf-8") + b"\r\n"


def tagged(tag: str, status: str, text: str) -> bytes:
    return line(f"{tag} {status} {text}")


def untagged(text: str) -> bytes:
    return line(f"* {text}")


def quoted(value: str) -> str:
    """A quoted string; callers make sure it holds no CR, LF, NUL or 8-bit character."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def string(value: str | bytes | None) -> bytes:
    """An nstring: NIL, a quoted string when it can be one, else a literal."""
    if value is None:
        return b"NIL"
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if _QUOTABLE.match(text) and len(text) < 1024:
        return quoted(text).encode("ascii")
    raw = value if isinstance(value, bytes) else value.encode("utf-8")
    return b"{%d}\r\n" % len(raw) + raw


def astring(value: str) -> str:
    """An astring for names we send back: an atom, a quoted string, or (for a name another program
    wrote in 8-bit or with control characters, never modified UTF-7) a literal."""
    if _ATOM_SAFE.match(value) and value.upper() != "NIL":
        return value
    if value.isascii() and value.isprintable():
        return quoted(value)
    text = value.encode("utf-8", "replace").decode("utf-8")
    return f"{{{len(text.encode('utf-8'))}}}\r\n{text}"


def parenthesised(items: Iterable[str]) -> str:
    return "(" + " ".join(items) + ")"


def date_time(epoch_s: float) -> str:
    """RFC 3501 date-time, in UTC: "02-Dec-2026 14:40:08 +0000"."""
    moment = time.gmtime(epoch_s)
    day = f"{moment.tm_mday:02d}-{MONTHS[moment.tm_mon - 1]}-{moment.tm_year:04d}"
    return f'"{day} {time.strftime("%H:%M:%S", moment)} +0000"'
