"""Keep the message index in step with a mailbox's Maildir folders; changes on disk go through the store.

A refresh lists file names only (no reads, no stat) and parses the headers of the messages it has
not seen; of new/ and cur/ it lists only those that changed since the last scan, and it is skipped
outright while neither did. Flags live in the file name (`cur/<uid>:2,S`), and the unique name
before ':' never changes, so POP3's UIDLs stay what they were whatever the webmail marks.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import operator
import os
import time
from dataclasses import dataclass
from email import policy
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime
from pathlib import Path

from django.db import IntegrityError, transaction
from django.db.models import Q

from servers import mailstore
from servers.maildir import MESSAGE_SUBDIRS, folder_maildir, unique_part
from servers.mailstore import SEEN_FLAG, flags_of

from .models import INBOX, SENT, MailboxIndexState, MessageIndex

FLAGGED_FLAG = "F"  # IMAP's \\Flagged

HEADER_READ_OCTETS = 64 * 1024
# A directory changed less than this long before the scan may change again within the same clock tick.
SCAN_SETTLE_NS = 2_000_000_000
BATCH_ROWS = 500
# Unseen messages parsed per refresh: bounds the first look at a huge mailbox to a few seconds.
MAX_NEW_PER_REFRESH = 5000


def folder_path(maildir: Path, folder: str) -> Path:
    """The Maildir of a folder: the mailbox's own for the inbox, a Maildir++ `.Name` subfolder otherwise.

    Names come from the store's folder list; `folder_maildir` still refuses any that could leave the mailbox.
    """
    maildir = Path(maildir)
    return maildir if folder == INBOX else folder_maildir(maildir, folder)


def _names(directory: Path) -> list[str]:
    # os.listdir builds the whole list in C: several times faster than iterating os.scandir for 50,000 names.
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return [name for name in names if not name.startswith(".")]


def _differences(mailbox_id: int, folder: str, root: Path, subdirs: list[str]) -> tuple[set[str], set[str]]:
    """File names ("new/<name>", "cur/<name>") on disk but not in the index, and in the index but not on disk.

    Two sets and their differences: with 50,000 messages and one new, Python looks at each name
    once, and only the differences one by one.
    """
    on_disk: set[str] = set()
    for subdir in subdirs:
        prefix = f"{subdir}/"
        on_disk.update([prefix + name for name in _names(root / subdir)])
    rows = MessageIndex.objects.for_mailbox(mailbox_id, folder)
    if len(subdirs) < len(MESSAGE_SUBDIRS):  # else one query for all beats one per subdirectory
        rows = rows.filter(functools.reduce(operator.or_, [Q(file_name__startswith=f"{s}/") for s in subdirs]))
    indexed = set(rows.values_list("file_name", flat=True))
    return on_disk - indexed, indexed - on_disk


def _uid_of(file_name: str) -> str:
    """The unique name in an index file name: "cur/<uid>:2,S" -> "<uid>"."""
    return unique_part(file_name.partition("/")[2])


def _indexed_names(mailbox_id: int, folder: str, uids: list[str]) -> dict[str, str]:
    """Which of these unique names the index holds already, and under which file name."""
    if not uids:
        return {}
    rows = MessageIndex.objects.for_mailbox(mailbox_id, folder)
    if len(uids) <= BATCH_ROWS:  # new mail; else (a first look) one pass over the index beats many queries
        rows = rows.filter(uid__in=uids)
    wanted = set(uids)
    return {uid: name for uid, name in rows.values_list("uid", "file_name") if uid in wanted}


def _mtime_ns(directory: Path) -> int:
    try:
        return directory.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def _decoded(raw: str | None) -> str:
    """A header as text: RFC 2047 words decoded, folding and stray bytes flattened."""
    if raw is None:
        return ""
    try:
        text = str(make_header(decode_header(raw)))
    except Exception:  # noqa: BLE001 - an unknown charset or broken encoded word: show it as it came
        text = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return " ".join(text.split())


def summarize(path: Path) -> dict | None:
    """What the list shows of one message, from its headers alone; None if the file went away.

    The compat32 parser with explicit RFC 2047 decoding is several times faster than policy.default,
    which matters for the first look at a mailbox of tens of thousands of messages.
    """
    try:
        with open(path, "rb") as file:
            head = file.read(HEADER_READ_OCTETS)
            stat = os.fstat(file.fileno())
    except FileNotFoundError:
        return None
    ends = [i for i in (head.find(b"\n\n"), head.find(b"\r\n\r\n")) if i >= 0]
    headers = BytesHeaderParser(policy=policy.compat32).parsebytes(head[: min(ends, default=len(head))] + b"\n\n")
    sent_at = None
    with contextlib.suppress(Exception):  # a Date: header that is not a date shows as none
        sent_at = parsedate_to_datetime(headers["Date"])
        if sent_at.tzinfo is None:
            sent_at = sent_at.replace(tzinfo=dt.UTC)
    content_type = headers.get_content_type()
    # Without reading the body: mail with attachments is multipart/mixed (RFC 2046 5.1.3).
    has_attachments = content_type == "multipart/mixed" or (
        not content_type.startswith(("text/", "multipart/")) and content_type != "message/rfc822"
    )
    return {
        "sender": _decoded(headers["From"])[:255],
        "subject": _decoded(headers["Subject"])[:255],
        "recipients": _decoded(headers["To"])[:255],
        "sent_at": sent_at,
        "delivered_at": dt.datetime.fromtimestamp(stat.st_mtime, tz=dt.UTC),
        "size_octets": stat.st_size,
        "has_attachments": has_attachments,
    }


def _state_of(mailbox_id: int, folder: str) -> MailboxIndexState:
    try:
        state, _ = MailboxIndexState.objects.get_or_create(mailbox_id=mailbox_id, folder=folder)
    except IntegrityError:  # another tab's first refresh made it just now
        state = MailboxIndexState.objects.get(mailbox_id=mailbox_id, folder=folder)
    return state


@dataclass(frozen=True)
class Refresh:
    scanned: bool  # False: neither new/ nor cur/ changed, nothing was listed
    pending: int = 0  # messages still to index (a later refresh continues)


def refresh(
    mailbox_id: int,
    maildir: Path,
    folder: str = INBOX,
    *,
    force: bool = False,
    max_new: int = MAX_NEW_PER_REFRESH,
    known_state: MailboxIndexState | None = None,
) -> Refresh:
    """Bring the folder's index up to date with the disk, parsing at most `max_new` unseen messages.

    Unseen messages are taken newest name first (Maildir names start with the delivery time), so
    the first look at a huge mailbox shows its latest mail at once and the rest follows. `known_state`,
    if the caller read it already (`refresh_folders`), saves a query.
    """
    root = folder_path(maildir, folder)
    new_mtime, cur_mtime = _mtime_ns(root / "new"), _mtime_ns(root / "cur")
    state = known_state if known_state is not None else _state_of(mailbox_id, folder)
    # Only a subdirectory that changed since the last complete scan (or so recently that it may
    # change again within the same clock tick) is listed: new mail touches new/ alone, and the
    # read messages in cur/ are by far the most in a big mailbox.
    changed = [
        subdir
        for subdir, mtime, indexed_mtime in (
            ("new", new_mtime, state.new_mtime_ns),
            ("cur", cur_mtime, state.cur_mtime_ns),
        )
        if force or mtime != indexed_mtime or state.scanned_at_ns - mtime <= SCAN_SETTLE_NS
    ]
    if not changed:
        return Refresh(scanned=False)
    scan_started_ns = time.time_ns()
    # Only the differences between disk and index are looked at one by one.
    appeared, vanished = _differences(mailbox_id, folder, root, changed)
    vanished_by_uid = {_uid_of(name): name for name in vanished}
    appeared_by_uid: dict[str, str] = {}
    for name in appeared:
        uid = _uid_of(name)
        # In new/ and cur/ at once (listed while being moved): cur/ is where it went.
        if name.startswith("cur/") or uid not in appeared_by_uid:
            appeared_by_uid[uid] = name
    moved = {uid: appeared_by_uid[uid] for uid in vanished_by_uid if uid in appeared_by_uid}
    gone = [uid for uid in vanished_by_uid if uid not in appeared_by_uid]
    unmatched = [uid for uid in appeared_by_uid if uid not in vanished_by_uid]
    still_indexed = _indexed_names(mailbox_id, folder, unmatched)
    for uid, name in still_indexed.items():
        if name.startswith("new/") and appeared_by_uid[uid].startswith("cur/"):
            moved[uid] = appeared_by_uid[uid]
    on_disk_by_uid = {uid: appeared_by_uid[uid] for uid in unmatched if uid not in still_indexed}
    fresh = sorted(on_disk_by_uid, reverse=True)
    pending = max(0, len(fresh) - max_new)
    fresh = fresh[:max_new]
    if gone or moved:  # else no write transaction (on SQLite it would queue behind every other writer)
        with transaction.atomic():
            for start in range(0, len(gone), BATCH_ROWS):
                MessageIndex.objects.for_mailbox(mailbox_id, folder).filter(
                    uid__in=gone[start : start + BATCH_ROWS]
                ).delete()
            for uid, name in moved.items():
                MessageIndex.objects.for_mailbox(mailbox_id, folder).filter(uid=uid).update(
                    file_name=name, is_read=SEEN_FLAG in flags_of(name), is_flagged=FLAGGED_FLAG in flags_of(name)
                )
    rows = []
    for uid in fresh:
        name = on_disk_by_uid[uid]
        summary = summarize(root / name)
        if summary is None:
            continue  # moved or deleted since the listing; the next scan sees where it went
        rows.append(
            MessageIndex(
                mailbox_id=mailbox_id,
                folder=folder,
                uid=uid,
                file_name=name,
                is_read=SEEN_FLAG in flags_of(name),
                is_flagged=FLAGGED_FLAG in flags_of(name),
                **summary,
            )
        )
        if len(rows) >= BATCH_ROWS:
            MessageIndex.objects.bulk_create(rows, ignore_conflicts=True)
            rows = []
    MessageIndex.objects.bulk_create(rows, ignore_conflicts=True)
    if not pending:  # else the next refresh must scan again, whatever the directory times say
        MailboxIndexState.objects.filter(pk=state.pk).update(
            new_mtime_ns=new_mtime, cur_mtime_ns=cur_mtime, scanned_at_ns=scan_started_ns
        )
    return Refresh(scanned=True, pending=pending)


# Unseen messages parsed per refresh of a folder that is not the one on screen (for its unread count).
MAX_NEW_PER_SIDE_REFRESH = 500


def refresh_folders(mailbox_id: int, maildir: Path, folders: list[str], *, current: str | None = None) -> Refresh:
    """Refresh every folder in `folders` (the sidebar's counts); return the refresh of `current`.

    One query reads every folder's state; a folder whose new/ and cur/ did not change costs two
    stats. Folders other than `current` index at most MAX_NEW_PER_SIDE_REFRESH new messages a time.
    """
    states = {s.folder: s for s in MailboxIndexState.objects.filter(mailbox_id=mailbox_id, folder__in=folders)}
    current_refresh = Refresh(scanned=False)
    for folder in folders:
        done = refresh(
            mailbox_id,
            maildir,
            folder,
            known_state=states.get(folder),
            max_new=MAX_NEW_PER_REFRESH if folder == current else MAX_NEW_PER_SIDE_REFRESH,
        )
        if folder == current:
            current_refresh = done
    return current_refresh


def locate(message: MessageIndex, maildir: Path) -> Path | None:
    """The message's file now: where the index last saw it, or wherever its unique name went since."""
    root = folder_path(maildir, message.folder)
    path = root / message.file_name
    if path.is_file():
        return path
    for subdir in MESSAGE_SUBDIRS:
        for name in _names(root / subdir):
            if unique_part(name) == message.uid:
                message.file_name = f"{subdir}/{name}"
                return root / subdir / name
    return None


def set_flag(message: MessageIndex, maildir: Path, letter: str, on: bool) -> bool:
    """Add or remove one Maildir flag letter (S read, F flagged), keeping the others: what IMAP sees.

    The store moves the file into cur/ under the same unique name; False if the message is gone.
    """
    path = locate(message, maildir)
    if path is None:
        return False
    letters = set(flags_of(path.name))
    if on:
        letters.add(letter)
    else:
        letters.discard(letter)
    target = mailstore.set_flags(path, letters)
    if target is None:
        return False
    file_name = f"cur/{target.name}"
    is_read, is_flagged = SEEN_FLAG in letters, FLAGGED_FLAG in letters
    MessageIndex.objects.filter(pk=message.pk).update(file_name=file_name, is_read=is_read, is_flagged=is_flagged)
    message.file_name, message.is_read, message.is_flagged = file_name, is_read, is_flagged
    return True


def set_seen(message: MessageIndex, maildir: Path, seen: bool) -> bool:
    """Mark a message read or unread (the store moves it into cur/ with or without the S flag)."""
    return set_flag(message, maildir, SEEN_FLAG, seen)


def store_sent(mailbox_id: int, maildir: Path, message_bytes: bytes) -> str:
    """Keep a copy of a sent message in the Sent folder, already marked read; return its unique name."""
    return mailstore.save_sent_copy(folder_path(maildir, SENT), message_bytes)
