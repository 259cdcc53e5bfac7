"""Durable writes of mail files: a file is either absent or complete, and on disk before we say 250."""

from __future__ import annotations

import contextlib
import os
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


def write_durably(tmp_dir: Path, target_dir: Path, name: str, chunks: Iterable[bytes]) -> Path:
    """Write `chunks` as `target_dir/name`: temp file, fsync, atomic rename, fsync the directory.

    `tmp_dir` must be on the same filesystem as `target_dir`. On any failure the temporary file
    is removed and nothing appears under `target_dir`.
    """
    tmp_path = tmp_dir / name
    final_path = target_dir / name
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp_path, final_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
        raise
    fsync_dir(target_dir)
    return final_path


def remove_stale_temp_files(tmp_dir: Path, older_than_s: float = 3600) -> int:
    """Delete temp files left by a crashed writer; they were never acknowledged."""
    removed = 0
    cutoff = time.time() - older_than_s
    for path in tmp_dir.glob("*"):
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed
