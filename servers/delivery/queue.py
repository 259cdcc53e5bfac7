"""The Queue folder: one file per message, its envelope in IIS-style `x-sender:`/`x-receiver:` lines.

A queue file looks exactly like a Drop file: the envelope lines, then the message as accepted
(with our `Received:` header). It is written durably (temp file, fsync, rename, fsync the folder)
before the SMTP server answers 250, so the database row about it can always be rebuilt from it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from servers.storage import fsync_dir, unique_message_name, write_durably

QUEUE_DIR = "Queue"
BADMAIL_DIR = "BadMail"
PICKUP_DIR = "Pickup"
TMP_DIR = ".tmp"
SUFFIX = ".eml"
# Envelope lines are short; a file whose head runs longer than this has no envelope.
MAX_ENVELOPE_OCTETS = 1024 * 1024


class EnvelopeError(ValueError):
    """A file that does not start with a usable envelope."""


@dataclass(frozen=True)
class QueueFile:
    """A queue file's envelope, and where its message starts."""

    path: Path
    mail_from: str
    recipients: tuple[str, ...]
    body_offset: int

    @property
    def name(self) -> str:
        return self.path.name


def envelope_chunk(mail_from: str, recipients: Sequence[str]) -> bytes:
    lines = [f"x-sender: {mail_from}\r\n"] + [f"x-receiver: {rcpt}\r\n" for rcpt in recipients]
    return "".join(lines).encode("utf-8", "surrogateescape")


def ensure_dirs(home_dir: Path) -> None:
    for sub in (QUEUE_DIR, BADMAIL_DIR, PICKUP_DIR, TMP_DIR):
        (Path(home_dir) / sub).mkdir(parents=True, exist_ok=True)


def enqueue(home_dir: Path | str, mail_from: str, recipients: Sequence[str], chunks: Iterable[bytes]) -> str:
    """Write a message for remote delivery into `home_dir/Queue/` durably; return its message id.

    Blocking disk work (call it from a thread in an event loop). When it returns, the message is
    on disk and will be delivered: the node's queue scan indexes it within seconds. `mail_from` is
    the envelope sender without angle brackets ("" for the null sender `<>`).
    """
    if not recipients:
        raise ValueError("a queued message needs at least one recipient")
    home = Path(home_dir)
    queue_dir = home / QUEUE_DIR
    if not queue_dir.is_dir():
        ensure_dirs(home)
    name = unique_message_name(SUFFIX)
    write_durably(home / TMP_DIR, queue_dir, name, [envelope_chunk(mail_from, recipients), *chunks])
    return name.removesuffix(SUFFIX)


def parse_envelope(head: bytes) -> tuple[str | None, list[str], int]:
    """Read leading `x-sender:`/`x-receiver:` lines; return (sender or None, recipients, body offset)."""
    mail_from: str | None = None
    recipients: list[str] = []
    offset = 0
    while True:
        end = head.find(b"\n", offset)
        if end < 0:
            break
        line = head[offset:end].rstrip(b"\r")
        key, sep, value = line.partition(b":")
        key = key.strip().lower()
        if not sep or key not in (b"x-sender", b"x-receiver"):
            break
        text = value.decode("utf-8", "surrogateescape").strip()
        if text.startswith("<") and text.endswith(">"):
            text = text[1:-1]
        if key == b"x-sender":
            mail_from = text
        elif text:
            recipients.append(text)
        offset = end + 1
    return mail_from, recipients, offset


def read_queue_file(path: Path) -> QueueFile:
    """Parse a queue file's envelope; raises EnvelopeError if it has none."""
    with open(path, "rb") as file:
        head = file.read(MAX_ENVELOPE_OCTETS)
    mail_from, recipients, offset = parse_envelope(head)
    if mail_from is None or not recipients:
        raise EnvelopeError(f"{path.name} has no x-sender/x-receiver envelope")
    return QueueFile(path=path, mail_from=mail_from, recipients=tuple(recipients), body_offset=offset)


def list_queue(home_dir: Path) -> list[str]:
    """Names of the complete message files in the Queue folder."""
    try:
        with os.scandir(Path(home_dir) / QUEUE_DIR) as entries:
            return sorted(e.name for e in entries if e.name.endswith(SUFFIX) and e.is_file())
    except FileNotFoundError:
        return []


def remove_durably(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fsync_dir(path.parent)


def write_badmail(home_dir: Path, name: str, message: bytes, report: str) -> Path:
    """Keep an undeliverable message in BadMail/ with a `.bdr` file that says why (rewritten each time)."""
    home = Path(home_dir)
    badmail = home / BADMAIL_DIR
    badmail.mkdir(parents=True, exist_ok=True)
    stem = name.removesuffix(SUFFIX)
    message_path = badmail / f"{stem}{SUFFIX}"
    if not message_path.exists():
        write_durably(home / TMP_DIR, badmail, message_path.name, [message])
    report_tmp = f"{stem}.bdr.{unique_message_name('')}"
    written = write_durably(home / TMP_DIR, badmail, report_tmp, [report.encode("utf-8", "replace")])
    os.replace(written, badmail / f"{stem}.bdr")
    fsync_dir(badmail)
    return message_path
