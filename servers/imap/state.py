"""What every part of an IMAP session shares: its states, how a command ends, and the selected folder's view.

The selected folder's view is the session's own numbering of messages (RFC 9051 2.3.1.2): it changes
only when the session tells the client, with EXISTS and EXPUNGE. Expunges seen while answering
FETCH, STORE or SEARCH wait (RFC 9051 7.5.1): their messages keep their numbers until a command
that may report them.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Sequence
from dataclasses import dataclass

from servers.imap import responses
from servers.imap.parser import CommandSyntaxError, SequenceSet
from servers.imap.store_api import Folder, FolderChanges, MessageRecord


class SessionState(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


# RFC 9051 6.1-6.4 (and the extensions') commands, by the states that accept them.
_ANY_STATE = frozenset({"CAPABILITY", "NOOP", "LOGOUT", "ID"})
_AUTHENTICATED = frozenset(
    {
        "ENABLE",
        "SELECT",
        "EXAMINE",
        "CREATE",
        "DELETE",
        "RENAME",
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "LIST",
        "LSUB",
        "STATUS",
        "APPEND",
        "NAMESPACE",
        "IDLE",
        "GETQUOTAROOT",
        "GETQUOTA",
        "SETQUOTA",
    }
)
_SELECTED = frozenset({"CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE", "UID"})
COMMANDS_BY_STATE: dict[SessionState, frozenset[str]] = {
    SessionState.NOT_AUTHENTICATED: _ANY_STATE | {"STARTTLS", "LOGIN", "AUTHENTICATE"},
    SessionState.AUTHENTICATED: _ANY_STATE | _AUTHENTICATED,
    # RFC 5161 3.1: ENABLE only in the authenticated state.
    SessionState.SELECTED: _ANY_STATE | (_AUTHENTICATED - {"ENABLE"}) | _SELECTED,
    SessionState.LOGOUT: frozenset(),
}
KNOWN_COMMANDS = frozenset().union(*COMMANDS_BY_STATE.values())
# RFC 9051 7.5.1: no EXPUNGE while answering these (their UID forms may, but waiting is simpler).
NO_EXPUNGE_DURING = frozenset({"FETCH", "STORE", "SEARCH"})


@dataclass
class Done:
    """A command that completed: untagged data, then `tag OK text` (default "<NAME> completed")."""

    untagged: bytes = b""
    text: str = ""
    close: bool = False
    start_tls: bool = False


class CommandRefusedError(Exception):
    """End the command with `tag NO/BAD text`."""

    def __init__(self, status: str, text: str, *, delay_s: float = 0.0, untagged: bytes = b"") -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.delay_s = delay_s
        self.untagged = untagged


def flag_list(flags: frozenset[str] | Sequence[str]) -> str:
    return responses.parenthesised(sorted(flags))


def fetch_flags_line(number: int, record: MessageRecord, *, with_uid: bool = True) -> bytes:
    uid = f"UID {record.uid} " if with_uid else ""
    return responses.untagged(f"{number} FETCH ({uid}FLAGS {flag_list(record.flags)})")


class SelectedFolder:
    """The folder a session has selected, numbered as the client was last told."""

    def __init__(self, folder: Folder) -> None:
        self.folder = folder
        # Asked after every command (the adapter's IDLE watcher): a folder's directories do not move.
        self.watch_paths = tuple(folder.watch_paths())
        self.view: list[MessageRecord] = list(folder.messages())
        self.pending_expunged: set[int] = set()
        self.saved_uids: list[int] = []  # RFC 5182: "$", empty until a SEARCH RETURN (SAVE)
        # The view's UIDs, ascending: a message's number is found by bisection, not kept in a dict
        # (a dict of numbers cost 9 KiB per session on a 200-message folder, 1,000 IDLE sessions 9 MiB).
        self._uids: list[int] = []
        self._reindex()

    @property
    def read_only(self) -> bool:
        return self.folder.read_only

    def _reindex(self) -> None:
        self._uids = [record.uid for record in self.view]  # ascending, as the view is

    def number_of(self, uid: int) -> int | None:
        uids = self._uids
        index = bisect.bisect_left(uids, uid)
        return index + 1 if index < len(uids) and uids[index] == uid else None

    def largest_uid(self) -> int:
        return self.view[-1].uid if self.view else 0

    def select(self, sequence_set: SequenceSet, *, by_uid: bool) -> list[tuple[int, MessageRecord]]:
        """The (number, record) pairs a sequence set names, ascending; BAD for numbers beyond the view."""
        if sequence_set.saved:
            numbers = sorted(n for uid in self.saved_uids if (n := self.number_of(uid)) is not None)
            return [(number, self.view[number - 1]) for number in numbers]
        view = self.view
        if by_uid:
            chosen: list[tuple[int, MessageRecord]] = []
            for start, end in sequence_set.select_sorted_slices(self._uids, self.largest_uid()):
                chosen.extend(zip(range(start + 1, end + 1), view[start:end], strict=True))
            return chosen
        count = len(view)
        for first, last in sequence_set.ranges:
            if first is not None and last is not None and max(first, last) > count:
                raise CommandSyntaxError("Invalid message sequence number")
        numbers = sequence_set.select_sorted(range(1, count + 1), count)
        return list(zip(numbers, (view[number - 1] for number in numbers), strict=True))

    def adopt_flags(self, records: Sequence[MessageRecord]) -> None:
        """Take our own STORE's results into the view."""
        for record in records:
            number = self.number_of(record.uid)
            if number is not None:
                self.view[number - 1] = record

    def note_expunged(self, uids: Sequence[int]) -> None:
        self.pending_expunged.update(uid for uid in uids if self.number_of(uid) is not None)

    def updates(self, *, allow_expunge: bool) -> bytes:
        """Look at the store again; the untagged EXPUNGE/EXISTS/FETCH responses for what changed."""
        return self.apply(self.folder.refresh(), allow_expunge=allow_expunge)

    def apply(self, changes: FolderChanges, *, allow_expunge: bool) -> bytes:
        out = bytearray()
        self.note_expunged(changes.expunged)
        if allow_expunge and self.pending_expunged:
            out += self.flush_expunged()
        new = sorted((r for r in changes.added if self.number_of(r.uid) is None), key=lambda r: r.uid)
        if new:
            self.view.extend(new)
            self._reindex()
            out += responses.untagged(f"{len(self.view)} EXISTS")
        for record in changes.flags_changed:
            number = self.number_of(record.uid)
            if number is not None and self.view[number - 1].flags != record.flags:
                self.view[number - 1] = record
                out += fetch_flags_line(number, record)
        return bytes(out)

    def flush_expunged(self) -> bytes:
        out = bytearray()
        # Highest number first, so each EXPUNGE's number is still right when the client reads it.
        for number in range(len(self.view), 0, -1):
            if self.view[number - 1].uid in self.pending_expunged:
                out += responses.untagged(f"{number} EXPUNGE")
                del self.view[number - 1]
        self.pending_expunged.clear()
        self._reindex()
        return bytes(out)
