"""Durable writes of mail files: a file is either absent or complete, and on disk before we say 250."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import time
import uuid
from collections.abc import Iterable
from pathlib import Path


def unique_message_name(suffix: str = ".eml") -> str:
    """A file name unique across processes and hosts, sorting by arrival time."""
    return f"{time.time_ns() // 1000:x}-{os.getpid():x}-{uuid.uuid4().hex[:12]}{suffix}"


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, chunks: Iterable[bytes], *, mode: int = 0o640, mtime_ns: int | None = None) -> None:
    """Create `path` (it must not exist), write every chunk whole, and fsync it (with `mtime_ns` if given)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        if mtime_ns is not None:
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(tmp_dir: Path, target_dir: Path, name: str, chunks: Iterable[bytes]) -> Path:
    """Write `chunks` as `target_dir/name`: temp file, fsync, atomic rename, fsync the directory.

    `tmp_dir` must be on the same filesystem as `target_dir`. On any failure the temporary file
    is removed and nothing appears under `target_dir`.
    """
    tmp_path = tmp_dir / name
    final_path = target_dir / name
    try:
        write_synced(tmp_path, chunks)
        os.rename(tmp_path, final_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
        raise
    fsync_dir(target_dir)
    return final_path


def remove_stale_temp_files(tmp_dir: Path, older_than_s: float = 3600) -> int:
    """Delete temp files left by a crashed writer; they were never acknowledged."""
    return remove_old_files_in(tmp_dir, time.time() - older_than_s)


# -- names that become paths -----------------------------------------------------------------

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class UnsafePathError(OSError):
    """A name or path that would leave the folder it belongs in; nothing was written or removed."""


def path_name_problem(name: str) -> str | None:
    """Why `name` cannot be one component of a path under a server's home, or None if it can."""
    if not name:
        return "is empty"
    if name in (".", ".."):
        return f"cannot be {name!r}"
    if "/" in name or "\\" in name:
        return "cannot contain / or \\"
    if _CONTROL_CHARACTERS.search(name):
        return "cannot contain control characters"
    return None


def contained_path(parent: Path | str, *parts: str) -> Path:
    """Return `parent`/`parts`, each part one plain component, refusing any way out of `parent`.

    Raises UnsafePathError for a part that is empty, `.`, `..`, holds a separator or a control
    character, or is a symbolic link on disk: mail paths below a server's home are never links, so
    a write or a delete can never land outside the folder it names.
    """
    parent = Path(parent)
    root = os.path.realpath(parent)
    path = parent
    for part in parts:
        part = str(part)
        problem = path_name_problem(part)
        if problem is not None:
            raise UnsafePathError(errno.EINVAL, f"the name {part!r} {problem}", str(path))
        path = path / part
        if path.is_symlink():
            raise UnsafePathError(errno.ELOOP, "a symbolic link below the home directory", str(path))
    # Plain names that are not links cannot lead out; the resolved path proves it on disk.
    resolved = os.path.realpath(path)
    if resolved != root and os.path.commonpath([root, resolved]) != root:
        raise UnsafePathError(errno.EINVAL, f"outside {parent}", str(path))
    return path


# -- sweeping temporary files ----------------------------------------------------------------

# Maildir readers remove tmp/ files not touched for 36 hours (https://cr.yp.to/proto/maildir.html).
STALE_TMP_AGE_S = 36 * 3600
# Where a server keeps its Maildirs, and its own temp folder (as in servers.maildir and servers.mailstore).
MAILBOX_ROOT = "Mailbox"
SERVER_TMP_DIR = ".tmp"


def _open_directory(path: Path, dir_fd: int | None = None) -> int | None:
    """An fd for the directory `path`, or None if it is missing, not a directory or a symbolic link."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            return None
        raise


def _remove_old_files_at(dir_fd: int, cutoff: float) -> int:
    removed = 0
    with os.scandir(dir_fd) as entries:
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                    os.unlink(entry.name, dir_fd=dir_fd)
                    removed += 1
            except FileNotFoundError:
                continue
    return removed


def remove_old_files_in(directory: Path, cutoff: float) -> int:
    """Remove the regular files directly inside `directory` last changed before `cutoff` (epoch s).

    Symbolic links are never followed, neither the directory itself nor its entries (they stay),
    and nothing below a subdirectory is touched. Returns how many files went.
    """
    fd = _open_directory(Path(directory))
    if fd is None:
        return 0
    try:
        return _remove_old_files_at(fd, cutoff)
    finally:
        os.close(fd)


def _subdirectories(dir_fd: int) -> list[str]:
    with os.scandir(dir_fd) as entries:
        return [entry.name for entry in entries if entry.is_dir(follow_symlinks=False)]


def _sweep_maildir_at(maildir_fd: int, cutoff: float) -> int:
    """tmp/ of the Maildir and of each of its Maildir++ folders (.Name/tmp/)."""
    removed = 0
    for name in ["", *(n for n in _subdirectories(maildir_fd) if n.startswith(".") and n not in (".", ".."))]:
        folder_fd = _open_directory(Path(name), dir_fd=maildir_fd) if name else os.dup(maildir_fd)
        if folder_fd is None:
            continue
        try:
            tmp_fd = _open_directory(Path("tmp"), dir_fd=folder_fd)
            if tmp_fd is None:
                continue
            try:
                removed += _remove_old_files_at(tmp_fd, cutoff)
            finally:
                os.close(tmp_fd)
        finally:
            os.close(folder_fd)
    return removed


def sweep_stale_temp_files(home_dir: Path, older_than_s: float = STALE_TMP_AGE_S) -> int:
    """Remove what killed writers left in one server's temp folders; return how many files went.

    Looks at tmp/ of every Maildir under `home_dir/Mailbox/<domain>/<mailbox>` and of its folders,
    and at the server's own `.tmp/` (where Queue/, Drop/ and BadMail/ files are written before their
    rename). Only regular files directly inside those folders, untouched for `older_than_s`; symbolic
    links are neither followed nor removed.
    """
    cutoff = time.time() - older_than_s
    removed = remove_old_files_in(Path(home_dir) / SERVER_TMP_DIR, cutoff)
    root_fd = _open_directory(Path(home_dir) / MAILBOX_ROOT)
    if root_fd is None:
        return removed
    try:
        for domain in _subdirectories(root_fd):
            domain_fd = _open_directory(Path(domain), dir_fd=root_fd)
            if domain_fd is None:
                continue
            try:
                for mailbox in _subdirectories(domain_fd):
                    maildir_fd = _open_directory(Path(mailbox), dir_fd=domain_fd)
                    if maildir_fd is None:
                        continue
                    try:
                        removed += _sweep_maildir_at(maildir_fd, cutoff)
                    finally:
                        os.close(maildir_fd)
            finally:
                os.close(domain_fd)
    finally:
        os.close(root_fd)
    return removed
