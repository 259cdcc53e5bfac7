"""The mail store: the only code that writes an accepted message or changes a stored one.

Every writer comes here with plain values (bytes, paths, addresses), never a protocol object:
SMTP before its 250 and the delivery engine's local delivery (`store_message`: Maildirs, Drop/,
Queue/), DSNs and Pickup intake (`enqueue`), undeliverable mail (`to_badmail`), the queue's end
(`remove_durably`), the webmail (`save_sent_copy`, `set_flags`, `mark_read`), POP3 (`delete_messages`), and IMAP
(`store_in_folder`, `copy_into_folder`, `move_into_folder`, `set_flags_of_files`,
`remove_message_files`, the folders themselves, and the small state files a Maildir keeps: UID
maps, subscriptions, keywords).

Durability, the rule behind every 250: a file is written under a temporary name, fsynced, then
linked or renamed into place, and the directory that gained it is fsynced before we return. A
failure leaves no copy behind (the sender retries the whole message). `servers.maildir` holds the
Maildir primitives the store builds on (names, safety checks, listing, reading, usage);
`servers.storage` the generic durable write and the path checks.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from servers.maildir import (
    INFO_SEPARATOR,
    MESSAGE_SUBDIRS,
    StoredMessage,
    check_maildir,
    ensure_maildir,
    list_messages,
    message_entries,
    new_unique_name,
    read_message,
    unique_part,
)
from servers.storage import SERVER_TMP_DIR, fsync_dir, unique_message_name, write_durably, write_synced

# A server's folders beside its Maildirs (as IIS names them); files are written in TMP_DIR first.
QUEUE_DIR = "Queue"
BADMAIL_DIR = "BadMail"
PICKUP_DIR = "Pickup"
DROP_DIR = "Drop"
# The special-use folder (RFC 6154 Junk) spam goes to; servers.mailfolders lists it as such.
JUNK_FOLDER = "Junk"
TMP_DIR = SERVER_TMP_DIR
SUFFIX = ".eml"
# Envelope lines are short; a file whose head runs longer than this has no envelope.
MAX_ENVELOPE_OCTETS = 1024 * 1024
# Maildir info: "2," then the flag letters in ASCII order (https://cr.yp.to/proto/maildir.html).
INFO_PREFIX = "2,"
SEEN_FLAG = "S"


# --- the message format -------------------------------------------------------------------------


def return_path_line(mail_from: str) -> bytes:
    """The Return-Path: header (RFC 5321 4.4) a final delivery puts first."""
    return f"Return-Path: <{mail_from}>\r\n".encode("utf-8", "surrogateescape")


# --- the envelope of Queue/, Drop/ and Pickup/ files ---------------------------------------------


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
    """IIS-style envelope lines: `x-sender:` and one `x-receiver:` per recipient."""
    lines = [f"x-sender: {mail_from}\r\n"] + [f"x-receiver: {rcpt}\r\n" for rcpt in recipients]
    return "".join(lines).encode("utf-8", "surrogateescape")


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


def message_of(raw_file: bytes) -> bytes:
    """The message in a queue file, without its envelope lines."""
    _, _, offset = parse_envelope(raw_file[:MAX_ENVELOPE_OCTETS])
    return raw_file[offset:]


def read_queue_file(path: Path) -> QueueFile:
    """Parse a queue file's envelope; raises EnvelopeError if it has none."""
    with open(path, "rb") as file:
        head = file.read(MAX_ENVELOPE_OCTETS)
    mail_from, recipients, offset = parse_envelope(head)
    if mail_from is None or not recipients:
        raise EnvelopeError(f"{path.name} has no x-sender/x-receiver envelope")
    return QueueFile(path=path, mail_from=mail_from, recipients=tuple(recipients), body_offset=offset)


# --- Maildir delivery ---------------------------------------------------------------------------


def deliver_to_mailboxes(maildirs: Collection[Path], chunks: Iterable[bytes]) -> str:
    """Write one message durably into the new/ of every Maildir and return its unique name.

    The message is written and synced once, in the first Maildir's tmp/, then hard-linked into each
    new/ (one fsync of the data for any number of recipients), and each new/ is synced. Either every
    new/ gets the complete message or, on failure, none keeps it; our tmp/ file is removed either way.
    """
    maildirs = [check_maildir(Path(m)) for m in maildirs]
    name = new_unique_name()
    tmp_path = maildirs[0] / "tmp" / name
    published: list[Path] = []
    try:
        write_synced(tmp_path, chunks, mode=0o600)
        for index, maildir in enumerate(maildirs):
            new_path = maildir / "new" / name
            try:
                os.link(tmp_path, new_path)
            except OSError as error:
                if error.errno != errno.EXDEV and error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                # Another filesystem, or no hard links: a copy of our own for this Maildir.
                own_tmp = maildir / "tmp" / f"{name}.{index}"
                write_synced(own_tmp, [tmp_path.read_bytes()], mode=0o600)
                try:
                    os.rename(own_tmp, new_path)
                except BaseException:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(own_tmp)
                    raise
            published.append(new_path)
        for directory in {p.parent for p in published}:
            fsync_dir(directory)
        for maildir in maildirs:
            note_folder_changed(maildir)
    except BaseException:
        # The caller will report failure, so the sender retries: keep no copy anywhere.
        for new_path in published:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(new_path)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
    return name


def deliver(maildir: Path, chunks: Iterable[bytes]) -> str:
    """Write a message durably into `maildir`/new and return its unique name.

    The file appears in new/ complete and synced, or not at all; our tmp/ file is removed either way.
    """
    return deliver_to_mailboxes([maildir], chunks)


# --- Drop/ and Queue/ -----------------------------------------------------------------------------


def drop(tmp_dir: Path, drop_dir: Path, mail_from: str, recipients: Sequence[str], chunks: Iterable[bytes]) -> Path:
    """Write an IIS-style Drop file (envelope lines, then the message) durably; return its path."""
    return write_durably(
        Path(tmp_dir), Path(drop_dir), unique_message_name(SUFFIX), [envelope_chunk(mail_from, recipients), *chunks]
    )


def ensure_dirs(home_dir: Path) -> None:
    """Create the server's Queue/, BadMail/, Pickup/ and temp folders if they are missing."""
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


def list_queue(home_dir: Path) -> list[str]:
    """Names of the complete message files in the Queue folder."""
    try:
        with os.scandir(Path(home_dir) / QUEUE_DIR) as entries:
            return sorted(e.name for e in entries if e.name.endswith(SUFFIX) and e.is_file())
    except FileNotFoundError:
        return []


def store_message(
    *,
    home_dir: Path,
    mail_from: str,
    chunks: Sequence[bytes],
    maildirs: Collection[Path] = (),
    drop_recipients: Sequence[str] = (),
    remote_recipients: Sequence[str] = (),
    create_dirs: bool = False,
    folder: str | None = None,
) -> None:
    """Store an accepted message for every kind of recipient, or for none of them.

    `chunks` is the message as accepted (our Received: line first). The Maildir copy gets a
    Return-Path: line before it; the Drop/ and Queue/ files get envelope lines. The Queue/ file is
    written last, so a failure takes back the Maildir and Drop/ copies already stored and the
    sender's retry stores the message once. `create_dirs` makes missing Maildirs and Drop/ first
    (the SMTP path needs none: its destinations come from a snapshot of existing mailboxes).
    `folder` files the Maildir copies in that folder of each mailbox (Maildir++ `.<folder>`, made
    if missing; JUNK_FOLDER for mail a spam score or an honoured DMARC quarantine sends there)
    instead of INBOX.
    """
    home = Path(home_dir)
    stored: list[Path] = []
    try:
        if maildirs and folder is not None:
            maildirs = [ensure_maildir(Path(maildir) / f".{folder}") for maildir in maildirs]
        if maildirs:
            if create_dirs:
                for maildir in maildirs:
                    ensure_maildir(maildir)
            name = deliver_to_mailboxes(maildirs, [return_path_line(mail_from), *chunks])
            stored += [Path(maildir) / "new" / name for maildir in maildirs]
        if drop_recipients:
            drop_dir = home / DROP_DIR
            if create_dirs:
                drop_dir.mkdir(parents=True, exist_ok=True)
            stored.append(drop(home / TMP_DIR, drop_dir, mail_from, drop_recipients, chunks))
        if remote_recipients:
            enqueue(home, mail_from, remote_recipients, chunks)
    except OSError:
        # The sender will retry the whole message: take back the copies already stored.
        for path in stored:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        raise


def stored_size_octets(mail_from: str, chunks: Iterable[bytes]) -> int:
    """The size of the Maildir copy `store_message` writes: for quota checks before it does."""
    return len(return_path_line(mail_from)) + sum(len(chunk) for chunk in chunks)


# --- BadMail/, and files leaving Queue/ or Pickup/ ------------------------------------------------


def remove_durably(path: Path) -> None:
    """Remove a Queue/ or Pickup/ file for good (the folder is synced); a missing file is no error."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fsync_dir(path.parent)


def to_badmail(home_dir: Path, name: str, message: bytes, report: str) -> Path:
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


class PickupRefusedError(ValueError):
    """A Pickup file that cannot be sent; it went to BadMail/ instead of the queue."""


def take_from_pickup(home_dir: Path, path: Path, parse: Callable[[bytes], tuple[str, list[str], bytes]]) -> str | None:
    """Move one Pickup/ file into Queue/; return its queue message id, or None if the file is gone.

    `parse` turns the file into (sender, recipients, message) or raises ValueError (UnicodeError
    included); such a file goes to BadMail/ with a `.bdr` saying why, leaves Pickup/, and
    PickupRefusedError is raised. The message is queued (durably) before the Pickup file goes: a crash
    in between sends it twice, never zero times.
    """
    home = Path(home_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        mail_from, recipients, message = parse(data)
    except ValueError as error:
        to_badmail(home, path.name, data, f"Pickup file {path.name} was not sent: {error}\r\n")
        remove_durably(path)
        raise PickupRefusedError(str(error)) from error
    message_id = enqueue(home, mail_from, recipients, [message])
    remove_durably(path)
    return message_id


# --- changes to stored messages (webmail, POP3) ---------------------------------------------------


def flags_of(file_name: str) -> str:
    """The flag letters of a Maildir file name ('' for a message still in new/ or without info)."""
    _, _, info = file_name.partition(INFO_SEPARATOR)
    return info[len(INFO_PREFIX) :] if info.startswith(INFO_PREFIX) else ""


def set_flags(path: Path, flags: Iterable[str]) -> Path | None:
    """Give the message file at `path` (in new/ or cur/ of a Maildir) exactly these flags.

    The file moves into cur/ as `<unique name>:2,<flags>`; the unique name, and so POP3's UIDL,
    stays. Returns the new path, or None if the file is gone (moved or deleted meanwhile).
    """
    path = Path(path)
    folder = check_maildir(path.parent.parent)
    # Maildir flags are kept in ASCII order (cr.yp.to/proto/maildir.html).
    new_name = f"{unique_part(path.name)}{INFO_SEPARATOR}{INFO_PREFIX}{''.join(sorted(set(flags)))}"
    target = folder / "cur" / new_name
    if target != path:
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return None
        fsync_dir(target.parent)
        if path.parent != target.parent:
            fsync_dir(path.parent)
        note_folder_changed(folder)
    return target


def mark_read(path: Path, seen: bool = True) -> Path | None:
    """Add (or with `seen=False` remove) the S flag of the message file at `path`, keeping its others."""
    flags = set(flags_of(Path(path).name))
    flags.discard(SEEN_FLAG)
    if seen:
        flags.add(SEEN_FLAG)
    return set_flags(path, flags)


def save_sent_copy(folder: Path, message_bytes: bytes) -> str:
    """Keep a copy of a sent message in the Maildir `folder` (created if missing), already read.

    Returns its unique name. The copy is durable in new/ before it moves to cur/ with the S flag.
    """
    root = ensure_maildir(folder)
    uid = deliver(root, [message_bytes])
    mark_read(root / "new" / uid)
    return uid


def delete_messages(maildir: Path, uids: Collection[str]) -> int:
    """Remove the messages with these UIDs from new/ and cur/, durably; return how many files went."""
    check_maildir(Path(maildir))
    wanted = set(uids)
    removed_count = 0
    for subdir in MESSAGE_SUBDIRS:
        directory = Path(maildir) / subdir
        removed_here = 0
        for entry in message_entries(directory):
            if unique_part(entry.name) in wanted:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed_here += 1
        if removed_here:
            fsync_dir(directory)
        removed_count += removed_here
    if removed_count:
        note_folder_changed(maildir)
    return removed_count


class MaildirMailbox:
    """Serve one Maildir to a POP3 session: the listing, reads by UID, deletions after QUIT."""

    def __init__(self, maildir: Path, *, on_release: Callable[[], None] | None = None) -> None:
        self.maildir = check_maildir(Path(maildir))
        self._on_release = on_release
        self._listed_by_uid: dict[str, StoredMessage] = {}

    def messages(self) -> list[StoredMessage]:
        """List the messages now, oldest first, and remember them for reads."""
        listing = list_messages(self.maildir)
        self._listed_by_uid = {message.uid: message for message in listing}
        return listing

    def read(self, uid: str) -> bytes:
        """Return the stored bytes of a listed message."""
        return read_message(self._listed_by_uid[uid])

    def commit_deletions(self, uids: Collection[str]) -> None:
        """Remove these messages for good."""
        delete_messages(self.maildir, uids)

    def release(self) -> None:
        """Run the release callback (unlock the mailbox) once."""
        callback, self._on_release = self._on_release, None
        if callback is not None:
            callback()


# --- IMAP: small state files in a Maildir ----------------------------------------------------------

# A folder's change stamp: every writer here that adds, renames or removes a message file of a
# folder appends one octet to it afterwards. Its (inode, size) then tells a reader whether anything
# changed since it looked, where a directory's mtime cannot: two changes within one clock tick give
# the same mtime (see `servers.mailfolders`, which reads it after its own STORE and EXPUNGE). Not
# fsynced: only live processes read it, and after a restart everyone looks afresh. Replaced by an
# empty file (a new inode, so every reader sees a change) when it reaches its bound.
CHANGE_STAMP_NAME = ".mailconsole-changes"
CHANGE_STAMP_MAX_OCTETS = 64 * 1024


def change_stamp_path(folder: Path | str) -> str:
    return os.path.join(os.fspath(folder), CHANGE_STAMP_NAME)


def change_stamp(folder: Path | str) -> tuple[int, int] | None:
    """(inode, size) of the folder's change stamp, None if it has none yet."""
    try:
        stat = os.stat(change_stamp_path(folder))
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_size


def note_folder_changed(folder: Path | str) -> None:
    """Tell readers of the Maildir folder `folder` that its messages changed (after the change)."""
    path = change_stamp_path(folder)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError:
        return  # the folder itself is gone (or not ours to write): its directories' times still tell
    try:
        os.write(fd, b".")
        size = os.fstat(fd).st_size
    except OSError:
        return
    finally:
        os.close(fd)
    if size >= CHANGE_STAMP_MAX_OCTETS:
        fresh = os.path.join(os.fspath(folder), f"{CHANGE_STAMP_NAME}.{os.getpid()}.{new_unique_name()}")
        try:
            os.close(os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.rename(fresh, path)
        except OSError:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(fresh)


def replace_file_durably(path: Path, data: bytes) -> os.stat_result:
    """Replace (or create) the small file `path` with `data`, atomically; return the new file's stat.

    Written as a dot-file in the Maildir's tmp/ (or beside it), fsynced, renamed over `path`, and
    the folder fsynced: a reader sees the old content or the new, never a mix, even after a crash.
    """
    path = Path(path)
    # In the Maildir's tmp/ when it has one: a crash's leftover is then swept like any other.
    tmp_dir = path.parent / "tmp"
    if not tmp_dir.is_dir() or tmp_dir.is_symlink():
        tmp_dir = path.parent
    tmp_path = tmp_dir / f".{path.name.lstrip('.')}.{unique_message_name('.tmp')}"
    try:
        write_synced(tmp_path, [data], mode=0o600)
        stat = os.stat(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
        raise
    fsync_dir(path.parent)
    return stat


def append_synced(path: Path, data: bytes) -> None:
    """Append `data` to the existing file `path` and fsync it; the caller holds the file's lock."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def truncate_synced(path: Path, length: int) -> None:
    """Cut the file `path` to `length` octets (a log's torn last line) and fsync it."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, length)
        os.fsync(fd)
    finally:
        os.close(fd)


# --- IMAP: messages written, copied, moved, flagged and removed -----------------------------------


def maildir_file_name(unique_name: str, flag_letters: str | None) -> str:
    """`<unique name>:2,<letters in ASCII order>` for cur/, or the bare unique name (None) for new/."""
    if flag_letters is None:
        return unique_name
    return f"{unique_name}{INFO_SEPARATOR}{INFO_PREFIX}{''.join(sorted(set(flag_letters)))}"


def _subdir_for(file_name: str) -> str:
    return "cur" if INFO_SEPARATOR in file_name else "new"


def store_in_folder(
    folder: Path, chunks: Iterable[bytes], *, flag_letters: str | None = None, mtime_ns: int | None = None
) -> Path:
    """Write a message durably into the Maildir `folder` (IMAP APPEND); return its path.

    tmp/, fsync (with `mtime_ns` as its delivery time if given), then a link into cur/ with its flags,
    or into new/ when `flag_letters` is None; the directory that gained it is fsynced before we
    return, and our tmp/ file is removed either way.
    """
    folder = check_maildir(Path(folder))
    unique_name = new_unique_name()
    tmp_path = folder / "tmp" / unique_name
    file_name = maildir_file_name(unique_name, flag_letters)
    target = folder / _subdir_for(file_name) / file_name
    try:
        write_synced(tmp_path, chunks, mode=0o600, mtime_ns=mtime_ns)
        os.link(tmp_path, target)
        fsync_dir(target.parent)
        note_folder_changed(folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
    return target


def _link_or_copy(source: Path, target: Path, tmp_dir: Path) -> None:
    try:
        os.link(source, target)
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # No hard links here: a copy of our own, with the source's delivery time.
        tmp_path = tmp_dir / target.name.split(INFO_SEPARATOR, 1)[0]
        try:
            write_synced(tmp_path, [source.read_bytes()], mode=0o600, mtime_ns=os.stat(source).st_mtime_ns)
            os.link(tmp_path, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)


def copy_into_folder(sources: Sequence[Path], folder: Path) -> list[Path | None]:
    """Copy message files into the Maildir `folder` under new unique names, flags kept (IMAP COPY).

    Each copy is a hard link (same data, same delivery time; a copy where links fail). Returns the
    new path of each source, None for a source gone meanwhile. All or nothing: on a failure the
    copies already made are removed. The folders that gained files are fsynced before we return.
    """
    folder = check_maildir(Path(folder))
    made: list[Path | None] = []
    try:
        for source in sources:
            source = Path(source)
            _, _, info = source.name.partition(INFO_SEPARATOR)
            file_name = new_unique_name() + (INFO_SEPARATOR + info if info else "")
            target = folder / _subdir_for(file_name) / file_name
            try:
                _link_or_copy(source, target, folder / "tmp")
            except FileNotFoundError:
                if not folder.is_dir():
                    raise
                made.append(None)
                continue
            made.append(target)
        for directory in {path.parent for path in made if path is not None}:
            fsync_dir(directory)
        if any(path is not None for path in made):
            note_folder_changed(folder)
    except BaseException:
        for path in made:
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        raise
    return made


def move_into_folder(moves: Sequence[tuple[Path, str]], folder: Path) -> list[Path | None]:
    """Move message files into the Maildir `folder` (IMAP MOVE, RENAME INBOX), each as (source, unique name).

    The unique name is the source's own unless the caller needs a new one (or a file of that name is
    there already: then a new one; read the names from the returned paths); flags are kept. Each file
    is renamed into place, atomically: after a crash it is in one folder or the other, never both or
    neither. Both directories are fsynced before we return. Returns the new paths, None for a source
    gone meanwhile (another reader renamed or removed it).
    """
    folder = check_maildir(Path(folder))
    moved: list[Path | None] = []
    touched: set[Path] = set()
    for source, unique_name in moves:
        source = Path(source)
        _, _, info = source.name.partition(INFO_SEPARATOR)
        file_name = unique_name + (INFO_SEPARATOR + info if info else "")
        target = folder / _subdir_for(file_name) / file_name
        if os.path.lexists(target):  # rename would replace it: the message gets a new name instead
            file_name = new_unique_name() + (INFO_SEPARATOR + info if info else "")
            target = folder / _subdir_for(file_name) / file_name
        try:
            os.rename(source, target)
        except FileNotFoundError:
            if not folder.is_dir():
                raise
            moved.append(None)
            continue
        moved.append(target)
        touched.update((target.parent, source.parent))
    for directory in touched:
        fsync_dir(directory)
    for changed_folder in {directory.parent for directory in touched}:
        note_folder_changed(changed_folder)
    return moved


def set_flags_of_files(folder: Path | str, changes: Sequence[tuple[str, str, str]]) -> list[str | None]:
    """Give message files of the Maildir `folder` exactly these flag letters (IMAP STORE).

    Each change is (subdir, file name, letters); returns each file's new name (in cur/). Like
    `set_flags` for many files at once: each moves into cur/ as `<unique name>:2,<letters>` (the
    unique name stays) and each directory involved is fsynced once. None for a file gone meanwhile
    (deleted, or renamed by another reader: its flags changed under us).
    """
    renamed: list[str | None] = []
    touched: set[str] = set()
    root = os.fspath(folder)
    cur = os.path.join(root, "cur")
    # Strings, not Path arithmetic, per file: a STORE of 1,000 messages spent more in pathlib than in rename.
    for subdir, name, letters in changes:
        new_name = f"{name.partition(INFO_SEPARATOR)[0]}{INFO_SEPARATOR}{INFO_PREFIX}{''.join(sorted(set(letters)))}"
        if subdir != "cur" or new_name != name:
            try:
                os.rename(f"{root}/{subdir}/{name}", f"{cur}/{new_name}")
            except FileNotFoundError:
                renamed.append(None)
                continue
            touched.add(subdir)
        renamed.append(new_name)
    if touched:
        for touched_subdir in {"cur", *touched}:
            fsync_dir(Path(root, touched_subdir))
        note_folder_changed(root)
    return renamed


def remove_message_files(paths: Sequence[Path]) -> list[bool]:
    """Remove these message files for good (IMAP EXPUNGE); whether each was there to remove.

    Exact paths: a file renamed meanwhile (another reader changed its flags) is left alone. Each
    folder that lost files is fsynced before we return.
    """
    removed: list[bool] = []
    touched: set[Path] = set()
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            removed.append(False)
            continue
        removed.append(True)
        touched.add(Path(path).parent)
    for directory in touched:
        fsync_dir(directory)
    for changed_folder in {directory.parent for directory in touched}:
        note_folder_changed(changed_folder)
    return removed


# --- IMAP: folders ----------------------------------------------------------------------------------


def remove_folder(folder: Path) -> None:
    """Delete the Maildir++ folder `folder` and every message in it (IMAP DELETE).

    It is first renamed out of sight (`..deleted-*`, which no folder name can be), so it disappears
    at once and as a whole; then its files go. Symbolic links are never followed.
    """
    folder = check_maildir(Path(folder))
    if folder.is_symlink() or not folder.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such folder", str(folder))
    doomed = folder.parent / f"..deleted-{unique_message_name('')}"
    os.rename(folder, doomed)
    fsync_dir(folder.parent)
    shutil.rmtree(doomed, ignore_errors=True)


def rename_folder(old: Path, new: Path) -> None:
    """Rename a Maildir++ folder (IMAP RENAME); refuses to replace anything already at `new`."""
    old, new = check_maildir(Path(old)), check_maildir(Path(new))
    if os.path.lexists(new):
        raise FileExistsError(errno.EEXIST, "a folder of that name exists", str(new))
    os.rename(old, new)
    fsync_dir(new.parent)
