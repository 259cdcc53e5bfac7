"""Maildir primitives: unique names, path safety, folders, a listing for POP3, reads, usage, the lock.

Layout and naming follow https://cr.yp.to/proto/maildir.html: a message is written under tmp/,
then linked into new/; a reader may later rename it into cur/ with a ":2,FLAGS" info suffix.
The part of the file name before ":" never changes, so it is the message's POP3 unique-id.
Nothing here writes or changes a message: that is `servers.mailstore`, built on these.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import functools
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from servers.storage import MAILBOX_ROOT, UnsafePathError, contained_path, fsync_dir, path_name_problem

SUBDIRS = ("tmp", "new", "cur")
# new/ before cur/: a message moved between the two scans is then seen in cur/, not missed.
MESSAGE_SUBDIRS = ("new", "cur")
INFO_SEPARATOR = ":"
READ_CHUNK_OCTETS = 64 * 1024
# RFC 1939 section 7 allows 70 characters in a unique-id; time, pid and random take at most 46.
MAX_HOST_PART_CHARS = 24


@dataclass(frozen=True)
class StoredMessage:
    """One message file in a Maildir, as a POP3 listing sees it."""

    uid: str
    path: Path
    size_octets: int  # what RETR sends for it: every line ending counted as CRLF
    mtime_ns: int


def unique_part(file_name: str) -> str:
    """Return the part of a Maildir file name that survives flag changes: everything before ':'."""
    return file_name.split(INFO_SEPARATOR, 1)[0]


@functools.cache
def _host_part() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:MAX_HOST_PART_CHARS]


def new_unique_name() -> str:
    """Return a fresh Maildir file name: delivery time, process, 64 random bits, host."""
    return f"{time.time_ns()}.P{os.getpid()}R{secrets.token_hex(8)}.{_host_part()}"


def ensure_maildir(path: Path) -> Path:
    """Create the Maildir `path` with its tmp/, new/ and cur/ if they are missing; return it."""
    path = check_maildir(Path(path))
    root_created = not path.exists()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    missing = [path / name for name in SUBDIRS if not (path / name).is_dir()]
    for directory in missing:
        directory.mkdir(mode=0o700, exist_ok=True)
    # A new directory entry survives a crash only once its parent directory is synced.
    if missing:
        fsync_dir(path)
    if root_created:
        fsync_dir(path.parent)
    return path


def mailbox_name_problem(name: str) -> str | None:
    """Why a domain name or local part cannot name a mailbox folder, or None if it can."""
    if name.startswith("."):
        return "cannot start with a dot"
    return path_name_problem(name)


def has_own_folder(domain_name: str, local_part: str) -> bool:
    """Whether both names are safe to become a mailbox folder (checked by name alone, no disk access)."""
    return mailbox_name_problem(domain_name) is None and mailbox_name_problem(local_part) is None


def mailbox_maildir(home_dir: Path | str, domain_name: str, local_part: str) -> Path:
    """The Maildir of local_part@domain_name: <home>/Mailbox/<domain>/<local part>.

    Raises UnsafePathError if either name would make it anything but its own folder two levels
    below `home_dir/Mailbox` (a separator, `.`, `..`, a leading dot, a control character, a link).
    """
    for name in (domain_name, local_part):
        problem = mailbox_name_problem(name)
        if problem is not None:
            raise UnsafePathError(errno.EINVAL, f"the mailbox name {name!r} {problem}", str(home_dir))
    return contained_path(home_dir, MAILBOX_ROOT, domain_name, local_part)


def folder_maildir(maildir: Path, folder: str) -> Path:
    """The Maildir++ folder `maildir/.folder`, refusing names that would leave the mailbox."""
    problem = path_name_problem(folder)
    if problem is not None:
        raise UnsafePathError(errno.EINVAL, f"the folder name {folder!r} {problem}", str(maildir))
    return contained_path(maildir, f".{folder}")


def _is_maildir(path: Path) -> bool:
    return (path / "new").is_dir() and (path / "cur").is_dir()


def check_maildir(path: Path) -> Path:
    """Refuse to write into or delete from `path` unless it is a Maildir of its own.

    A Maildir path never holds `..`, is no symbolic link (nor are its tmp/, new/ and cur/), and does
    not lie inside another Maildir's tmp/, new/ or cur/: a mailbox named `bob/new` would otherwise
    store into, and be deleted with, bob's unread mail.
    """
    path = Path(path)
    if ".." in path.parts:
        raise UnsafePathError(errno.EINVAL, "a Maildir path cannot contain ..", str(path))
    for directory in (path, *(path / sub for sub in SUBDIRS)):
        if directory.is_symlink():
            raise UnsafePathError(errno.ELOOP, "a Maildir is never a symbolic link", str(directory))
    for inner in (path, *path.parents):
        if inner.name in SUBDIRS and _is_maildir(inner.parent):
            raise UnsafePathError(errno.EINVAL, f"inside the Maildir {inner.parent}", str(path))
    return path


def crlf_size_octets(path: Path, chunk_octets: int = READ_CHUNK_OCTETS) -> int:
    """Return how many octets the file takes with every line ending sent as CRLF.

    A bare LF becomes CRLF and an unterminated last line gets a CRLF, exactly as
    `servers.pop3.message_lines` splits it, so STAT and LIST match what RETR sends.
    """
    size = 0
    bare_lf_count = 0
    last_octet = b""
    with open(path, "rb") as file:
        while chunk := file.read(chunk_octets):
            bare_lf_count += chunk.count(b"\n") - chunk.count(b"\r\n")
            if chunk.startswith(b"\n") and last_octet == b"\r":
                bare_lf_count -= 1  # a CRLF split across two reads
            last_octet = chunk[-1:]
            size += len(chunk)
    if size and last_octet != b"\n":
        size += 2
    return size + bare_lf_count


# CRLF sizes of message files this process has measured, by (device, inode). A delivered message
# never changes, and a move from new/ to cur/ keeps its inode, so a size stays true as long as the
# file's size and mtime do. Without it every STAT would read the whole mailbox.
_crlf_sizes: dict[tuple[int, int], tuple[int, int, int]] = {}
CRLF_SIZE_CACHE_ENTRIES = 200_000


def _cached_crlf_size(path: Path, stat: os.stat_result) -> int:
    key = (stat.st_dev, stat.st_ino)
    known = _crlf_sizes.get(key)
    if known is not None and known[0] == stat.st_size and known[1] == stat.st_mtime_ns:
        return known[2]
    size_octets = crlf_size_octets(path)
    if len(_crlf_sizes) >= CRLF_SIZE_CACHE_ENTRIES:
        _crlf_sizes.clear()
    _crlf_sizes[key] = (stat.st_size, stat.st_mtime_ns, size_octets)
    return size_octets


def message_entries(directory: Path) -> Iterator[os.DirEntry[str]]:
    """The message files directly in `directory` (dot-files and subdirectories left out)."""
    with os.scandir(directory) as entries:
        for entry in entries:
            # Maildir readers skip dot-files; other tools keep their own state there.
            if not entry.name.startswith(".") and entry.is_file():
                yield entry


def list_messages(maildir: Path) -> list[StoredMessage]:
    """List the messages in new/ and cur/, oldest delivery first."""
    by_uid: dict[str, StoredMessage] = {}
    for subdir in MESSAGE_SUBDIRS:
        for entry in message_entries(Path(maildir) / subdir):
            path = Path(entry.path)
            try:
                stat = entry.stat()
                mtime_ns = stat.st_mtime_ns
                size_octets = _cached_crlf_size(path, stat)
            except FileNotFoundError:
                continue  # moved to cur/ or deleted while we looked; cur/ is scanned after new/
            uid = unique_part(entry.name)
            # A message caught mid-move sits in both; the later scan (cur/) wins and it is listed once.
            by_uid[uid] = StoredMessage(uid=uid, path=path, size_octets=size_octets, mtime_ns=mtime_ns)
    return sorted(by_uid.values(), key=lambda message: (message.mtime_ns, message.uid))


def _find_path(maildir: Path, uid: str) -> Path | None:
    for subdir in MESSAGE_SUBDIRS:
        for entry in message_entries(Path(maildir) / subdir):
            if unique_part(entry.name) == uid:
                return Path(entry.path)
    return None


def read_message(message: StoredMessage) -> bytes:
    """Return the stored bytes of `message`, following it if it was moved or flagged since listing."""
    try:
        return message.path.read_bytes()
    except FileNotFoundError:
        current_path = _find_path(message.path.parent.parent, message.uid)
        if current_path is None:
            raise
        return current_path.read_bytes()


# Counts of big mailboxes, while their folders stay unchanged (see `usage`).
USAGE_SETTLE_NS = 2_000_000_000
USAGE_MIN_FILES_TO_REMEMBER = 500
USAGE_MAX_REMEMBERED = 2000
_remembered_usage: collections.OrderedDict[str, tuple[tuple[int, int], int, tuple[int, int]]] = (
    collections.OrderedDict()
)
_remembered_usage_lock = threading.Lock()


def _folder_mtimes_ns(maildir: Path) -> tuple[int, int]:
    times = []
    for sub in ("new", "cur"):
        try:
            times.append(os.stat(maildir / sub).st_mtime_ns)
        except FileNotFoundError:
            times.append(0)
    return times[0], times[1]


def usage(maildir: Path) -> tuple[int, int]:
    """Total stored octets and message count, from file sizes alone (no reads): for quotas and stats.

    Counting stats every file: a few hundred milliseconds for 50,000 messages, on every list page,
    quota check and stats call. Message files never change in place; they arrive, move (flags) or go,
    and each of those changes the modification time of new/ or cur/. So the count of a big mailbox
    is remembered with both folders' mtimes and reused while they are unchanged, unless a folder
    changed less than USAGE_SETTLE_NS before the count (it may change again within one clock tick).
    """
    maildir = Path(maildir)
    key = str(maildir)
    mtimes = _folder_mtimes_ns(maildir)
    with _remembered_usage_lock:
        known = _remembered_usage.get(key)
        if known is not None:
            _remembered_usage.move_to_end(key)
    if known is not None and known[0] == mtimes and known[1] - max(mtimes) > USAGE_SETTLE_NS:
        return known[2]
    counted_at_ns = time.time_ns()
    counted = count_usage(maildir)
    with _remembered_usage_lock:
        if counted[1] >= USAGE_MIN_FILES_TO_REMEMBER:
            _remembered_usage[key] = (mtimes, counted_at_ns, counted)
            _remembered_usage.move_to_end(key)
            while len(_remembered_usage) > USAGE_MAX_REMEMBERED:
                _remembered_usage.popitem(last=False)
        else:
            _remembered_usage.pop(key, None)
    return counted


def mailbox_usage(maildir: Path) -> tuple[int, int]:
    """Octets and messages of a whole mailbox: INBOX (the Maildir itself) and every Maildir++ folder.

    The one count behind every quota (SMTP's RCPT check, local delivery, IMAP's APPEND/COPY and
    GETQUOTA, the console's figures): mail filed into Sent or Archive takes space like INBOX's.
    Folders on their way out (`..deleted-*`) and symbolic links are not counted.
    """
    maildir = Path(maildir)
    total_octets, total_messages = usage(maildir)
    try:
        with os.scandir(maildir) as entries:
            folders = [
                Path(entry.path)
                for entry in entries
                if entry.name.startswith(".")
                and not entry.name.startswith("..")
                and entry.is_dir(follow_symlinks=False)
                and _is_maildir(Path(entry.path))
            ]
    except FileNotFoundError:
        return total_octets, total_messages
    for folder in folders:
        octets, count = usage(folder)
        total_octets += octets
        total_messages += count
    return total_octets, total_messages


def would_exceed_quota(
    maildir: Path, quota_bytes: int | None, quota_messages: int | None, extra_octets: int, extra_messages: int
) -> bool:
    """Whether the mailbox would pass its quota after taking `extra_octets` in `extra_messages` messages.

    Every folder counts (`mailbox_usage`). No quota means nothing to count (no disk access).
    """
    if quota_bytes is None and quota_messages is None:
        return False
    return exceeds_quota(mailbox_usage(maildir), quota_bytes, quota_messages, extra_octets, extra_messages)


def exceeds_quota(
    used: tuple[int, int], quota_bytes: int | None, quota_messages: int | None, extra_octets: int, extra_messages: int
) -> bool:
    """Whether (octets, messages) `used` plus the extra would pass either limit (None: no limit)."""
    size_octets, count = used
    if quota_bytes is not None and size_octets + extra_octets > quota_bytes:
        return True
    return quota_messages is not None and count + extra_messages > quota_messages


def count_usage(maildir: Path) -> tuple[int, int]:
    """`usage` without memory: stat every message file now."""
    total_octets = 0
    count = 0
    for sub in ("new", "cur"):
        try:
            entries = os.scandir(maildir / sub)
        except FileNotFoundError:
            continue
        with entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    total_octets += entry.stat().st_size
                    count += 1
                except FileNotFoundError:
                    continue
    return total_octets, count


LOCK_FILE_NAME = ".pop3.lock"


class MailboxLock:
    """One POP3 session per mailbox (RFC 1939 section 8), across processes: an flock on the Maildir."""

    def __init__(self, maildir: Path) -> None:
        self.path = check_maildir(Path(maildir)) / LOCK_FILE_NAME
        self.fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
