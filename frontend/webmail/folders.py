"""The webmail's folders are the mailbox's IMAP folders: every change goes through `servers.mailfolders`.

The webmail opens the signed-in mailbox as a `MaildirAccount`, exactly as the IMAP service does,
so a folder created, renamed or deleted here, a message moved, copied, expunged or saved as a draft
here, is what an IMAP client sees (and the other way round: the index follows the disk). Folder
names stay IMAP names (modified UTF-7, "." between levels) in URLs, the index and on disk; people
see them decoded, and a name typed in Unicode is encoded before it reaches the store.

After each change the message index is updated in the same request, so the next page needs no
rescan: moves keep the row (its folder and unique name change), copies get rows of their own, a
renamed folder's rows follow it, a deleted folder's rows go.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction
from django.db.models import Count, Q
from django.utils.translation import gettext, gettext_lazy

from servers import uidmap
from servers.imap import mutf7
from servers.imap.store_api import (
    HIERARCHY_DELIMITER,
    INBOX,
    BadFolderNameError,
    FolderInfo,
    StoreError,
)
from servers.maildir import INFO_SEPARATOR, MailboxLock
from servers.mailfolders import DELETED_FLAG, SPECIAL_FOLDERS, MaildirAccount, MaildirFolder, canonical_folder_name
from servers.models import Mailbox

from . import index
from .models import DRAFTS, TRASH, MailboxIndexState, MessageIndex

# The sidebar's order: INBOX, the special-use folders, then the user's own.
FIXED_FOLDERS = (INBOX, *SPECIAL_FOLDERS)
USER_FOLDER_RANK = len(FIXED_FOLDERS)
DRAFT_FLAGS = frozenset({"\\Draft", "\\Seen"})
# What people read for the fixed folders (their IMAP names stay English on disk, as clients expect).
FIXED_LABELS = {
    INBOX: gettext_lazy("Inbox"),
    "Sent": gettext_lazy("Sent"),
    "Drafts": gettext_lazy("Drafts"),
    "Trash": gettext_lazy("Trash"),
    "Junk": gettext_lazy("Junk"),
    "Archive": gettext_lazy("Archive"),
}


class MailboxBusyError(StoreError):
    """A POP3 session holds the mailbox: messages do not leave INBOX under its listing."""


def account_for(mailbox: Mailbox) -> MaildirAccount:
    """The mailbox's folders as the IMAP service opens them (the special-use ones made at the first look)."""
    return MaildirAccount(
        Path(mailbox.maildir),
        mailbox.address,
        quota_octets=mailbox.quota_bytes,
        quota_messages=mailbox.quota_messages,
    )


# --- names ---------------------------------------------------------------------------------------


def display_name(name: str) -> str:
    """A folder's IMAP name as people read it (modified UTF-7 decoded; a name not in it shown as it is)."""
    if name in FIXED_LABELS:
        return str(FIXED_LABELS[name])
    try:
        return mutf7.decode(name)
    except mutf7.MUtf7Error:
        return name


def imap_name(typed: str) -> str:
    """The IMAP name of a name typed in Unicode; BadFolderNameError if the store could not use it."""
    typed = typed.strip()
    if not typed:
        raise BadFolderNameError(gettext("the folder name is empty"))
    return canonical_folder_name(mutf7.encode(typed))


def is_fixed(name: str) -> bool:
    """INBOX and the special-use folders: never renamed or deleted from the webmail."""
    return name in FIXED_FOLDERS


def _collation_key(text: str) -> str:
    """Accents set aside, case folded: "Ärger" sorts beside "Arbeit", not after "Zebra"."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).casefold()


def _sort_key(name: str) -> tuple:
    levels = name.split(HIERARCHY_DELIMITER)
    first = FIXED_FOLDERS.index(levels[0]) if levels[0] in FIXED_FOLDERS else USER_FOLDER_RANK
    return tuple(
        (first if depth == 0 else USER_FOLDER_RANK, _collation_key(display_name(level)), level)
        for depth, level in enumerate(levels)
    )


@dataclass(frozen=True)
class FolderEntry:
    """One line of the sidebar: a folder, or a level that only exists as the parent of others."""

    name: str  # the IMAP name
    label: str  # its last level, decoded
    title: str  # the whole name, decoded
    depth: int
    selectable: bool
    fixed: bool
    special_use: str  # "sent", "drafts", ... or ""
    unread: int = 0
    total: int = 0

    @property
    def slug(self) -> str:
        """Its part of the folder page's URL ("inbox" for INBOX)."""
        return "inbox" if self.name == INBOX else self.name

    @property
    def test_id(self) -> str:
        """`folder-inbox`, `folder-sent`, ... for the fixed folders; `folder-user` for the others."""
        if self.name == INBOX:
            return "folder-inbox"
        return f"folder-{self.special_use}" if self.special_use and self.depth == 0 else "folder-user"


def _entry(info: FolderInfo, unread: int, total: int) -> FolderEntry:
    levels = info.name.split(HIERARCHY_DELIMITER)
    return FolderEntry(
        name=info.name,
        label=display_name(levels[-1]),
        title=display_name(info.name),
        depth=len(levels) - 1,
        selectable=info.selectable,
        fixed=is_fixed(info.name),
        special_use=info.special_use.value.lstrip("\\").lower() if info.special_use else "",
        unread=unread,
        total=total,
    )


def folder_tree(mailbox: Mailbox, *, current: str | None = None) -> tuple[list[FolderEntry], index.Refresh]:
    """The sidebar's folders in order, with unread and total counts from the index (refreshed first).

    Returns the refresh of `current` too (how many of its messages are still to index).
    """
    infos = sorted(account_for(mailbox).list_folders(), key=lambda info: _sort_key(info.name))
    selectable = [info.name for info in infos if info.selectable]
    refreshed = index.refresh_folders(mailbox.pk, Path(mailbox.maildir), selectable, current=current)
    counts = {
        row["folder"]: row
        for row in MessageIndex.objects.filter(mailbox_id=mailbox.pk)
        .values("folder")
        .annotate(total=Count("id"), unread=Count("id", filter=Q(is_read=False)))
    }
    # A folder an IMAP client renamed or deleted: its rows go (a rename's new folder is indexed anew).
    gone = set(counts) - set(selectable)
    if gone:
        MessageIndex.objects.filter(mailbox_id=mailbox.pk, folder__in=gone).delete()
        MailboxIndexState.objects.filter(mailbox_id=mailbox.pk, folder__in=gone).delete()
    entries = [
        _entry(info, counts.get(info.name, {}).get("unread", 0), counts.get(info.name, {}).get("total", 0))
        for info in infos
    ]
    return entries, refreshed


def existing_folder(mailbox: Mailbox, name: str) -> str:
    """The canonical name of an existing folder of this mailbox; NoSuchFolderError (or BadFolderNameError)."""
    account = account_for(mailbox)
    canonical = canonical_folder_name(name)
    account.selectable_path(canonical)
    return canonical


# --- folders: create, rename, delete ------------------------------------------------------------


def create_folder(mailbox: Mailbox, typed: str, parent: str = "") -> str:
    """Create the folder `typed` (Unicode, "." makes levels) under `parent`; return its IMAP name."""
    name = imap_name(typed)
    if parent:
        name = canonical_folder_name(f"{existing_folder(mailbox, parent)}{HIERARCHY_DELIMITER}{name}")
    account = account_for(mailbox)
    account.create_folder(name)
    account.subscribe(name, True)  # IMAP clients that list subscribed folders only show it too
    return name


def rename_folder(mailbox: Mailbox, old: str, typed: str) -> str:
    """Rename a user folder (and the folders below it) to the Unicode name `typed`; return the new name."""
    old = canonical_folder_name(old)
    if is_fixed(old):
        raise StoreError(gettext("%(folder)s cannot be renamed") % {"folder": display_name(old)})
    new = imap_name(typed)
    account = account_for(mailbox)
    account.rename_folder(old, new)
    account.subscribe(old, False)
    account.subscribe(new, True)
    old_tree = MessageIndex.objects.in_folder_tree(mailbox.pk, old)
    with transaction.atomic():
        # Rows left under the new names (folders gone behind the index's back) give way, and the scan
        # states of both trees go: the next refresh finds the moved rows where their files now are.
        MessageIndex.objects.in_folder_tree(mailbox.pk, new).exclude(pk__in=old_tree.values("pk")).delete()
        MailboxIndexState.objects.filter(mailbox_id=mailbox.pk).filter(
            Q(folder=old) | Q(folder__startswith=f"{old}.") | Q(folder=new) | Q(folder__startswith=f"{new}.")
        ).delete()
        for folder in set(old_tree.values_list("folder", flat=True)):
            MessageIndex.objects.for_mailbox(mailbox.pk, folder).update(folder=new + folder[len(old) :])
    return new


def delete_folder(mailbox: Mailbox, name: str) -> None:
    """Delete a user folder and its messages (the folders below it stay, as IMAP's DELETE leaves them)."""
    name = canonical_folder_name(name)
    if is_fixed(name):
        raise StoreError(gettext("%(folder)s cannot be deleted") % {"folder": display_name(name)})
    account = account_for(mailbox)
    account.delete_folder(name)
    account.subscribe(name, False)
    MessageIndex.objects.filter(mailbox_id=mailbox.pk, folder=name).delete()
    MailboxIndexState.objects.filter(mailbox_id=mailbox.pk, folder=name).delete()


def message_count(mailbox: Mailbox, name: str) -> int:
    """How many messages the folder holds now (from the store, not the index)."""
    return account_for(mailbox).status(canonical_folder_name(name)).messages


# --- messages: move, copy, delete for ever ------------------------------------------------------


def _uids_of(folder: MaildirFolder, rows: Sequence[MessageIndex]) -> dict[str, int]:
    """The IMAP UIDs of these index rows in the opened folder, by unique name (rows gone are left out)."""
    wanted = {row.uid for row in rows}
    return {record.key: record.uid for record in folder.messages() if record.key in wanted}


def _keys_by_uid(account: MaildirAccount, folder: str, uids: Sequence[int]) -> dict[int, str]:
    """The unique names the folder's UID map gave these UIDs: what the store named the moved or copied files."""
    path = account.selectable_path(folder)
    view = uidmap.uid_map(path, uidvalidity_counter=account.uidvalidity_counter).view()
    wanted = set(uids)
    return {entry.uid: key for key, entry in (view.entries.items() if view else ()) if entry.uid in wanted}


def _file_name(key: str, source_file_name: str) -> str:
    """Where the store put a moved or copied file: its flags kept, in cur/ if it had any, else new/."""
    _, separator, info = source_file_name.partition("/")[2].partition(INFO_SEPARATOR)
    return f"cur/{key}{INFO_SEPARATOR}{info}" if separator else f"new/{key}"


def _transfer(mailbox: Mailbox, rows: Sequence[MessageIndex], target: str, *, copy: bool) -> list[MessageIndex]:
    """Move or copy index rows' messages (all from one folder) into `target`; return the target's rows."""
    if not rows:
        return []
    source = rows[0].folder
    account = account_for(mailbox)
    target = canonical_folder_name(target)
    account.selectable_path(target)
    if target == source:
        return list(rows)
    maildir = Path(mailbox.maildir)
    lock = MailboxLock(maildir) if source == INBOX and not copy else None
    if lock is not None and not lock.acquire():
        raise MailboxBusyError(gettext("a mail program is connected to this mailbox over POP3"))
    try:
        for row in rows:
            index.locate(row, maildir)  # where each file is now: its flags decide where its copy goes
        folder = account.open_folder(source, read_only=copy)
        try:
            uids = _uids_of(folder, rows)
            if copy:
                _, pairs = folder.copy_to(list(uids.values()), target)
            else:
                _, pairs = folder.move_to(list(uids.values()), target)
                # The source's UID map lets go of the names that left now, so a move back (undo) may
                # keep them: the store gives a name its map still knows a new one, and POP3 a new UIDL.
                folder.refresh()
        finally:
            folder.close()
    finally:
        if lock is not None:
            lock.release()
    new_uid_by_old = dict(pairs)
    keys = _keys_by_uid(account, target, list(new_uid_by_old.values()))
    done: list[MessageIndex] = []
    with transaction.atomic():
        for row in rows:
            old_uid = uids.get(row.uid)
            key = keys.get(new_uid_by_old.get(old_uid, 0)) if old_uid else None
            if key is None:
                if not copy:
                    row.delete()  # gone from disk meanwhile: the index forgets it
                continue
            file_name = _file_name(key, row.file_name)
            # A row left for that name in the target (its file went behind the index's back) gives way.
            MessageIndex.objects.for_mailbox(mailbox.pk, target).filter(uid=key).delete()
            if copy:
                row.pk = None
                row._state.adding = True
            row.folder, row.uid, row.file_name = target, key, file_name
            row.save()
            done.append(row)
    return done


def move_messages(mailbox: Mailbox, rows: Sequence[MessageIndex], target: str) -> list[MessageIndex]:
    """Move messages (IMAP MOVE: same unique name where it can) into `target`; return their rows there."""
    return _transfer(mailbox, rows, target, copy=False)


def copy_messages(mailbox: Mailbox, rows: Sequence[MessageIndex], target: str) -> list[MessageIndex]:
    """Copy messages (IMAP COPY: new unique names, the same flags) into `target`; return the copies' rows."""
    return _transfer(mailbox, rows, target, copy=True)


def expunge_messages(mailbox: Mailbox, rows: Sequence[MessageIndex]) -> int:
    """Delete messages for ever, as an IMAP client does (\\Deleted, then EXPUNGE); return how many went."""
    if not rows:
        return 0
    account = account_for(mailbox)
    folder = account.open_folder(rows[0].folder, read_only=False)
    try:
        uids = list(_uids_of(folder, rows).values())
        folder.store_flags(uids, frozenset({DELETED_FLAG}), "add")
        expunged = folder.expunge(uids)
    finally:
        folder.close()
    MessageIndex.objects.filter(pk__in=[row.pk for row in rows]).delete()
    return len(expunged)


def empty_trash(mailbox: Mailbox) -> int:
    """Delete every message in Trash for ever (indexed yet or not); return how many went."""
    folder = account_for(mailbox).open_folder(TRASH, read_only=False)
    try:
        uids = [record.uid for record in folder.messages()]
        folder.store_flags(uids, frozenset({DELETED_FLAG}), "add")
        expunged = folder.expunge(uids)
    finally:
        folder.close()
    # A message that reached Trash meanwhile changed its directory: the next refresh indexes it again.
    MessageIndex.objects.for_mailbox(mailbox.pk, TRASH).delete()
    return len(expunged)


# --- drafts ----------------------------------------------------------------------------------------


def save_draft(mailbox: Mailbox, message: bytes, replacing: MessageIndex | None = None) -> MessageIndex | None:
    """Store a draft in Drafts with \\Draft (as IMAP clients do), removing the draft it replaces; return its row."""
    account = account_for(mailbox)
    _, uid = account.append(DRAFTS, message, DRAFT_FLAGS, None)
    if replacing is not None:
        discard_draft(mailbox, replacing)
    index.refresh(mailbox.pk, Path(mailbox.maildir), DRAFTS, force=True)
    key = _keys_by_uid(account, DRAFTS, [uid]).get(uid)
    return MessageIndex.objects.for_mailbox(mailbox.pk, DRAFTS).filter(uid=key).first()


def discard_draft(mailbox: Mailbox, draft: MessageIndex) -> None:
    """Remove a draft once it was sent or saved anew (only a message of Drafts)."""
    if draft.folder == DRAFTS:
        expunge_messages(mailbox, [draft])
