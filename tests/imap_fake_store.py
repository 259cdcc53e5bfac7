"""An in-memory mail store for the IMAP session tests, faithful to `servers.imap.store_api`.

One `FakeMailStore` is one mailbox's folders; every `account()` is one signed-in session's view of
it, so a test can let session B see what session A changed. Each `FakeFolder` keeps its own
snapshot, like the Maildir one: `refresh()` reports what others did since the last look.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from servers.imap.fetch_cache import FetchCache
from servers.imap.mime import crlf, split_header
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
)

SPECIAL_FOLDERS = {
    "Sent": SpecialUse.SENT,
    "Drafts": SpecialUse.DRAFTS,
    "Trash": SpecialUse.TRASH,
    "Junk": SpecialUse.JUNK,
    "Archive": SpecialUse.ARCHIVE,
}


@dataclass
class StoredMessage:
    uid: int
    content: bytes
    flags: frozenset[str]
    internal_date: float

    def record(self) -> MessageRecord:
        return MessageRecord(self.uid, f"key-{self.uid}", self.flags, len(crlf(self.content)), self.internal_date)


@dataclass
class FolderData:
    uidvalidity: int
    special_use: SpecialUse | None = None
    subscribed: bool = True
    uidnext: int = 1
    messages: list[StoredMessage] = field(default_factory=list)
    caches: dict[str, FetchCache] = field(default_factory=dict)  # for FETCH, shared by its sessions

    def add(self, content: bytes, flags: frozenset[str], internal_date: float) -> int:
        uid = self.uidnext
        self.uidnext += 1
        self.messages.append(StoredMessage(uid, content, flags, internal_date))
        return uid

    def find(self, uid: int) -> StoredMessage:
        for message in self.messages:
            if message.uid == uid:
                return message
        raise KeyError(uid)


def _check_name(name: str) -> None:
    if not name or name.startswith(".") or ".." in name or "/" in name or any(ord(c) < 0x20 for c in name):
        raise BadFolderNameError("Invalid folder name")


class FakeMailStore:
    """One mailbox's folders, shared by every account (session) opened on it."""

    def __init__(self, address: str = "alice@example.com", *, limit_octets: int | None = None) -> None:
        self.address = address
        self.limit_octets = limit_octets
        self._uidvalidity = 1000
        self.folders: dict[str, FolderData] = {INBOX: self._new_folder()}
        for name, use in SPECIAL_FOLDERS.items():
            self.folders[name] = self._new_folder(use)
        self.accounts: list[FakeAccount] = []
        self.fail_next: Exception | None = None  # raised by the next account call, for error paths

    def _new_folder(self, special_use: SpecialUse | None = None) -> FolderData:
        self._uidvalidity += 1
        return FolderData(self._uidvalidity, special_use)

    def account(self) -> FakeAccount:
        account = FakeAccount(self)
        self.accounts.append(account)
        return account

    def deliver(self, content: bytes, *, folder: str = INBOX, flags: Sequence[str] = (), date: float = 0.0) -> int:
        """Another party (delivery, a second session) adds a message."""
        return self.folders[folder].add(content, frozenset(flags), date or time.time())

    def used_octets(self) -> int:
        return sum(len(crlf(m.content)) for data in self.folders.values() for m in data.messages)

    def check_quota(self, extra_octets: int) -> None:
        if self.limit_octets is not None and self.used_octets() + extra_octets > self.limit_octets:
            raise OverQuotaError("Mailbox is full")

    def data(self, name: str) -> FolderData:
        try:
            return self.folders[name]
        except KeyError:
            raise NoSuchFolderError("No such folder") from None


class FakeFolder:
    def __init__(self, store: FakeMailStore, name: str, *, read_only: bool) -> None:
        self.store = store
        self.name = name
        self.read_only = read_only
        self.data = store.data(name)
        self.uidvalidity = self.data.uidvalidity
        self.closed = False
        self._snapshot: dict[int, MessageRecord] = {m.uid: m.record() for m in self.data.messages}

    @property
    def uidnext(self) -> int:
        return self.data.uidnext

    def messages(self) -> Sequence[MessageRecord]:
        return list(self._snapshot.values())

    def refresh(self) -> FolderChanges:
        current = {m.uid: m.record() for m in self.data.messages}
        changes = FolderChanges(
            expunged=[uid for uid in self._snapshot if uid not in current],
            added=[record for uid, record in current.items() if uid not in self._snapshot],
            flags_changed=[
                record for uid, record in current.items() if uid in self._snapshot and self._snapshot[uid] != record
            ],
        )
        self._snapshot = current
        return changes

    def read(self, uid: int) -> bytes:
        return self.data.find(uid).content

    def read_header(self, uid: int) -> bytes:
        return split_header(self.read(uid))[0]

    def store_flags(self, uids: Sequence[int], flags: frozenset[str], mode: str) -> list[MessageRecord]:
        if self.read_only:
            raise StoreError("Folder is read-only")
        changed = []
        for uid in uids:
            try:
                message = self.data.find(uid)
            except KeyError:
                continue
            new = flags if mode == "set" else message.flags | flags if mode == "add" else message.flags - flags
            if new != message.flags:
                message.flags = frozenset(new)
                record = message.record()
                if uid in self._snapshot:
                    self._snapshot[uid] = record
                changed.append(record)
        return changed

    def expunge(self, uids: Sequence[int] | None = None) -> list[int]:
        if self.read_only:
            raise StoreError("Folder is read-only")
        wanted = None if uids is None else set(uids)
        gone = [m.uid for m in self.data.messages if "\\Deleted" in m.flags and (wanted is None or m.uid in wanted)]
        self._remove(gone)
        return gone

    def _remove(self, uids: Sequence[int]) -> None:
        self.data.messages = [m for m in self.data.messages if m.uid not in set(uids)]
        for uid in uids:
            self._snapshot.pop(uid, None)

    def copy_to(self, uids: Sequence[int], target: str) -> tuple[int, list[tuple[int, int]]]:
        destination = self.store.data(target)
        sources = [m for m in self.data.messages if m.uid in set(uids)]
        self.store.check_quota(sum(len(crlf(m.content)) for m in sources))
        pairs = [(m.uid, destination.add(m.content, m.flags, m.internal_date)) for m in sources]
        return destination.uidvalidity, pairs

    def move_to(self, uids: Sequence[int], target: str) -> tuple[int, list[tuple[int, int]]]:
        if self.read_only:
            raise StoreError("Folder is read-only")
        destination = self.store.data(target)
        sources = [m for m in self.data.messages if m.uid in set(uids)]
        pairs = [(m.uid, destination.add(m.content, m.flags, m.internal_date)) for m in sources]
        self._remove([source for source, _ in pairs])
        return destination.uidvalidity, pairs

    def fetch_cache(self, kind: str) -> FetchCache:
        return self.data.caches.setdefault(kind, FetchCache())

    def watch_paths(self) -> Sequence[str]:
        return (f"/fake/{self.store.address}/{self.name}",)

    def close(self) -> None:
        self.closed = True


class FakeAccount:
    def __init__(self, store: FakeMailStore) -> None:
        self.store = store
        self.address = store.address
        self.release_count = 0
        self.opened: list[FakeFolder] = []

    def _maybe_fail(self) -> None:
        failure, self.store.fail_next = self.store.fail_next, None
        if failure is not None:
            raise failure

    def list_folders(self) -> list[FolderInfo]:
        self._maybe_fail()
        names = set(self.store.folders)
        parents = {name.rsplit(HIERARCHY_DELIMITER, 1)[0] for name in names if HIERARCHY_DELIMITER in name}
        ordered = [INBOX, *sorted((names | parents) - {INBOX})]
        infos = []
        for name in ordered:
            data = self.store.folders.get(name)
            has_children = any(other.startswith(name + HIERARCHY_DELIMITER) for other in names)
            infos.append(
                FolderInfo(
                    name,
                    special_use=data.special_use if data else None,
                    subscribed=bool(data and data.subscribed),
                    selectable=data is not None,
                    has_children=has_children,
                )
            )
        return infos

    def create_folder(self, name: str) -> None:
        self._maybe_fail()
        _check_name(name)
        if name in self.store.folders:
            raise FolderExistsError("Folder exists")
        self.store.folders[name] = self.store._new_folder()

    def delete_folder(self, name: str) -> None:
        self._maybe_fail()
        if name == INBOX:
            raise BadFolderNameError("INBOX cannot be deleted")
        self.store.data(name)
        del self.store.folders[name]

    def rename_folder(self, old: str, new: str) -> None:
        self._maybe_fail()
        _check_name(new)
        source = self.store.data(old)
        if new in self.store.folders:
            raise FolderExistsError("Folder exists")
        if old == INBOX:
            target = self.store._new_folder()
            for message in source.messages:
                target.add(message.content, message.flags, message.internal_date)
            source.messages = []
            self.store.folders[new] = target
            return
        for name in [n for n in self.store.folders if n == old or n.startswith(old + HIERARCHY_DELIMITER)]:
            self.store.folders[new + name[len(old) :]] = self.store.folders.pop(name)

    def subscribe(self, name: str, subscribed: bool) -> None:
        self._maybe_fail()
        self.store.data(name).subscribed = subscribed

    def open_folder(self, name: str, *, read_only: bool) -> FakeFolder:
        self._maybe_fail()
        folder = FakeFolder(self.store, name, read_only=read_only)
        self.opened.append(folder)
        return folder

    def status(self, name: str) -> FolderStatus:
        self._maybe_fail()
        data = self.store.data(name)
        return FolderStatus(
            messages=len(data.messages),
            unseen=sum(1 for m in data.messages if "\\Seen" not in m.flags),
            uidnext=data.uidnext,
            uidvalidity=data.uidvalidity,
            size_octets=sum(len(crlf(m.content)) for m in data.messages),
        )

    def append(self, name: str, message: bytes, flags: frozenset[str], internal_date: float | None) -> tuple[int, int]:
        self._maybe_fail()
        data = self.store.data(name)
        self.store.check_quota(len(crlf(message)))
        return data.uidvalidity, data.add(message, flags, internal_date if internal_date is not None else time.time())

    def quota(self) -> Quota:
        self._maybe_fail()
        count = sum(len(data.messages) for data in self.store.folders.values())
        return Quota(self.store.used_octets(), self.store.limit_octets, count)

    def release(self) -> None:
        self.release_count += 1
