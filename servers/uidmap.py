"""One persistent UID map per Maildir folder: UIDVALIDITY, the next UID, and UID -> unique name.

IMAP numbers a folder's messages with UIDs that only grow and are never reused while the
folder's UIDVALIDITY holds (RFC 3501 2.3.1.1). A Maildir has no numbers, only unique names (the
part of a file name before ':', which is also POP3's UIDL and the webmail index's key), so each
folder keeps a map in a dot-file beside its tmp/, new/ and cur/ (Maildir readers skip dot-files:
`servers.maildir.message_entries`).

The file `.mailconsole-uidlist`, an append-only log compacted now and then:

    MAILCONSOLE-UIDLIST 1 <uidvalidity> <next uid>      header: the first line, rewritten only by a compaction
    <uid> <crlf size> <mtime ns> <unique name>           a message got its UID (UIDs ascend through the file)
    -<uid> 0 0 -                                         that message's file is gone

Unique names with white space or unprintable characters get no UID (Maildir writers never make them),
so every line is four fields and a fresh process parses 50,000 lines with a few bulk operations.
The RFC822.SIZE (every line ending counted as CRLF) and the delivery time are kept with the UID, so
a process that opens a folder of 50,000 messages reads one file and lists two directories instead
of reading 50,000 messages. The next UID is the header's or one past the last UID in the file,
whichever is larger, so UIDs of dropped entries are never handed out again.

Who writes it: any reader that sees files the map does not know yet (an IMAP session, the store
when it appends, copies or moves) assigns them UIDs in (mtime, name) order, under an exclusive
`flock` on `.mailconsole-uidlist.lock` (between processes) and a mutex (between threads of one
process, which share one `UidMap` per folder). Under the lock it first reads what others appended,
so one message never gets two UIDs and one UID never goes to two messages. Appends are fsynced
before anyone is told a UID; a compaction writes a new file and renames it over the old one
(`servers.mailstore`, the single writer, does both). A file that cannot be read as a map (a
corrupt or missing map) is rebuilt with a new, larger UIDVALIDITY: clients then forget every UID
they knew, which is the price of never reusing one. The mailbox's `.mailconsole-uidvalidity`
holds the last UIDVALIDITY given to any of its folders, so a new one is always larger, even for a
folder deleted and created again within the same second.

An entry is dropped when its file is gone: missing from a listing, and from a second one made
after the map was read (a file renamed while a directory is read may be missed once).

Cost of a look: `list_folder` (two `os.listdir`), one stat of the map (and a read of what others
appended), and nothing per message unless a message is new. Other readers number messages the
same way with one call, `uid_map(folder).sync()`.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from servers import mailstore
from servers.maildir import _cached_crlf_size

UIDLIST_NAME = ".mailconsole-uidlist"
UIDLIST_LOCK_NAME = ".mailconsole-uidlist.lock"
# In a mailbox's own Maildir: the last UIDVALIDITY handed out to any of its folders, so a folder
# deleted and created again within one second still gets a larger one (RFC 3501 2.3.1.1).
UIDVALIDITY_COUNTER_NAME = ".mailconsole-uidvalidity"
HEADER_MAGIC = "MAILCONSOLE-UIDLIST"
FORMAT_VERSION = "1"
MAX_UID = 2**32 - 1  # nz-number (RFC 3501 9): past it the folder starts again with a new UIDVALIDITY
# Compact when the log holds more dead lines (dropped entries and their drop lines) than this and
# than live entries: a compaction costs one write of the whole map, amortised over many changes.
COMPACT_MIN_DEAD_LINES = 1000
# Messages up to this size are measured with one read; bigger ones in chunks.
WHOLE_READ_MAX_OCTETS = 1024 * 1024
# The message files of a folder as one listing saw them: unique name -> (subdir, file name).
Listing = dict[str, tuple[str, str]]


class Entry(NamedTuple):
    """One message of the map (a named tuple: a fresh process makes 50,000 of them at once)."""

    uid: int
    size_octets: int
    mtime_ns: int


@dataclass(frozen=True)
class MapView:
    """A consistent copy of a folder's map (entries in ascending UID order)."""

    uidvalidity: int
    next_uid: int
    entries: dict[str, Entry]


class CorruptMapError(ValueError):
    """The map file cannot be read as a map."""


@dataclass
class _State:
    uidvalidity: int
    next_uid: int
    entries: dict[str, Entry]  # insertion order is ascending UID
    key_by_uid: dict[int, str] | None  # made when first needed (a drop): most looks never need it
    file_id: tuple[int, int]  # (st_dev, st_ino) of the file this state was read from
    offset: int  # octets of that file applied so far (always at a line end)
    dead_lines: int  # entries dropped, and their drop lines, still in the file
    last_uid: int = 0  # the largest UID in the file's entry lines (they ascend)
    keys_shared: bool = False  # the entries' keys are the very strings of a listing (one copy in memory)


def _key_by_uid(state: _State) -> dict[int, str]:
    if state.key_by_uid is None:
        state.key_by_uid = {entry.uid: key for key, entry in state.entries.items()}
    return state.key_by_uid


def _parse_header(line: str) -> tuple[int, int]:
    parts = line.split(" ")
    if len(parts) != 4 or parts[0] != HEADER_MAGIC or parts[1] != FORMAT_VERSION:
        raise CorruptMapError("not a uid list header")
    uidvalidity, next_uid = int(parts[2]), int(parts[3])
    if not 0 < uidvalidity <= MAX_UID or next_uid < 1:
        raise CorruptMapError("uidvalidity or next uid out of range")
    return uidvalidity, next_uid


def _apply_lines(state: _State, text: str) -> None:
    """Apply complete lines of the log (text ends with a newline, or is empty)."""
    fields = text.split()
    if len(fields) % 4:
        raise CorruptMapError("a line without its four fields")
    try:
        uids = list(map(int, fields[0::4]))
        sizes = list(map(int, fields[1::4]))
        mtimes = list(map(int, fields[2::4]))
    except ValueError as error:
        raise CorruptMapError("a field that is not a number") from error
    keys = fields[3::4]
    entries = state.entries
    if uids and not entries and min(uids) > state.last_uid and len(set(keys)) == len(keys):
        # The common case, a whole file without drops: bulk operations, no Python loop per line.
        if not all(map(int.__lt__, uids, uids[1:])) or uids[-1] > MAX_UID:
            raise CorruptMapError("UIDs out of order")
        entries.update(zip(keys, map(Entry, uids, sizes, mtimes), strict=True))
        state.key_by_uid = None
        state.last_uid = uids[-1]
        state.next_uid = max(state.next_uid, state.last_uid + 1)
        return
    last_uid = state.last_uid
    key_by_uid = state.key_by_uid
    for uid, size, mtime_ns, key in zip(uids, sizes, mtimes, keys, strict=True):
        if uid < 0:  # a drop line
            if key_by_uid is None:
                key_by_uid = _key_by_uid(state)
            dropped = key_by_uid.pop(-uid, None)
            if dropped is None or key != "-":
                raise CorruptMapError(f"a drop of the unknown uid {-uid}")
            del entries[dropped]
            state.dead_lines += 2
            continue
        if uid <= last_uid or uid > MAX_UID or key in entries:
            raise CorruptMapError(f"uid {uid} out of order or name repeated")
        entries[key] = Entry(uid, size, mtime_ns)
        if key_by_uid is not None:
            key_by_uid[uid] = key
        last_uid = uid
    state.last_uid = last_uid
    state.next_uid = max(state.next_uid, last_uid + 1)


def _share_keys(state: _State, listing: Listing) -> None:
    """Key the entries by the listing's own strings: a map read from its file holds a second copy of
    every unique name otherwise (4.6 MiB for a folder of 50,000). Once per state read from the file."""
    canonical = dict(zip(listing, listing, strict=True))
    state.entries = {canonical.get(key, key): entry for key, entry in state.entries.items()}
    state.key_by_uid = None
    state.keys_shared = True


def _entry_line(key: str, entry: Entry) -> str:
    return f"{entry.uid} {entry.size_octets} {entry.mtime_ns} {key}\n"


def _usable(name: str) -> bool:
    """A message file name the map can hold as a line's last field: no dot-file, space or control character."""
    return not name.startswith(".") and " " not in name and name.isprintable()


def _message_names(directory: Path) -> list[str]:
    try:
        names = os.listdir(directory)  # builds the list in C: much faster than scandir for 50,000
    except FileNotFoundError:
        return []
    joined = "/" + "/".join(names)  # one look at every name at once; "/" is in no file name
    if "/." in joined or not _usable(joined[1:]):  # rare: other tools' dot-files, odd names
        names = [name for name in names if _usable(name)]
    return names


def list_subdir(folder: Path, subdir: str) -> Listing:
    """The message files of the folder's new/ or cur/ by unique name."""
    # A name without info is its own key: no second string for each message of new/.
    return {
        (name.partition(":")[0] if ":" in name else name): (subdir, name) for name in _message_names(folder / subdir)
    }


def list_folder(folder: Path) -> Listing:
    """The message files of a folder by unique name; a file caught moving from new/ to cur/ is in cur/."""
    # new/ first: a message moved between the two listings is still seen, in cur/.
    listing = list_subdir(folder, "new")
    listing.update(list_subdir(folder, "cur"))
    return listing


def _mtime_and_crlf_size(path: Path) -> tuple[int, int]:
    """The delivery time and RFC822.SIZE of a message file: one open, one read for a usual message.

    The same count as `servers.maildir.crlf_size_octets`, with less per file: the first look at a
    big folder measures every message.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        stat = os.fstat(fd)
        if stat.st_size > WHOLE_READ_MAX_OCTETS:
            return stat.st_mtime_ns, _cached_crlf_size(path, stat)
        data = read_all(fd, stat.st_size)
    finally:
        os.close(fd)
    size_octets = len(data) + data.count(b"\n") - data.count(b"\r\n")
    if data and not data.endswith(b"\n"):
        size_octets += 2  # an unterminated last line gets its CRLF
    return stat.st_mtime_ns, size_octets


def measure(folder: Path, listing: Listing, keys: list[str]) -> list[tuple[str, Entry]]:
    """Stat (and read, for the CRLF size) the files of `keys`; in (mtime, name) order, vanished ones left out."""
    measured: list[tuple[int, str, int]] = []
    for key in keys:
        subdir, name = listing[key]
        path = folder / subdir / name
        try:
            mtime_ns, size_octets = _mtime_and_crlf_size(path)
            measured.append((mtime_ns, key, size_octets))
        except FileNotFoundError:
            continue  # moved (its flags changed) or deleted since the listing: the next look sees it
    measured.sort()
    return [(key, Entry(0, size, mtime_ns)) for mtime_ns, key, size in measured]


@contextlib.contextmanager
def flocked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `lock_path` (created if missing), between processes and threads alike."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor of the open file releases the lock


class UidMap:
    """The UID map of one Maildir folder, shared by the threads of a process (see `uid_map`)."""

    def __init__(self, folder: Path, *, uidvalidity_counter: Path | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / UIDLIST_NAME
        self.lock_path = self.folder / UIDLIST_LOCK_NAME
        self.uidvalidity_counter = uidvalidity_counter
        self._mutex = threading.Lock()
        self._state: _State | None = None
        self._last_uidvalidity = 0
        self._locked_state: _State | None = None  # while a caller holds `locked()`

    # --- reading --------------------------------------------------------------------------------

    def _catch_up(self, *, locked: bool) -> _State | None:
        """Read what was appended (or the whole file if it was replaced); None if missing or corrupt.

        Without the lock a last line still being written is left for later; with it, such a line is
        the remains of a writer that crashed before telling anyone its UIDs, and is cut off.
        """
        state = self._state
        if state is not None:
            try:
                stat = os.stat(self.path)
            except FileNotFoundError:
                self._forget()
                return None
            if state.file_id == (stat.st_dev, stat.st_ino) and stat.st_size == state.offset:
                return state  # the common case: one stat
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            self._forget()
            return None
        try:
            stat = os.fstat(fd)
            file_id = (stat.st_dev, stat.st_ino)
            if state is None or state.file_id != file_id or stat.st_size < state.offset:
                state = None
                start = 0
            else:
                start = state.offset
            os.lseek(fd, start, os.SEEK_SET)
            data = read_all(fd, stat.st_size - start)
        finally:
            os.close(fd)
        complete = data.rfind(b"\n") + 1
        if complete != len(data) and locked:
            mailstore.truncate_synced(self.path, start + complete)
        try:
            text = data[:complete].decode("utf-8", "surrogateescape")
            if state is None:
                header, _, text = text.partition("\n")
                uidvalidity, next_uid = _parse_header(header)
                state = _State(uidvalidity, next_uid, {}, None, file_id, 0, 0)
            _apply_lines(state, text)
        except CorruptMapError:
            self._forget()
            return None
        state.offset = start + complete
        self._state = state
        return state

    def _forget(self) -> None:
        if self._state is not None:
            self._last_uidvalidity = max(self._last_uidvalidity, self._state.uidvalidity)
        self._state = None

    def view(self) -> MapView | None:
        """The map as it is on disk now, without assigning anything; None if there is none yet."""
        with self._mutex:
            state = self._catch_up(locked=False)
            return None if state is None else MapView(state.uidvalidity, state.next_uid, dict(state.entries))

    # --- writing --------------------------------------------------------------------------------

    def sync(self, listing: Listing | None = None) -> tuple[MapView, Listing]:
        """Give every message file of the folder a UID and drop the entries of files gone; return both.

        A name missing from a listing may have been renamed (a flag change) while the directory was
        read, so an entry is dropped only if a second listing, made after the map was read, misses it
        too; entries others add meanwhile are never dropped by a listing older than they are.
        """
        if listing is None:
            listing = list_folder(self.folder)
        with self._mutex:
            state = self._catch_up(locked=False)
            if state is not None and not state.keys_shared:
                _share_keys(state, listing)
            known = state.entries if state is not None else {}
            unknown = list(listing.keys() - known.keys())  # a set difference in C, not a loop of 50,000
            maybe_gone = len(known) + len(unknown) != len(listing)
            if state is not None and not unknown and not maybe_gone:
                return MapView(state.uidvalidity, state.next_uid, dict(known)), listing
            known_keys = set(known) if maybe_gone else set()
            read_up_to = None if state is None else (state.file_id, state.offset)
        gone: set[str] = set()
        if maybe_gone:
            listing = {**listing, **list_folder(self.folder)}
            gone = known_keys.difference(listing)
            unknown = list(listing.keys() - known_keys)
        measured = measure(self.folder, listing, unknown)  # reads files: outside the lock
        with self._mutex, flocked(self.lock_path):
            state = self._catch_up(locked=True)
            if state is None:
                state = self._start_locked(listing, measured)
            else:
                entries = state.entries
                measured_keys = {key for key, _ in measured}
                fresh = [(key, entry) for key, entry in measured if key not in entries]
                # Unless others wrote meanwhile, every name the map lacks was measured already.
                missing = []
                if (state.file_id, state.offset) != read_up_to:
                    missing = list(listing.keys() - entries.keys() - measured_keys)
                if missing:  # another process dropped them meanwhile, or the map was rebuilt
                    fresh = sorted(
                        fresh + measure(self.folder, listing, missing),
                        key=lambda item: (item[1].mtime_ns, item[0]),
                    )
                dropped = [entries[key].uid for key in gone if key in entries]
                state = self._append_locked(state, fresh, dropped)
            return MapView(state.uidvalidity, state.next_uid, dict(state.entries)), listing

    def add(self, measured: list[tuple[str, Entry]]) -> tuple[int, list[int]]:
        """Assign UIDs to these new files now, in this order; return (UIDVALIDITY, their UIDs).

        For the store's own writes (APPEND, COPY, MOVE): the caller holds `locked()` and has put the
        files in place, so no other reader can number them first.
        """
        state = self._locked_state
        if state is None:
            raise RuntimeError("add() is only called inside locked()")
        fresh = [(key, entry) for key, entry in measured if key not in state.entries]
        state = self._append_locked(state, fresh, [])
        self._locked_state = state
        return state.uidvalidity, [state.entries[key].uid for key, _ in measured]

    def forget(self, keys: Collection[str]) -> None:
        """Drop the entries of files the caller removed itself (EXPUNGE, MOVE): no listing is needed."""
        with self._mutex, flocked(self.lock_path):
            state = self._catch_up(locked=True)
            if state is not None:
                self._append_locked(state, [], [state.entries[key].uid for key in keys if key in state.entries])

    @contextlib.contextmanager
    def locked(self) -> Iterator[MapView]:
        """Hold the map's locks (so UIDs can be assigned to files the caller is about to add)."""
        with self._mutex, flocked(self.lock_path):
            state = self._catch_up(locked=True)
            if state is None:
                listing = list_folder(self.folder)
                state = self._start_locked(listing, measure(self.folder, listing, list(listing)))
            self._locked_state = state
            try:
                yield MapView(state.uidvalidity, state.next_uid, dict(state.entries))
            finally:
                self._locked_state = None

    def known(self, key: str) -> bool:
        """Whether the map (as last read, under `locked()`) has an entry for this unique name."""
        state = self._locked_state if self._locked_state is not None else self._state
        return state is not None and key in state.entries

    def _new_uidvalidity(self) -> int:
        last = self._last_uidvalidity
        counter = self.uidvalidity_counter
        if counter is not None:
            with contextlib.suppress(FileNotFoundError, ValueError):
                last = max(last, int(counter.read_text().strip() or 0))
        uidvalidity = max(int(time.time()), last + 1)
        if uidvalidity > MAX_UID:
            uidvalidity = 1
        if counter is not None:
            mailstore.replace_file_durably(counter, f"{uidvalidity}\n".encode())
        self._last_uidvalidity = uidvalidity
        return uidvalidity

    def _start_locked(self, listing: Listing, measured: list[tuple[str, Entry]]) -> _State:
        """A new map (none, or a corrupt one, before): a new UIDVALIDITY, UIDs from 1 in (mtime, name) order."""
        known = {key for key, _ in measured}
        missing = [key for key in listing if key not in known]
        if missing:
            measured = sorted(
                measured + measure(self.folder, listing, missing), key=lambda item: (item[1].mtime_ns, item[0])
            )
        entries = {key: Entry(uid, entry.size_octets, entry.mtime_ns) for uid, (key, entry) in enumerate(measured, 1)}
        state = _State(
            uidvalidity=self._new_uidvalidity(),
            next_uid=len(entries) + 1,
            entries=entries,
            key_by_uid=None,
            file_id=(0, 0),
            offset=0,
            dead_lines=0,
            last_uid=len(entries),
        )
        return self._rewrite_locked(state)

    def _append_locked(self, state: _State, fresh: list[tuple[str, Entry]], dropped: list[int]) -> _State:
        if not fresh and not dropped:
            return state
        if state.next_uid + len(fresh) > MAX_UID:
            listing = list_folder(self.folder)
            return self._start_locked(listing, measure(self.folder, listing, list(listing)))
        lines = []
        key_by_uid = _key_by_uid(state) if dropped else state.key_by_uid
        for uid in dropped:
            assert key_by_uid is not None
            del state.entries[key_by_uid.pop(uid)]
            lines.append(f"-{uid} 0 0 -\n")
            state.dead_lines += 2
        for key, measured in fresh:
            entry = Entry(state.next_uid, measured.size_octets, measured.mtime_ns)
            state.next_uid += 1
            state.last_uid = entry.uid
            state.entries[key] = entry
            if key_by_uid is not None:
                key_by_uid[entry.uid] = key
            lines.append(_entry_line(key, entry))
        if state.dead_lines > max(COMPACT_MIN_DEAD_LINES, len(state.entries)):
            return self._rewrite_locked(state)
        data = "".join(lines).encode("utf-8", "surrogateescape")
        try:
            mailstore.append_synced(self.path, data)
        except BaseException:
            self._state = None  # the in-memory state ran ahead of the file: read it again next time
            raise
        state.offset += len(data)
        return state

    def _rewrite_locked(self, state: _State) -> _State:
        header = f"{HEADER_MAGIC} {FORMAT_VERSION} {state.uidvalidity} {state.next_uid}\n"
        data = (header + "".join(_entry_line(key, entry) for key, entry in state.entries.items())).encode(
            "utf-8", "surrogateescape"
        )
        self._state = None
        stat = mailstore.replace_file_durably(self.path, data)
        state.file_id = (stat.st_dev, stat.st_ino)
        state.offset = len(data)
        state.dead_lines = 0
        self._state = state
        return state


def read_all(fd: int, count: int) -> bytes:
    """Up to `count` octets from the descriptor, fewer only at its end."""
    chunks = []
    while count > 0:
        chunk = os.read(fd, count)
        if not chunk:
            break
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


# One map per folder per process, so the threads of one process share what they read. The least
# recently used are forgotten: two objects for one folder are as safe as two processes (the flock).
MAX_MAPS = 512
MAX_MAP_ENTRIES = 500_000  # over every map kept, so a few huge folders do not hold memory forever
_maps: collections.OrderedDict[str, UidMap] = collections.OrderedDict()
_maps_lock = threading.Lock()


def uid_map(folder: Path, *, uidvalidity_counter: Path | None = None) -> UidMap:
    """This process's `UidMap` of the Maildir folder `folder`."""
    key = os.path.abspath(folder)
    with _maps_lock:
        found = _maps.get(key)
        if found is None:
            found = _maps[key] = UidMap(Path(folder), uidvalidity_counter=uidvalidity_counter)
            kept_entries = sum(len(m._state.entries) for m in _maps.values() if m._state is not None)
            while len(_maps) > 1 and (len(_maps) > MAX_MAPS or kept_entries > MAX_MAP_ENTRIES):
                _, evicted = _maps.popitem(last=False)  # a session still using it keeps it working
                kept_entries -= len(evicted._state.entries) if evicted._state is not None else 0
        else:
            _maps.move_to_end(key)
            if uidvalidity_counter is not None:
                found.uidvalidity_counter = uidvalidity_counter
        return found
