"""What an IMAP session needs from the mail store: a signed-in account, its folders, their messages.

Plain values in and out, no I/O types: the protocol (`servers.imap.session`) is tested against an
in-memory implementation, and the worker gives it the Maildir++ one from the mail store.

Conventions
- Folder names are IMAP names exactly as on the wire: ASCII, with non-ASCII in modified UTF-7
  (RFC 3501 5.1.3), and "." as the hierarchy delimiter; on disk the folder `A.B` is the Maildir++
  directory `.A.B` (Dovecot's and Courier's layout). "INBOX" (any case) is the Maildir itself. Names
  that could become paths ("/", "..", a leading ".", control characters) are refused with
  BadFolderNameError.
- Flags are IMAP flag strings: "\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", and
  keywords (atoms without a backslash). "\\Recent" is never stored.
- A UID is an int >= 1, strictly ascending in a folder for as long as its UIDVALIDITY holds; the
  `key` of a message is its Maildir unique name, which is also POP3's UIDL: one identity, two faces.
- Every method may touch disk: the adapter calls the session off the event loop.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from servers.imap.fetch_cache import FetchCache

HIERARCHY_DELIMITER = "."
INBOX = "INBOX"
SYSTEM_FLAGS = frozenset({"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"})


class SpecialUse(enum.Enum):
    """RFC 6154 attributes of the folders every mailbox gets."""

    SENT = "\\Sent"
    DRAFTS = "\\Drafts"
    TRASH = "\\Trash"
    JUNK = "\\Junk"
    ARCHIVE = "\\Archive"


class StoreError(Exception):
    """The store refused; `text` is safe to show the client. Subclasses map to response codes."""

    code = ""  # an RFC 5530 response code without brackets, or ""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class NoSuchFolderError(StoreError):
    code = "NONEXISTENT"


class FolderExistsError(StoreError):
    code = "ALREADYEXISTS"


class OverQuotaError(StoreError):
    code = "OVERQUOTA"


class BadFolderNameError(StoreError):
    code = "CANNOT"


class FolderInUseError(StoreError):
    code = "INUSE"


class UidValidityChangedError(StoreError):
    """The folder's UIDs were renumbered (its UID map was rebuilt) while a session had it selected.

    What the client was told no longer holds, so the session ends with BYE (as Dovecot does); the
    next SELECT shows the new UIDVALIDITY and the client resynchronises.
    """


@dataclass(frozen=True)
class FolderInfo:
    """One folder as LIST shows it."""

    name: str
    special_use: SpecialUse | None = None
    subscribed: bool = False
    # True for a name that only exists as the parent of others (LIST's \NonExistent / \Noselect).
    selectable: bool = True
    has_children: bool = False


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One message of a folder as the session's snapshot holds it (slots: a process holds one per
    message of every folder its sessions have open, 50,000 for one big folder)."""

    uid: int
    key: str  # the Maildir unique name (POP3 UIDL)
    flags: frozenset[str]
    size_octets: int  # RFC822.SIZE: every line ending counted as CRLF
    internal_date: float  # seconds since the epoch (delivery time)


@dataclass(frozen=True)
class FolderStatus:
    """STATUS without selecting: counts and the UID numbers of a folder."""

    messages: int
    unseen: int
    uidnext: int
    uidvalidity: int
    size_octets: int


@dataclass
class FolderChanges:
    """What happened to a folder since the session last looked (for EXISTS/EXPUNGE/FETCH FLAGS)."""

    expunged: list[int] = field(default_factory=list)  # UIDs gone
    added: list[MessageRecord] = field(default_factory=list)  # ascending UID
    flags_changed: list[MessageRecord] = field(default_factory=list)  # with their new flags

    def __bool__(self) -> bool:
        return bool(self.expunged or self.added or self.flags_changed)


@dataclass(frozen=True)
class Quota:
    """RFC 9208 STORAGE (octets) and MESSAGE resources of the one quota root ("")."""

    used_octets: int
    limit_octets: int | None  # None: no limit
    used_messages: int
    limit_messages: int | None = None


class Folder(Protocol):
    """A folder opened by SELECT/EXAMINE. Many sessions may have the same folder open at once."""

    name: str
    uidvalidity: int
    read_only: bool

    @property
    def uidnext(self) -> int: ...

    def messages(self) -> Sequence[MessageRecord]:
        """The messages as of the last `refresh()` (or the open), ascending UID."""
        ...

    def refresh(self) -> FolderChanges:
        """Look at the disk again; return what changed since the last look (and adopt it)."""
        ...

    def read(self, uid: int) -> bytes:
        """The whole stored message; raise KeyError if it is gone."""
        ...

    def read_header(self, uid: int) -> bytes:
        """The header section (up to and including the blank line); raise KeyError if gone."""
        ...

    def store_flags(self, uids: Sequence[int], flags: frozenset[str], mode: str) -> list[MessageRecord]:
        """Set (mode "set"), add ("add") or remove ("remove") flags; return the changed records.

        Messages gone meanwhile are skipped. Raise StoreError on a read-only folder.
        """
        ...

    def expunge(self, uids: Sequence[int] | None = None) -> list[int]:
        """Remove the messages flagged \\Deleted (only those among `uids` if given); return their UIDs."""
        ...

    def copy_to(self, uids: Sequence[int], target: str) -> tuple[int, list[tuple[int, int]]]:
        """Copy to the folder `target`; return its UIDVALIDITY and (source UID, new UID) pairs.

        Raise NoSuchFolderError, OverQuotaError (nothing copied then).
        """
        ...

    def move_to(self, uids: Sequence[int], target: str) -> tuple[int, list[tuple[int, int]]]:
        """Like copy_to, then the sources are removed (without needing \\Deleted)."""
        ...

    def fetch_cache(self, kind: str) -> FetchCache:
        """Where FETCH keeps what it renders from this folder's messages (`kind`: "ENVELOPE",
        "BODYSTRUCTURE"), by UID: shared by every session while the folder's UIDVALIDITY holds."""
        ...

    def watch_paths(self) -> Sequence[str]:
        """Directories whose mtime changes whenever the folder does: the adapter polls them (one
        stat per folder, however many sessions watch it) and asks IDLE sessions to refresh."""
        ...

    def close(self) -> None:
        """The session no longer has the folder selected."""
        ...


class Account(Protocol):
    """A signed-in mailbox. Released exactly once when the session ends."""

    address: str

    def list_folders(self) -> list[FolderInfo]:
        """Every folder, INBOX first; the special-use ones exist from the first sign-in."""
        ...

    def create_folder(self, name: str) -> None: ...

    def delete_folder(self, name: str) -> None: ...

    def rename_folder(self, old: str, new: str) -> None:
        """RFC 9051 6.3.6: renaming INBOX moves its messages to the new folder and leaves INBOX empty."""
        ...

    def subscribe(self, name: str, subscribed: bool) -> None: ...

    def open_folder(self, name: str, *, read_only: bool) -> Folder: ...

    def status(self, name: str) -> FolderStatus: ...

    def append(self, name: str, message: bytes, flags: frozenset[str], internal_date: float | None) -> tuple[int, int]:
        """Store a message in a folder; return (UIDVALIDITY, UID). OverQuotaError, NoSuchFolderError."""
        ...

    def quota(self) -> Quota: ...

    def release(self) -> None: ...


class AuthStatus(enum.Enum):
    OK = "ok"
    BAD_CREDENTIALS = "bad-credentials"
    LOCKED = "locked"


@dataclass(frozen=True)
class AuthOutcome:
    """What the authenticator says about a login: a status, and the account when it succeeded.

    LOCKED is returned only after the password checked out, or it would reveal that the user exists.
    """

    status: AuthStatus
    account: Account | None = None
    # How long the adapter waits before it answers a failure: throttling without holding a thread.
    failure_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if (self.status is AuthStatus.OK) != (self.account is not None):
            raise ValueError("an OK outcome carries an account, and only an OK outcome does")


# (user name as the client gave it, password) -> outcome. The worker's authenticator normalises the
# name (default domain, case, IDNA) and applies the same sign-in guard as POP3 and SMTP AUTH.
Authenticator = Callable[[str, str], AuthOutcome]
