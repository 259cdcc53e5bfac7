"""IMAP folders over Maildir++: the `store_api.Account` and `store_api.Folder` of one mailbox.

Layout (Dovecot's and Courier's Maildir++): INBOX is the mailbox's Maildir; the folder `A.B` is the
Maildir `<maildir>/.A.B` ("." is the hierarchy delimiter). A parent need not exist on disk: CREATE
of `A.B` makes `.A.B` only, and LIST shows a missing `A` as a non-selectable name with children
(RFC 3501 6.3.3 lets a server create the parents or not; Maildir++ does not need them, and not
making them means DELETE of `A.B` leaves nothing behind). DELETE of a folder with children removes
its messages and its directory, so it lists as non-selectable with children (RFC 3501 6.3.4);
deleting such a non-selectable name is refused. INBOX and the special-use folders (Sent, Drafts,
Trash, Junk, Archive, created and subscribed at the first sign-in; the webmail keeps its sent copies
in `.Sent`) can be neither deleted nor renamed away, except RENAME INBOX, which moves INBOX's
messages into the new folder and leaves INBOX empty (RFC 3501 6.3.5). A rename keeps the folder's
UID map (it lives inside the folder), so the UIDs and UIDVALIDITY move with it.

Other state in the mailbox's Maildir: `subscriptions` (one folder name a line, Courier's and
Dovecot's format), `.mailconsole-uidvalidity` (see `servers.uidmap`); in each folder
`.mailconsole-uidlist` (the UID map) and `dovecot-keywords` (keyword number and name a line: the
keyword numbered n is the Maildir flag letter chr(ord("a") + n), Dovecot's format; 26 at most, a
further keyword is not stored and STORE leaves it out).

Flags: \\Seen \\Answered \\Flagged \\Deleted \\Draft are the Maildir info letters S R F T D. Other
letters in a file name (P "passed", or a keyword letter) are kept as they are by every STORE.

Coexistence with POP3: POP3 keeps its exclusive `servers.maildir.MailboxLock`, against other POP3
sessions only; an IMAP session never takes it. POP3's DELE+QUIT unlinks files, and IMAP sessions see
those messages as expunged at their next refresh; POP3 sees IMAP's flag changes as nothing at all
(a rename keeps the unique name, which is its UIDL) and IMAP's expunges as messages gone.

Quota: the octets and messages of every folder together (`servers.maildir.mailbox_usage`), against
the limits the account was made with; APPEND and COPY that would pass them are refused with nothing
stored, MOVE never is (it does not grow the mailbox).

Speed: a refresh of an unchanged folder is two stats; right after the session's own STORE or
EXPUNGE, three (the folder's change stamp too, `servers.mailstore.CHANGE_STAMP_NAME`: see
`MaildirFolder._after_own_write`), instead of a listing of cur/. A look at a changed folder lists new/ (and
cur/ only if it changed), reads only what others appended to the UID map, and makes records only
for what changed; the records of a folder are kept once per process (`_Snapshot`) and shared by
its sessions, so a SELECT in a warm process builds nothing.

Every write goes through `servers.mailstore`; the UIDs come from `servers.uidmap`. Nothing here
imports Django: the worker builds a `MaildirAccount` from the Mailbox row.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from servers import mailstore, uidmap
from servers.imap import fetch_cache
from servers.imap.fetch_cache import FetchCache
from servers.imap.store_api import (
    HIERARCHY_DELIMITER,
    INBOX,
    BadFolderNameError,
    FolderChanges,
    FolderExistsError,
    FolderInfo,
    FolderStatus,
    MessageRecord,
    NoSuchFolderError,
    OverQuotaError,
    Quota,
    SpecialUse,
    StoreError,
    UidValidityChangedError,
)
from servers.maildir import (
    USAGE_SETTLE_NS,
    UnsafePathError,
    _cached_crlf_size,
    _folder_mtimes_ns,
    ensure_maildir,
    exceeds_quota,
    folder_maildir,
    mailbox_usage,
    unique_part,
)
from servers.uidmap import Entry

SPECIAL_FOLDERS: dict[str, SpecialUse] = {
    "Sent": SpecialUse.SENT,
    "Drafts": SpecialUse.DRAFTS,
    "Trash": SpecialUse.TRASH,
    "Junk": SpecialUse.JUNK,
    "Archive": SpecialUse.ARCHIVE,
}
SUBSCRIPTIONS_NAME = "subscriptions"
SUBSCRIPTIONS_LOCK_NAME = ".subscriptions.lock"
KEYWORDS_NAME = "dovecot-keywords"
MAX_KEYWORDS = 26  # the letters a to z
MAX_FOLDER_NAME_OCTETS = 255
FLAG_LETTERS = {"\\Seen": "S", "\\Answered": "R", "\\Flagged": "F", "\\Deleted": "T", "\\Draft": "D"}
LETTER_FLAGS = {letter: flag for flag, letter in FLAG_LETTERS.items()}
RECENT_FLAG = "\\Recent"
DELETED_FLAG = "\\Deleted"
SEEN_FLAG = "\\Seen"
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
# RFC 3501 9 atom-specials, which a keyword (an atom) cannot hold; nor can it start with a backslash.
_NOT_A_KEYWORD = re.compile(r'[\x00-\x20\x7f(){%*"\\\]]')
READ_ONLY_TEXT = "the folder is open read-only (EXAMINE)"
HEADER_CHUNK_OCTETS = 16 * 1024


def folder_name_problem(name: str) -> str | None:
    """Why `name` cannot name a folder, or None if it can (INBOX and its case variants can)."""
    if not name:
        return "is empty"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_FOLDER_NAME_OCTETS:
        return f"is longer than {MAX_FOLDER_NAME_OCTETS} octets"
    if _CONTROL_CHARACTERS.search(name):
        return "contains a control character"
    if "/" in name or "\\" in name:
        return "contains / or \\"
    if name.startswith(HIERARCHY_DELIMITER):
        return "starts with the hierarchy delimiter"
    if "" in name.split(HIERARCHY_DELIMITER):
        return "has an empty level (.. or a trailing .)"
    return None


def canonical_folder_name(name: str) -> str:
    """The name with INBOX (its first level, in any case) spelled INBOX; BadFolderNameError if unusable."""
    problem = folder_name_problem(name)
    if problem is not None:
        raise BadFolderNameError(f"the folder name {name[:60]!r} {problem}")
    first, sep, rest = name.partition(HIERARCHY_DELIMITER)
    return f"{INBOX}{sep}{rest}" if first.upper() == INBOX else name


def flags_of_letters(letters: str, keywords: Sequence[str] = ()) -> frozenset[str]:
    """IMAP flags of a Maildir file's info letters (keywords from the folder's keyword list)."""
    flags = set()
    for letter in letters:
        flag = LETTER_FLAGS.get(letter)
        if flag is not None:
            flags.add(flag)
        elif "a" <= letter <= "z" and ord(letter) - ord("a") < len(keywords):
            flags.add(keywords[ord(letter) - ord("a")])
    return frozenset(flags)


def _info_letters(file_name: str) -> str:
    return mailstore.flags_of(file_name)


class _Keywords:
    """A folder's `dovecot-keywords`: keyword n is the Maildir flag letter chr(ord('a') + n)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / KEYWORDS_NAME
        self._stamp: tuple[int, int] | None = None
        self._names: list[str] = []

    def names(self) -> list[str]:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._names = None, []
            return self._names
        stamp = (stat.st_ino, stat.st_mtime_ns)
        if stamp != self._stamp:
            names: list[str] = []
            with contextlib.suppress(FileNotFoundError):
                for line in self.path.read_text("utf-8", "replace").splitlines():
                    number, _, keyword = line.partition(" ")
                    if number.isdigit() and int(number) == len(names) and keyword and len(names) < MAX_KEYWORDS:
                        names.append(keyword)
            self._stamp, self._names = stamp, names
        return self._names

    def letters_for(self, keywords: Sequence[str]) -> dict[str, str]:
        """Letters of these keywords, numbering new ones (under the folder's lock); those past z are left out."""
        known = self.names()
        missing = [k for k in keywords if k not in known]
        if missing:
            with uidmap.flocked(self.path.parent / uidmap.UIDLIST_LOCK_NAME):
                known = list(self.names())
                added = False
                for keyword in missing:
                    if keyword not in known and len(known) < MAX_KEYWORDS:
                        known.append(keyword)
                        added = True
                if added:
                    text = "".join(f"{number} {name}\n" for number, name in enumerate(known))
                    mailstore.replace_file_durably(self.path, text.encode("utf-8"))
                    self._stamp = None
                    known = self.names()
        return {k: chr(ord("a") + known.index(k)) for k in keywords if k in known}


@dataclass
class _Snapshot:
    """One look at a folder: shared by every session of the process while the folder stays unchanged.

    Its dicts are never changed once published (a session that changes its own view copies them
    first), so 50,000 records are built once per process, not once per SELECT.
    """

    mtimes: tuple[int, int]  # of new/ and cur/, taken before the listing
    stamp: tuple[int, int] | None  # the folder's change stamp (`mailstore.change_stamp`), taken before those
    settled: bool  # False: a directory changed within the settle time of the look, look again
    looked_at_ns: int  # when the listing began
    uidvalidity: int
    next_uid: int
    records: dict[int, MessageRecord]  # ascending UID
    files: dict[int, tuple[str, str]]  # uid -> (subdir, file name)
    # What the look saw, so the next one can work on the differences alone.
    listing: uidmap.Listing = field(default_factory=dict)
    entries: dict[str, uidmap.Entry] = field(default_factory=dict)
    cur_listing: uidmap.Listing | None = None  # cur/ alone: reused while cur/ is unchanged and settled
    new_listing: uidmap.Listing | None = None  # new/ alone, when the listing is the two put together
    serial: int = 0
    # Made from the snapshot with this serial: what changed since (for the sessions that had it).
    base_serial: int = -1
    delta: FolderChanges | None = None
    message_list: tuple[MessageRecord, ...] | None = None

    def messages(self) -> tuple[MessageRecord, ...]:
        if self.message_list is None:
            self.message_list = tuple(self.records.values())
        return self.message_list


_serials = itertools.count(1)
# Bounds on what a process keeps for folders no session may have open any more.
MAX_SHARED_SNAPSHOTS = 256
MAX_SHARED_RECORDS = 250_000
_shared_records = 0
_snapshots: collections.OrderedDict[str, _Snapshot] = collections.OrderedDict()
_snapshots_lock = threading.Lock()


def _shared_snapshot(path: Path) -> _Snapshot | None:
    with _snapshots_lock:
        found = _snapshots.get(str(path))
        if found is not None:
            _snapshots.move_to_end(str(path))
        return found


def _share_snapshot(path: Path, snapshot: _Snapshot) -> None:
    global _shared_records
    with _snapshots_lock:
        replaced = _snapshots.pop(str(path), None)
        _shared_records -= len(replaced.records) if replaced is not None else 0
        _snapshots[str(path)] = snapshot
        _shared_records += len(snapshot.records)
        # The least recently used go first; sessions keep theirs for as long as they need it.
        while len(_snapshots) > 1 and (len(_snapshots) > MAX_SHARED_SNAPSHOTS or _shared_records > MAX_SHARED_RECORDS):
            _, evicted = _snapshots.popitem(last=False)
            _shared_records -= len(evicted.records)


class MaildirFolder:
    """A Maildir++ folder opened by SELECT or EXAMINE: the session's snapshot of its messages."""

    def __init__(self, account: MaildirAccount, name: str, path: Path, *, read_only: bool) -> None:
        self.account = account
        self.name = name
        self.path = path
        self.read_only = read_only
        self._map = uidmap.uid_map(path, uidvalidity_counter=account.uidvalidity_counter)
        self._keywords = _Keywords(path)
        self._records: dict[int, MessageRecord] = {}
        self._files: dict[int, tuple[str, str]] = {}  # uid -> (subdir, file name) as last seen
        self._snapshot: _Snapshot | None = None  # while _records and _files are that snapshot's
        self._flags_by_letters: dict[str, frozenset[str]] = {}  # by a file name's info part
        self._messages: Sequence[MessageRecord] | None = None
        self._looked_at_mtimes: tuple[int, int] | None = None
        self._seen_stamp: tuple[int, int] | None = None  # the change stamp when _looked_at_mtimes were taken
        # Until then, a refresh that finds the directories and the change stamp as our own last write
        # left them has nothing to look at (see `_after_own_write`).
        self._exact_until_ns = 0
        self._settled = False
        self._looked_at_ns = 0
        self._uidnext = 1
        self.uidvalidity = 0
        self._look()

    # --- reading --------------------------------------------------------------------------------

    @property
    def uidnext(self) -> int:
        return self._uidnext

    def messages(self) -> Sequence[MessageRecord]:
        if self._messages is None:
            snapshot = self._snapshot
            self._messages = snapshot.messages() if snapshot is not None else tuple(self._records.values())
        return self._messages

    def _flags(self, file_name: str) -> frozenset[str]:
        at = file_name.find(":")
        info = file_name[at:] if at >= 0 else ""  # by the whole info part: one slice, one lookup
        flags = self._flags_by_letters.get(info)
        if flags is None:
            flags = self._flags_by_letters[info] = flags_of_letters(_info_letters(file_name), self._keywords.names())
        return flags

    def _own(self) -> None:
        """Copy a shared snapshot's dicts before this session changes its view."""
        if self._snapshot is not None:
            self._records, self._files, self._snapshot = dict(self._records), dict(self._files), None
        self._messages = None

    def _wrote(self) -> None:
        """Our view now holds our own change: only a look made after it may replace the view."""
        self._looked_at_ns = time.time_ns()

    def _build(self, stamp: tuple[int, int] | None, mtimes: tuple[int, int], looked_at_ns: int) -> _Snapshot:
        """List the folder, number what is new, and make the records (from the last look's, if any)."""
        previous = _shared_snapshot(self.path)
        # New mail changes new/ alone; cur/, where most of a big folder is, is listed again only if
        # it changed (or changed so shortly before the last listing that it may have changed unseen).
        cur_listing = None
        if (
            previous is not None
            and previous.mtimes[1] == mtimes[1]
            and previous.looked_at_ns - mtimes[1] > USAGE_SETTLE_NS
        ):
            cur_listing = previous.cur_listing
        # new/ before cur/: a message moved from one to the other meanwhile is then seen in cur/.
        new_listing = uidmap.list_subdir(self.path, "new")
        if cur_listing is None:
            cur_listing = uidmap.list_subdir(self.path, "cur")
        composed = {**new_listing, **cur_listing}
        try:
            view, listing = self._map.sync(composed)
        except FileNotFoundError:
            if self.path.is_dir():
                raise
            if not self.uidvalidity:  # deleted between the check and the open
                raise NoSuchFolderError(f"no folder named {self.name[:60]!r}") from None
            view, listing = uidmap.MapView(self.uidvalidity, self._uidnext, {}), {}  # deleted under us
        # A directory changed within the same clock tick as our listing may change again unseen.
        settled = looked_at_ns - max(mtimes) > USAGE_SETTLE_NS
        snapshot = _Snapshot(
            mtimes, stamp, settled, looked_at_ns, view.uidvalidity, view.next_uid, {}, {}, listing, view.entries
        )
        snapshot.serial = next(_serials)
        # The map looked again and merged what it saw: then the next look lists cur/ anew.
        if listing is composed:
            snapshot.cur_listing, snapshot.new_listing = cur_listing, new_listing
        if previous is not None and previous.uidvalidity == view.uidvalidity and previous.listing:
            self._build_from(previous, snapshot)
        else:
            self._build_all(snapshot)
        return snapshot

    def _record(self, key: str, entry: uidmap.Entry, file_name: str, keywords: Sequence[str]) -> MessageRecord:
        flags = flags_of_letters(_info_letters(file_name), keywords)
        return MessageRecord(entry[0], key, flags, entry[1], entry[2] / 1e9)

    def _build_all(self, snapshot: _Snapshot) -> None:
        """Every record from the listing: what a fresh process does once per folder."""
        keywords = self._keywords.names()
        flags_by_info: dict[str, frozenset[str]] = {}
        records, files, listing = snapshot.records, snapshot.files, snapshot.listing
        # The one loop over every message: kept to dict lookups where it can.
        for key, entry in snapshot.entries.items():
            where = listing.get(key)
            if where is None:
                continue
            uid = entry[0]
            files[uid] = where
            name = where[1]
            info = name[len(key) :]
            flags = flags_by_info.get(info)
            if flags is None:
                flags = flags_by_info[info] = flags_of_letters(_info_letters(name), keywords)
            records[uid] = MessageRecord(uid, key, flags, entry[1], entry[2] / 1e9)

    def _build_from(self, base: _Snapshot, snapshot: _Snapshot) -> None:
        """The records of `base` with what changed since: set differences in C, Python only per change.

        A file that moved (new flags), a new file and a new or changed map entry are looked at; the
        rest is copied. The delta is kept for the sessions whose view is exactly `base`.
        """
        listing, entries = snapshot.listing, snapshot.entries
        base_new, now_new = base.new_listing, snapshot.new_listing
        if snapshot.cur_listing is base.cur_listing is not None and base_new is not None and now_new is not None:
            # cur/ was not listed again (unchanged): only new/ can differ, and it is the small one.
            changed = {key for key, _ in now_new.items() - base_new.items()}
            removed = base_new.keys() - listing.keys()
        else:
            changed = {key for key, _ in listing.items() - base.listing.items()}
            removed = base.listing.keys() - listing.keys()
        # The map only grows at its end (UIDs ascend) and loses entries: no need to compare it all.
        added_entries = 0
        for key, numbered in reversed(entries.items()):
            if numbered[0] < base.next_uid:
                break
            changed.add(key)
            added_entries += 1
        if len(base.entries) + added_entries != len(entries):
            removed |= base.entries.keys() - entries.keys()
        records, files = dict(base.records), dict(base.files)
        delta = FolderChanges()
        for key in removed | changed:
            old = base.entries.get(key)
            if old is not None and old[0] in records and records[old[0]].key == key:
                uid = old[0]
                new = entries.get(key)
                if key in removed or new is None or new[0] != uid:
                    del records[uid], files[uid]
                    delta.expunged.append(uid)
        keywords = self._keywords.names()
        fresh: list[MessageRecord] = []
        for key in changed:
            found, where = entries.get(key), listing.get(key)
            if found is None or where is None:
                continue  # not numbered yet (gone while measured): the next look numbers it
            record = self._record(key, found, where[1], keywords)
            previous = records.get(record.uid)
            files[record.uid] = where
            if previous is None:
                fresh.append(record)
            else:
                records[record.uid] = record
                if previous.flags != record.flags:
                    delta.flags_changed.append(record)
        fresh.sort(key=lambda record: record.uid)
        if fresh and records and fresh[0].uid < next(reversed(records)):
            # Never for new mail (new UIDs are larger); keep the order right whatever happened.
            records.update((record.uid, record) for record in fresh)
            records = dict(sorted(records.items()))
        else:
            records.update((record.uid, record) for record in fresh)
        expunged = set(delta.expunged)
        delta.added = [record for record in fresh if record.uid not in expunged]
        delta.expunged = sorted(uid for uid in expunged if uid not in records)
        delta.flags_changed.sort(key=lambda record: record.uid)
        snapshot.records, snapshot.files = records, files
        snapshot.base_serial, snapshot.delta = base.serial, delta

    def _look(self) -> FolderChanges:
        """Adopt the folder as it is now (another session's look if nothing changed since); return the differences."""
        stamp = mailstore.change_stamp(self.path)
        mtimes = _folder_mtimes_ns(self.path)  # before the listing: a change after it shows next time
        snapshot = _shared_snapshot(self.path)
        # Another session's look serves if the directories are as it saw them, and it is settled or
        # newer than our own last look: it may then miss only what a listing of ours made now could
        # miss too (a change within the same clock tick as its directory times), and it leaves us
        # unsettled, so our next refresh looks again. Many sessions on one folder then make one
        # listing per change, not one each.
        if (
            snapshot is None
            or snapshot.mtimes != mtimes
            or not (snapshot.settled or snapshot.looked_at_ns > self._looked_at_ns)
        ):
            snapshot = self._build(stamp, mtimes, time.time_ns())
            _share_snapshot(self.path, snapshot)
        if self.uidvalidity and snapshot.uidvalidity != self.uidvalidity:
            raise UidValidityChangedError(f"the folder {self.name} was renumbered; select it again")
        changes = FolderChanges()
        old_records, records = self._records, snapshot.records
        delta = snapshot.delta
        if delta is not None and self._snapshot is not None and self._snapshot.serial == snapshot.base_serial:
            # Our view was the look this one was made from: its differences are ours.
            changes = FolderChanges(list(delta.expunged), list(delta.added), list(delta.flags_changed))
        elif self.uidvalidity and old_records is not records:  # else the first look: nothing to compare
            for uid, record in records.items():
                old = old_records.get(uid)
                if old is record:
                    continue
                if old is None:
                    changes.added.append(record)
                elif old.flags != record.flags:
                    changes.flags_changed.append(record)
            changes.expunged = [uid for uid in old_records if uid not in records]
        self._records, self._files, self._snapshot, self._messages = records, snapshot.files, snapshot, None
        self._flags_by_letters = {}  # the keyword list may have grown
        self.uidvalidity, self._uidnext = snapshot.uidvalidity, snapshot.next_uid
        self._looked_at_mtimes, self._settled = snapshot.mtimes, snapshot.settled
        self._seen_stamp, self._exact_until_ns = snapshot.stamp, 0
        self._looked_at_ns = snapshot.looked_at_ns
        return changes

    def refresh(self) -> FolderChanges:
        if _folder_mtimes_ns(self.path) == self._looked_at_mtimes:
            if self._settled:
                return FolderChanges()  # nothing arrived, moved or went: two stats
            if time.time_ns() < self._exact_until_ns and mailstore.change_stamp(self.path) == self._seen_stamp:
                return FolderChanges()  # as our own write left it, and no writer of ours came since
        return self._look()

    def _change_state(self) -> tuple[tuple[int, int], tuple[int, int] | None]:
        stamp = mailstore.change_stamp(self.path)
        return _folder_mtimes_ns(self.path), stamp

    def _after_own_write(
        self, before: tuple[tuple[int, int], tuple[int, int] | None], *, exact: bool, stamped: bool
    ) -> None:
        """Our view now holds our own write (STORE, EXPUNGE); spare the next refreshes a listing if we can.

        Every writer of ours (`servers.mailstore`) appends to the folder's change stamp after its
        change. If the directories and the stamp were as our view saw them just before the write
        (`before`, and `exact`: we changed every file we meant to), and afterwards the stamp grew by
        our own octet alone, nobody else changed the folder in between: our view is the folder as it
        is now, and a refresh that finds these directory times and this stamp again has nothing to
        look at. That holds within the settle time of the directories' times; after it one look
        confirms the view, which also catches a change by a program that is not ours (it does not
        stamp) made within the same clock tick as ours.
        """
        self._messages = None
        self._wrote()
        if not exact or before != (self._looked_at_mtimes, self._seen_stamp):
            return
        mtimes, stamp = self._change_state()
        old = before[1]
        if not stamped:
            expected_ok = stamp == old
        elif old is None:
            expected_ok = stamp is not None and stamp[1] == 1
        else:
            expected_ok = stamp == (old[0], old[1] + 1)
        if expected_ok:
            self._looked_at_mtimes, self._seen_stamp, self._settled = mtimes, stamp, False
            self._exact_until_ns = max(mtimes) + USAGE_SETTLE_NS

    def _path_of(self, uid: int) -> Path:
        subdir, name = self._files[uid]
        return self.path / subdir / name

    def _relocate(self, uid: int, listing: uidmap.Listing | None = None) -> Path | None:
        """Where the message's file is now (another reader may have renamed it), or None if gone."""
        if listing is None:
            listing = uidmap.list_folder(self.path)
        where = listing.get(self._records[uid].key)
        if where is None:
            return None
        self._own()
        self._files[uid] = where
        return self.path / where[0] / where[1]

    def _open(self, uid: int) -> int:
        if uid not in self._files:
            raise KeyError(uid)
        try:
            return os.open(self._path_of(uid), os.O_RDONLY)
        except FileNotFoundError:
            path = self._relocate(uid)
            if path is None:
                raise KeyError(uid) from None
            try:
                return os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                raise KeyError(uid) from None

    def read(self, uid: int) -> bytes:
        fd = self._open(uid)
        try:
            return uidmap.read_all(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)

    def read_header(self, uid: int) -> bytes:
        # Plain descriptor reads: FETCH ENVELOPE of a whole folder reads every message's header.
        fd = self._open(uid)
        try:
            data = bytearray()  # grows in place: a message with no blank line is read in linear time
            while chunk := os.read(fd, HEADER_CHUNK_OCTETS):
                searched_from = max(0, len(data) - 3)
                data += chunk
                ends = [
                    i + n
                    for i, n in ((data.find(b"\r\n\r\n", searched_from), 4), (data.find(b"\n\n", searched_from), 2))
                    if i >= 0
                ]
                if ends:
                    return bytes(data[: min(ends)])
            return bytes(data)
        finally:
            os.close(fd)

    # --- writing --------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreError(READ_ONLY_TEXT)

    @staticmethod
    def _letters_for(file_name: str, ours: str, managed: frozenset[str]) -> str:
        """The new info letters: `ours`, and every letter we do not manage kept as it was."""
        kept = [letter for letter in _info_letters(file_name) if letter not in managed]
        return "".join(sorted(set(kept).union(ours)))

    def store_flags(self, uids: Sequence[int], flags: frozenset[str], mode: str) -> list[MessageRecord]:
        self._check_writable()
        if mode not in ("set", "add", "remove"):
            raise ValueError(f"unknown STORE mode {mode!r}")
        flags = frozenset(f for f in flags if f != RECENT_FLAG and (f in FLAG_LETTERS or _is_keyword(f)))
        keywords = [f for f in flags if f not in FLAG_LETTERS]
        keyword_letters = self._keywords.letters_for(keywords) if keywords and mode != "remove" else {}
        names = self._keywords.names()  # one look at the keyword list for the whole STORE
        if mode == "remove":
            keyword_letters = {k: chr(ord("a") + names.index(k)) for k in keywords if k in names}
        flags = frozenset(f for f in flags if f in FLAG_LETTERS or f in keyword_letters)
        managed = frozenset(
            {*FLAG_LETTERS.values(), *keyword_letters.values(), *(chr(ord("a") + n) for n in range(len(names)))}
        )
        self._flags_by_letters = {}
        self._own()
        before = self._change_state()
        stamped = False
        exact = True
        records, files = self._records, self._files
        letters_by_flags: dict[frozenset[str], str] = {}
        changed: list[MessageRecord] = []
        pending = [uid for uid in dict.fromkeys(uids) if uid in records]
        for attempt in range(2):
            changes: list[tuple[str, str, str]] = []
            targets: list[int] = []
            for uid in pending:
                record = records[uid]
                subdir, name = files[uid]
                current = self._flags(name)
                if mode == "set":
                    # \Recent and keywords past z are not stored; other keywords are replaced too.
                    wanted = flags
                elif mode == "add":
                    wanted = current | flags
                else:
                    wanted = current - flags
                if wanted == current and record.flags == current:
                    continue
                ours = letters_by_flags.get(wanted)
                if ours is None:
                    ours = letters_by_flags[wanted] = "".join(
                        [FLAG_LETTERS[f] for f in wanted if f in FLAG_LETTERS]
                        + [keyword_letters[f] for f in wanted if f in keyword_letters]
                    )
                changes.append((subdir, name, self._letters_for(name, ours, managed)))
                targets.append(uid)
            results = mailstore.set_flags_of_files(self.path, changes)
            pending = []
            for uid, (subdir, name, _), new_name in zip(targets, changes, results, strict=True):
                if new_name is None:
                    pending.append(uid)  # renamed by another reader meanwhile: again from where it is now
                    continue
                stamped = stamped or subdir != "cur" or new_name != name
                files[uid] = ("cur", new_name)
                record = records[uid]
                updated = MessageRecord(
                    record.uid, record.key, self._flags(new_name), record.size_octets, record.internal_date
                )
                records[uid] = updated
                changed.append(updated)
            if not pending or attempt:
                break
            exact = False
            now = uidmap.list_folder(self.path)  # one listing for all of them
            pending = [uid for uid in pending if self._relocate(uid, now) is not None]
        self._after_own_write(before, exact=exact and not pending, stamped=stamped)
        return sorted(changed, key=lambda record: record.uid)

    def _forget(self, uids: Sequence[int]) -> None:
        self._own()
        for uid in uids:
            self._records.pop(uid, None)
            self._files.pop(uid, None)
        self._messages = None
        self._wrote()

    def expunge(self, uids: Sequence[int] | None = None) -> list[int]:
        self._check_writable()
        wanted = None if uids is None else set(uids)
        doomed = [
            uid
            for uid, record in self._records.items()
            if DELETED_FLAG in record.flags and (wanted is None or uid in wanted)
        ]
        before = self._change_state()
        # Exact paths: a file another reader renamed meanwhile had its flags changed, and stays.
        removed = mailstore.remove_message_files([self._path_of(uid) for uid in doomed])
        expunged = [uid for uid, gone in zip(doomed, removed, strict=True) if gone]
        if expunged:
            self._map.forget([self._records[uid].key for uid in expunged])
        self._forget(expunged)
        self._after_own_write(before, exact=len(expunged) == len(doomed), stamped=bool(expunged))
        return expunged

    def _sources(self, uids: Sequence[int]) -> list[int]:
        return sorted(uid for uid in set(uids) if uid in self._records)

    def copy_to(self, uids: Sequence[int], target: str) -> tuple[int, list[tuple[int, int]]]:
        target_path = self.account.selectable_path(target)
        sources = self._sources(uids)
        extra_octets = sum(self._records[uid].size_octets for uid in sources)
        self.account.check_quota(extra_octets, len(sources))
        target_map = uidmap.uid_map(target_path, uidvalidity_counter=self.account.uidvalidity_counter)
        with target_map.locked():
            made = mailstore.copy_into_folder([self._path_of(uid) for uid in sources], target_path)
            copied = [(uid, path) for uid, path in zip(sources, made, strict=True) if path is not None]
            try:
                uidvalidity, new_uids = target_map.add(
                    [(unique_part(path.name), self._entry_for(uid)) for uid, path in copied]
                )
            except BaseException:  # the client hears NO: take the copies back
                mailstore.remove_message_files([path for _, path in copied])
                raise
        return uidvalidity, [(uid, new_uid) for (uid, _), new_uid in zip(copied, new_uids, strict=True)]

    def _entry_for(self, uid: int) -> Entry:
        record = self._records[uid]
        return Entry(0, record.size_octets, int(record.internal_date * 1e9))

    def move_to(self, uids: Sequence[int], target: str) -> tuple[int, list[tuple[int, int]]]:
        self._check_writable()
        target_path = self.account.selectable_path(target)
        sources = self._sources(uids)
        target_map = uidmap.uid_map(target_path, uidvalidity_counter=self.account.uidvalidity_counter)
        with target_map.locked():
            # The unique name moves along, unless the target's map still knows it (the message was
            # there before): then a new name, so it gets a new UID there and not its old one back.
            names = [self._records[uid].key for uid in sources]
            names = [mailstore.new_unique_name() if target_map.known(key) else key for key in names]
            moved = mailstore.move_into_folder(
                [(self._path_of(uid), name) for uid, name in zip(sources, names, strict=True)], target_path
            )
            done = [(uid, path) for uid, path in zip(sources, moved, strict=True) if path is not None]
            uidvalidity, new_uids = target_map.add(
                [(unique_part(path.name), self._entry_for(uid)) for uid, path in done]
            )
        if done:  # the sources are gone from this folder (in this folder too: they have new names)
            self._map.forget([self._records[uid].key for uid, _ in done])
        self._forget([uid for uid, _ in done])
        return uidvalidity, [(uid, new_uid) for (uid, _), new_uid in zip(done, new_uids, strict=True)]

    def watch_paths(self) -> Sequence[str]:
        # The change stamp too: two changes within one clock tick leave a directory's times as they were.
        return [str(self.path / "new"), str(self.path / "cur"), mailstore.change_stamp_path(self.path)]

    def fetch_cache(self, kind: str) -> FetchCache:
        # By path and UIDVALIDITY: a folder renumbered, renamed or made again under the name starts afresh.
        return fetch_cache.process_caches.cache(f"{self.path}\0{self.uidvalidity}\0{kind}")

    def close(self) -> None:
        self._records, self._files, self._snapshot, self._messages = {}, {}, None, None


def _is_keyword(flag: str) -> bool:
    return bool(flag) and not flag.startswith("\\") and not _NOT_A_KEYWORD.search(flag)


class MaildirAccount:
    """One signed-in mailbox's folders (store_api.Account), over its Maildir++ directory."""

    def __init__(
        self,
        maildir: Path,
        address: str,
        *,
        quota_octets: int | None,
        quota_messages: int | None = None,
        on_release: Callable[[], None] | None = None,
    ) -> None:
        self.maildir = ensure_maildir(Path(maildir))
        self.address = address
        self.quota_octets = quota_octets
        self.quota_messages = quota_messages
        self.uidvalidity_counter = self.maildir / uidmap.UIDVALIDITY_COUNTER_NAME
        self._on_release = on_release
        self._ensure_special_folders()

    # --- names and paths ------------------------------------------------------------------------

    def _path(self, name: str) -> tuple[str, Path]:
        """(canonical name, its Maildir path), refusing any name that could leave the mailbox."""
        name = canonical_folder_name(name)
        if name == INBOX:
            return name, self.maildir
        try:
            return name, folder_maildir(self.maildir, name)
        except UnsafePathError as error:
            raise BadFolderNameError(f"the folder name {name[:60]!r} cannot be used") from error

    @staticmethod
    def _is_folder(path: Path) -> bool:
        """A Maildir of its own: no symbolic link (it, or its new/ and cur/, could lead out of the mailbox)."""
        subdirs = (path / "new", path / "cur")
        return not any(p.is_symlink() for p in (path, *subdirs)) and all(p.is_dir() for p in subdirs)

    def selectable_path(self, name: str) -> Path:
        """The Maildir of an existing folder; NoSuchFolderError if there is none of that name."""
        name, path = self._path(name)
        if not self._is_folder(path):
            raise NoSuchFolderError(f"no folder named {name[:60]!r}")
        return path

    def _folder_names(self) -> list[str]:
        """Names of the folders on disk (not INBOX), those with unusable names left out."""
        names = []
        with os.scandir(self.maildir) as entries:
            for entry in entries:
                if not entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                    continue
                name = entry.name[1:]
                usable = folder_name_problem(name) is None and canonical_folder_name(name) == name
                if usable and self._is_folder(Path(entry.path)):
                    names.append(name)
        return names

    def _children_of(self, name: str, names: Sequence[str]) -> list[str]:
        prefix = name + HIERARCHY_DELIMITER
        return [other for other in names if other.startswith(prefix)]

    # --- subscriptions --------------------------------------------------------------------------

    def _subscriptions(self) -> list[str]:
        try:
            text = (self.maildir / SUBSCRIPTIONS_NAME).read_text("utf-8", "surrogateescape")
        except FileNotFoundError:
            return []
        return [line for line in text.split("\n") if line]

    def _write_subscriptions(self, names: Sequence[str]) -> None:
        text = "".join(f"{name}\n" for name in names)
        mailstore.replace_file_durably(self.maildir / SUBSCRIPTIONS_NAME, text.encode("utf-8", "surrogateescape"))

    def subscribe(self, name: str, subscribed: bool) -> None:
        name, _ = self._path(name)
        with uidmap.flocked(self.maildir / SUBSCRIPTIONS_LOCK_NAME):
            names = self._subscriptions()
            if subscribed and name not in names:
                self._write_subscriptions([*names, name])
            elif not subscribed and name in names:
                self._write_subscriptions([n for n in names if n != name])

    def _ensure_special_folders(self) -> None:
        created = []
        for name in SPECIAL_FOLDERS:
            path = self.maildir / f".{name}"
            if not self._is_folder(path):
                ensure_maildir(path)
                created.append(name)
        if created or not (self.maildir / SUBSCRIPTIONS_NAME).exists():
            with uidmap.flocked(self.maildir / SUBSCRIPTIONS_LOCK_NAME):
                names = self._subscriptions()
                if not (self.maildir / SUBSCRIPTIONS_NAME).exists():
                    # The first sign-in: a folder made before it (Junk, by delivery) is subscribed too.
                    created = list(SPECIAL_FOLDERS)
                wanted = [n for n in [INBOX, *created] if n not in names]
                if wanted or not (self.maildir / SUBSCRIPTIONS_NAME).exists():
                    self._write_subscriptions([*names, *wanted])

    # --- the Account protocol -------------------------------------------------------------------

    def list_folders(self) -> list[FolderInfo]:
        on_disk = self._folder_names()
        every = set(on_disk)
        for name in on_disk:  # parents that exist only as the path to their children
            levels = name.split(HIERARCHY_DELIMITER)
            every.update(HIERARCHY_DELIMITER.join(levels[:n]) for n in range(1, len(levels)))
        subscribed = set(self._subscriptions())
        existing = set(on_disk)
        folders = [
            FolderInfo(
                name=INBOX,
                subscribed=INBOX in subscribed,
                has_children=bool(self._children_of(INBOX, on_disk)),
            )
        ]
        for name in sorted(every - {INBOX}):
            folders.append(
                FolderInfo(
                    name=name,
                    special_use=SPECIAL_FOLDERS.get(name),
                    subscribed=name in subscribed,
                    selectable=name in existing,
                    has_children=bool(self._children_of(name, on_disk)),
                )
            )
        return folders

    def create_folder(self, name: str) -> None:
        # RFC 3501 6.3.3: a trailing delimiter declares the intent to create names below; the name
        # itself is created.
        if name.endswith(HIERARCHY_DELIMITER) and len(name) > 1:
            name = name[:-1]
        name, path = self._path(name)
        if name == INBOX or self._is_folder(path):
            raise FolderExistsError(f"the folder {name[:60]!r} exists")
        if os.path.lexists(path):
            raise BadFolderNameError(f"the name {name[:60]!r} is taken by something that is not a folder")
        ensure_maildir(path)

    def delete_folder(self, name: str) -> None:
        name, path = self._path(name)
        if name == INBOX or name in SPECIAL_FOLDERS:
            raise StoreError(f"{name} cannot be deleted")
        if not self._is_folder(path):
            if self._children_of(name, self._folder_names()):
                # RFC 3501 6.3.4: a name with children and no messages of its own stays until they go.
                raise StoreError(f"{name[:60]!r} has subfolders; delete them first")
            raise NoSuchFolderError(f"no folder named {name[:60]!r}")
        mailstore.remove_folder(path)

    def rename_folder(self, old: str, new: str) -> None:
        old, old_path = self._path(old)
        new, new_path = self._path(new)
        if new == INBOX or self._is_folder(new_path):
            raise FolderExistsError(f"the folder {new[:60]!r} exists")
        if os.path.lexists(new_path):
            raise BadFolderNameError(f"the name {new[:60]!r} is taken by something that is not a folder")
        if old == INBOX:
            self._move_inbox_to(new, new_path)
            return
        if old in SPECIAL_FOLDERS:
            raise StoreError(f"{old} cannot be renamed")
        if new == old or new.startswith(old + HIERARCHY_DELIMITER):
            raise BadFolderNameError("a folder cannot be moved into itself")
        names = self._folder_names()
        moving = ([old] if self._is_folder(old_path) else []) + self._children_of(old, names)
        if not moving:
            raise NoSuchFolderError(f"no folder named {old[:60]!r}")
        targets = []
        for name in moving:
            target_name, target_path = self._path(new + name[len(old) :])
            if os.path.lexists(target_path):
                raise FolderExistsError(f"the folder {target_name[:60]!r} exists")
            targets.append((self.maildir / f".{name}", target_path))
        for source, target in targets:
            mailstore.rename_folder(source, target)

    def _move_inbox_to(self, name: str, path: Path) -> None:
        """RFC 3501 6.3.5: RENAME INBOX moves its messages into a new folder; INBOX stays, empty."""
        ensure_maildir(path)
        inbox = uidmap.list_folder(self.maildir)
        target_map = uidmap.uid_map(path, uidvalidity_counter=self.uidvalidity_counter)
        with target_map.locked():
            moves = [(self.maildir / subdir / file_name, key) for key, (subdir, file_name) in inbox.items()]
            moved = mailstore.move_into_folder(moves, path)
            listing = {unique_part(p.name): (p.parent.name, p.name) for p in moved if p is not None}
            target_map.add(uidmap.measure(path, listing, list(listing)))

    def open_folder(self, name: str, *, read_only: bool) -> MaildirFolder:
        name, path = self._path(name)
        if not self._is_folder(path):
            raise NoSuchFolderError(f"no folder named {name[:60]!r}")
        return MaildirFolder(self, name, path, read_only=read_only)

    def status(self, name: str) -> FolderStatus:
        folder = self.open_folder(name, read_only=True)
        try:
            messages = folder.messages()
            return FolderStatus(
                messages=len(messages),
                unseen=sum(1 for record in messages if SEEN_FLAG not in record.flags),
                uidnext=folder.uidnext,
                uidvalidity=folder.uidvalidity,
                size_octets=sum(record.size_octets for record in messages),
            )
        finally:
            folder.close()

    def append(self, name: str, message: bytes, flags: frozenset[str], internal_date: float | None) -> tuple[int, int]:
        path = self.selectable_path(name)
        self.check_quota(len(message), 1)
        flags = frozenset(f for f in flags if f != RECENT_FLAG and (f in FLAG_LETTERS or _is_keyword(f)))
        keyword_letters = _Keywords(path).letters_for([f for f in flags if f not in FLAG_LETTERS])
        letters = [FLAG_LETTERS[f] for f in flags if f in FLAG_LETTERS] + [
            keyword_letters[f] for f in flags if f in keyword_letters
        ]
        target_map = uidmap.uid_map(path, uidvalidity_counter=self.uidvalidity_counter)
        mtime_ns = None if internal_date is None else int(internal_date * 1e9)
        with target_map.locked():
            stored = mailstore.store_in_folder(
                path, [message], flag_letters="".join(letters) if letters else None, mtime_ns=mtime_ns
            )
            try:
                stat = os.stat(stored)
                entry = Entry(0, _cached_crlf_size(stored, stat), stat.st_mtime_ns)
                uidvalidity, (uid,) = target_map.add([(unique_part(stored.name), entry)])
            except BaseException:  # the client hears NO: the message must not appear later
                mailstore.remove_message_files([stored])
                raise
        return uidvalidity, uid

    def _usage(self) -> tuple[int, int]:
        """Octets and messages stored in every folder: the quota counts the whole mailbox."""
        return mailbox_usage(self.maildir)

    def check_quota(self, extra_octets: int, extra_messages: int) -> None:
        """OverQuotaError if storing this much more would pass the mailbox's quota."""
        if self.quota_octets is None and self.quota_messages is None:
            return
        if exceeds_quota(self._usage(), self.quota_octets, self.quota_messages, extra_octets, extra_messages):
            raise OverQuotaError("the mailbox is over its quota")

    def quota(self) -> Quota:
        used_octets, used_messages = self._usage()
        return Quota(
            used_octets=used_octets,
            limit_octets=self.quota_octets,
            used_messages=used_messages,
            limit_messages=self.quota_messages,
        )

    def release(self) -> None:
        callback, self._on_release = self._on_release, None
        if callback is not None:
            callback()
