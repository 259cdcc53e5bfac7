"""IMAP folders over Maildir++ (servers.mailfolders), on real temporary directories (no database)."""

from __future__ import annotations

import errno
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from servers import mailfolders, mailstore, uidmap
from servers.imap.store_api import (
    INBOX,
    BadFolderNameError,
    FolderExistsError,
    NoSuchFolderError,
    OverQuotaError,
    SpecialUse,
    StoreError,
)
from servers.maildir import MailboxLock, ensure_maildir
from servers.mailfolders import MaildirAccount, UidValidityChangedError

# No database here: nothing to prove on a second backend.
pytestmark = pytest.mark.backend_independent

MESSAGE = b"From: bob@example.com\r\nSubject: hello\r\n\r\nHello Alice\r\n"


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    return ensure_maildir(tmp_path / "Mailbox" / "example.com" / "alice")


@pytest.fixture
def account(maildir: Path) -> MaildirAccount:
    return MaildirAccount(maildir, "alice@example.com", quota_octets=None)


def deliver(maildir: Path, count: int = 1) -> list[str]:
    return [mailstore.deliver(maildir, [MESSAGE]) for _ in range(count)]


def files_of(folder: Path) -> list[str]:
    return sorted(os.listdir(folder / "new") + os.listdir(folder / "cur"))


# --- folders ----------------------------------------------------------------------------------------


def test_the_first_sign_in_creates_and_subscribes_the_special_use_folders(account, maildir):
    folders = account.list_folders()

    assert [f.name for f in folders] == [INBOX, "Archive", "Drafts", "Junk", "Sent", "Trash"]
    assert {f.name: f.special_use for f in folders}["Sent"] is SpecialUse.SENT
    assert all(f.subscribed and f.selectable for f in folders)
    assert (maildir / ".Sent" / "cur").is_dir()
    assert (maildir / "subscriptions").read_text().split("\n")[:1] == [INBOX]


def test_creating_a_nested_folder_lists_its_missing_parent_as_not_selectable(account, maildir):
    account.create_folder("Work.2026")

    listed = {f.name: f for f in account.list_folders()}
    assert (maildir / ".Work.2026" / "new").is_dir()
    assert not (maildir / ".Work").exists()
    assert listed["Work"].selectable is False and listed["Work"].has_children is True
    assert listed["Work.2026"].selectable is True and listed["Work.2026"].has_children is False
    with pytest.raises(FolderExistsError):
        account.create_folder("Work.2026")


def test_deleting_a_folder_with_children_keeps_its_name_as_a_parent_only(account, maildir):
    account.create_folder("Work")
    account.create_folder("Work.2026")

    account.delete_folder("Work")

    listed = {f.name: f for f in account.list_folders()}
    assert listed["Work"].selectable is False and (maildir / ".Work.2026").is_dir()
    with pytest.raises(StoreError):  # RFC 3501 6.3.4: a \Noselect name with children cannot be deleted
        account.delete_folder("Work")
    with pytest.raises(NoSuchFolderError):
        account.delete_folder("Nothing")


def test_a_folder_deleted_while_selected_shows_every_message_expunged(account, maildir):
    account.create_folder("Doomed")
    account.append("Doomed", MESSAGE, frozenset(), None)
    account.append("Doomed", MESSAGE, frozenset(), None)
    folder = account.open_folder("Doomed", read_only=False)

    account.delete_folder("Doomed")

    assert folder.refresh().expunged == [1, 2]
    assert not (maildir / ".Doomed").exists()
    assert [name for name in os.listdir(maildir) if "deleted" in name] == []


def test_inbox_and_the_special_use_folders_cannot_be_deleted(account):
    for name in ("INBOX", "inbox", "Sent", "Trash"):
        with pytest.raises(StoreError):
            account.delete_folder(name)


def test_renaming_a_folder_moves_its_children_and_keeps_uids(account, maildir):
    account.create_folder("A")
    account.create_folder("A.x")
    uidvalidity, uid = account.append("A.x", MESSAGE, frozenset(), None)

    account.rename_folder("A", "B")

    assert not (maildir / ".A").exists() and not (maildir / ".A.x").exists()
    folder = account.open_folder("B.x", read_only=True)
    assert (folder.uidvalidity, [r.uid for r in folder.messages()]) == (uidvalidity, [uid])
    with pytest.raises(BadFolderNameError):
        account.rename_folder("B", "B.inside")
    with pytest.raises(FolderExistsError):
        account.rename_folder("B.x", "Sent")


def test_renaming_inbox_moves_its_messages_into_the_new_folder_and_leaves_inbox_empty(account, maildir):
    keys = deliver(maildir, 3)

    account.rename_folder("INBOX", "Old")

    assert files_of(maildir) == []
    old = account.open_folder("Old", read_only=True)
    assert sorted(r.key for r in old.messages()) == sorted(keys)
    assert [r.uid for r in old.messages()] == [1, 2, 3]
    assert list(account.open_folder("INBOX", read_only=True).messages()) == []


@pytest.mark.parametrize(
    "name", ["../x", "a/b", ".hidden", "a..b", "a\x01b", "x" * 300, "", "a\\b", "..", "a.", "Work/../../etc"]
)
def test_hostile_folder_names_are_refused_and_nothing_is_made(account, maildir, name):
    before = sorted(os.listdir(maildir.parent))
    inside = sorted(os.listdir(maildir))

    for attempt in (
        lambda: account.create_folder(name + ".child"),
        lambda: account.open_folder(name, read_only=True),
        lambda: account.rename_folder("Sent", name) if name else account.rename_folder("", "x"),
        lambda: account.append(name, MESSAGE, frozenset(), None),
        lambda: account.subscribe(name, True),
    ):
        with pytest.raises(BadFolderNameError):
            attempt()

    assert sorted(os.listdir(maildir.parent)) == before
    assert sorted(os.listdir(maildir)) == inside


def test_a_name_taken_by_a_file_that_is_not_a_folder_is_refused(account, maildir):
    assert MailboxLock(maildir).acquire()  # the POP3 lock file .pop3.lock would be the folder pop3.lock

    with pytest.raises(BadFolderNameError):
        account.create_folder("pop3.lock")
    assert (maildir / ".pop3.lock").is_file()


def test_a_folder_that_is_a_symbolic_link_is_neither_listed_nor_opened(account, maildir, tmp_path):
    elsewhere = ensure_maildir(tmp_path / "elsewhere")
    os.symlink(elsewhere, maildir / ".Linked")
    account.create_folder("Real")
    os.rename(maildir / ".Real" / "cur", maildir / ".Real" / "cur-away")
    os.symlink(elsewhere / "cur", maildir / ".Real" / "cur")

    names = [f.name for f in account.list_folders()]
    assert "Linked" not in names and "Real" not in names
    for name in ("Linked", "Real"):
        with pytest.raises((BadFolderNameError, NoSuchFolderError)):
            account.open_folder(name, read_only=True)


def test_subscriptions_are_kept_one_name_a_line(account, maildir):
    account.create_folder("Lists")
    account.subscribe("Lists", True)
    account.subscribe("Trash", False)

    names = (maildir / "subscriptions").read_text().splitlines()
    assert "Lists" in names and "Trash" not in names
    assert {f.name: f.subscribed for f in account.list_folders()}["Lists"] is True


# --- messages and flags -------------------------------------------------------------------------------


def test_flags_round_trip_through_file_names_and_unknown_letters_are_kept(account, maildir):
    (key,) = deliver(maildir)
    os.rename(maildir / "new" / key, maildir / "cur" / f"{key}:2,P")  # "passed", which IMAP does not show
    folder = account.open_folder("INBOX", read_only=False)

    changed = folder.store_flags([1], frozenset({"\\Seen", "\\Flagged", "\\Recent"}), "add")

    assert [sorted(r.flags) for r in changed] == [["\\Flagged", "\\Seen"]]
    assert files_of(maildir) == [f"{key}:2,FPS"]
    folder.store_flags([1], frozenset({"\\Answered", "\\Draft", "\\Deleted"}), "set")
    assert files_of(maildir) == [f"{key}:2,DPRT"]
    folder.store_flags([1], frozenset({"\\Deleted"}), "remove")
    reopened = account.open_folder("INBOX", read_only=True)
    assert reopened.messages()[0].flags == {"\\Answered", "\\Draft"}


def test_a_store_on_a_message_another_session_just_flagged_keeps_both_changes(account, maildir):
    (key,) = deliver(maildir)
    mine = account.open_folder("INBOX", read_only=False)
    theirs = account.open_folder("INBOX", read_only=False)
    theirs.store_flags([1], frozenset({"\\Flagged"}), "add")  # renames the file under mine's view

    changed = mine.store_flags([1], frozenset({"\\Seen"}), "add")

    assert files_of(maildir) == [f"{key}:2,FS"]
    assert [r.flags for r in changed] == [frozenset({"\\Flagged", "\\Seen"})]


def test_keywords_are_stored_as_letters_with_a_dovecot_keywords_list(account, maildir):
    (key,) = deliver(maildir)
    folder = account.open_folder("INBOX", read_only=False)

    folder.store_flags([1], frozenset({"$Junk", "\\Seen", "bad keyword"}), "add")

    assert files_of(maildir) == [f"{key}:2,Sa"]
    assert (maildir / "dovecot-keywords").read_text() == "0 $Junk\n"
    assert account.open_folder("INBOX", read_only=True).messages()[0].flags == {"$Junk", "\\Seen"}


def test_a_read_only_folder_refuses_changes(account, maildir):
    deliver(maildir)
    folder = account.open_folder("INBOX", read_only=True)

    with pytest.raises(StoreError):
        folder.store_flags([1], frozenset({"\\Seen"}), "add")
    with pytest.raises(StoreError):
        folder.expunge()


def test_refresh_reports_new_mail_other_sessions_flags_and_nothing_when_nothing_changed(account, maildir):
    deliver(maildir)
    mine = account.open_folder("INBOX", read_only=False)
    theirs = account.open_folder("INBOX", read_only=False)
    assert not mine.refresh()

    (second,) = deliver(maildir)
    theirs.store_flags([1], frozenset({"\\Seen"}), "add")
    changes = mine.refresh()

    assert [(r.uid, r.key) for r in changes.added] == [(2, second)]
    assert [(r.uid, r.flags) for r in changes.flags_changed] == [(1, frozenset({"\\Seen"}))]
    assert changes.expunged == []
    assert mine.uidnext == 3


def test_a_message_the_webmail_marks_read_is_the_same_message_with_a_new_flag(account, maildir):
    (key,) = deliver(maildir)
    folder = account.open_folder("INBOX", read_only=True)

    mailstore.mark_read(maildir / "new" / key)  # new/ -> cur/<key>:2,S, as the webmail does
    changes = folder.refresh()

    assert changes.expunged == [] and changes.added == []
    assert [(r.uid, r.key, r.flags) for r in changes.flags_changed] == [(1, key, frozenset({"\\Seen"}))]


def test_an_expunge_in_one_session_appears_in_another_and_a_new_session_sees_the_result(account, maildir):
    deliver(maildir, 2)
    mine = account.open_folder("INBOX", read_only=False)
    theirs = account.open_folder("INBOX", read_only=True)
    mine.store_flags([1], frozenset({"\\Deleted"}), "add")
    assert mine.expunge() == [1]

    assert theirs.refresh().expunged == [1]
    assert [r.uid for r in account.open_folder("INBOX", read_only=True).messages()] == [2]
    assert fresh_uid_map_view(maildir) == {2}


def fresh_uid_map_view(maildir: Path) -> set[int]:
    """The UIDs another process would read from the map file."""
    view = uidmap.UidMap(maildir).view()
    assert view is not None
    return {entry.uid for entry in view.entries.values()}


def test_sessions_on_one_folder_share_one_listing_per_change(account, maildir, monkeypatch):
    deliver(maildir)
    sessions = [account.open_folder("INBOX", read_only=True) for _ in range(3)]
    (key,) = deliver(maildir)
    listings = []
    real_list_subdir = uidmap.list_subdir
    monkeypatch.setattr(
        uidmap, "list_subdir", lambda folder, subdir: listings.append(subdir) or real_list_subdir(folder, subdir)
    )

    added = [[r.key for r in session.refresh().added] for session in sessions]

    assert added == [[key]] * 3
    assert sorted(listings) == ["cur", "new"]  # one listing of the folder, for all three


def test_a_session_never_takes_an_older_look_over_its_own_change(account, maildir):
    deliver(maildir)
    mine = account.open_folder("INBOX", read_only=False)
    mailfolders._snapshots.pop(str(maildir))  # so that the next session makes a look of its own, newer
    account.open_folder("INBOX", read_only=True)  # another session's look, shared, before our change
    times = [(maildir / sub).stat().st_mtime_ns for sub in ("new", "cur")]
    mine.store_flags([1], frozenset({"\\Seen"}), "add")
    for sub, mtime_ns in zip(("new", "cur"), times, strict=True):  # as if within the same clock tick
        os.utime(maildir / sub, ns=(mtime_ns, mtime_ns))

    assert not mine.refresh()
    assert mine.messages()[0].flags == {"\\Seen"}


def _count_listings(monkeypatch) -> list[str]:
    listed: list[str] = []
    real_list_subdir = uidmap.list_subdir

    def counted(folder: Path, subdir: str) -> uidmap.Listing:
        listed.append(subdir)
        return real_list_subdir(folder, subdir)

    monkeypatch.setattr(uidmap, "list_subdir", counted)
    return listed


def _as_within_the_same_clock_tick(maildir: Path, times: list[int]) -> None:
    for sub, mtime_ns in zip(("new", "cur"), times, strict=True):
        os.utime(maildir / sub, ns=(mtime_ns, mtime_ns))


def test_a_refresh_after_our_own_store_and_expunge_lists_nothing(account, maildir, monkeypatch):
    deliver(maildir, 3)
    folder = account.open_folder("INBOX", read_only=False)
    listed = _count_listings(monkeypatch)

    folder.store_flags([1, 2], frozenset({"\\Deleted"}), "add")
    assert not folder.refresh()
    folder.store_flags([3], frozenset({"\\Flagged"}), "add")
    assert folder.expunge() == [1, 2]
    assert not folder.refresh()

    assert listed == []  # our view already is the folder: no directory was read again
    mailfolders._snapshots.clear()  # and a fresh look agrees with it
    fresh = account.open_folder("INBOX", read_only=True)
    assert [(r.uid, r.flags) for r in fresh.messages()] == [(3, frozenset({"\\Flagged"}))]


def test_a_change_by_another_writer_within_the_tick_of_our_store_still_shows(account, maildir):
    keys = deliver(maildir, 3)
    mine = account.open_folder("INBOX", read_only=False)
    mine.store_flags([1], frozenset({"\\Seen"}), "add")
    times = [(maildir / sub).stat().st_mtime_ns for sub in ("new", "cur")]

    mailstore.mark_read(maildir / "new" / keys[1])  # the webmail, within the same clock tick
    mailstore.MaildirMailbox(maildir).commit_deletions([keys[2]])  # and POP3
    (fourth,) = deliver(maildir)
    _as_within_the_same_clock_tick(maildir, times)

    changes = mine.refresh()
    assert [(r.uid, r.flags) for r in changes.flags_changed] == [(2, frozenset({"\\Seen"}))]
    assert changes.expunged == [3]
    assert [(r.uid, r.key) for r in changes.added] == [(4, fourth)]


def test_a_store_racing_another_writer_is_not_taken_as_the_whole_change(account, maildir, monkeypatch):
    keys = deliver(maildir, 2)
    mine = account.open_folder("INBOX", read_only=False)
    real_set_flags_of_files = mailstore.set_flags_of_files

    def and_the_webmail_meanwhile(folder, changes):
        mailstore.mark_read(maildir / "new" / keys[1])
        return real_set_flags_of_files(folder, changes)

    monkeypatch.setattr(mailstore, "set_flags_of_files", and_the_webmail_meanwhile)
    mine.store_flags([1], frozenset({"\\Flagged"}), "add")
    times = [(maildir / sub).stat().st_mtime_ns for sub in ("new", "cur")]
    _as_within_the_same_clock_tick(maildir, times)

    assert [(r.uid, r.flags) for r in mine.refresh().flags_changed] == [(2, frozenset({"\\Seen"}))]


def test_a_change_by_a_program_that_does_not_stamp_shows_once_the_directories_settle(account, maildir, monkeypatch):
    keys = deliver(maildir, 2)
    mine = account.open_folder("INBOX", read_only=False)
    mine.store_flags([1], frozenset({"\\Seen"}), "add")
    times = [(maildir / sub).stat().st_mtime_ns for sub in ("new", "cur")]
    os.rename(maildir / "new" / keys[1], maildir / "cur" / f"{keys[1]}:2,F")  # no change stamp
    _as_within_the_same_clock_tick(maildir, times)
    assert not mine.refresh()  # within the settle time, as our own write left it

    monkeypatch.setattr(mailfolders, "USAGE_SETTLE_NS", 0)
    mine.store_flags([1], frozenset({"\\Answered"}), "add")  # the window now ends at once
    assert [(r.uid, r.flags) for r in mine.refresh().flags_changed] == [(2, frozenset({"\\Flagged"}))]


def settle(maildir: Path, seconds_ago: int) -> None:
    """Give new/ and cur/ modification times long past (each call its own), as if changes had settled."""
    past_ns = (int(time.time()) - seconds_ago) * 10**9
    for sub in ("new", "cur"):
        os.utime(maildir / sub, ns=(past_ns, past_ns))


def test_new_mail_in_a_settled_folder_lists_new_alone_and_every_session_gets_the_same_answer(
    account, maildir, monkeypatch
):
    keys = deliver(maildir, 3)
    mailstore.mark_read(maildir / "new" / keys[0])
    settle(maildir, 100)
    mine = account.open_folder("INBOX", read_only=False)
    theirs = account.open_folder("INBOX", read_only=True)
    listed = []
    real_list_subdir = uidmap.list_subdir
    monkeypatch.setattr(
        uidmap, "list_subdir", lambda folder, subdir: listed.append(subdir) or real_list_subdir(folder, subdir)
    )

    (fourth,) = deliver(maildir)
    os.utime(maildir / "new", ns=((int(time.time()) - 90) * 10**9,) * 2)  # new/ changed, and settled since
    assert [(r.uid, r.key) for r in mine.refresh().added] == [(4, fourth)]
    assert [(r.uid, r.key) for r in theirs.refresh().added] == [(4, fourth)]
    assert listed == ["new"]  # cur/ is unchanged: its last listing serves

    mailstore.mark_read(maildir / "new" / fourth)  # as the webmail does: new/ -> cur/
    mailstore.MaildirMailbox(maildir).commit_deletions([keys[1]])  # as POP3 does
    settle(maildir, 80)
    changes = mine.refresh()
    assert [(r.uid, r.flags) for r in changes.flags_changed] == [(4, frozenset({"\\Seen"}))]
    assert changes.expunged == [2] and changes.added == []
    assert theirs.refresh().expunged == [2]

    mailfolders._snapshots.clear()  # a fresh process's look, from scratch, agrees
    fresh = account.open_folder("INBOX", read_only=True)
    assert [(r.uid, r.key, r.flags) for r in fresh.messages()] == [(r.uid, r.key, r.flags) for r in mine.messages()]


def test_a_pop3_deletion_appears_as_expunged(account, maildir):
    keys = deliver(maildir, 2)
    folder = account.open_folder("INBOX", read_only=False)

    mailbox = mailstore.MaildirMailbox(maildir)
    mailbox.messages()
    mailbox.commit_deletions([keys[0]])

    changes = folder.refresh()
    assert changes.expunged == [1]
    assert [r.uid for r in folder.messages()] == [2]


def test_expunge_removes_only_deleted_messages_among_those_named(account, maildir):
    deliver(maildir, 3)
    folder = account.open_folder("INBOX", read_only=False)
    folder.store_flags([1, 2, 3], frozenset({"\\Deleted"}), "add")

    assert folder.expunge([2, 3]) == [2, 3]
    assert [r.uid for r in folder.messages()] == [1]
    assert fresh_uid_map_view(maildir) == {1}  # dropped from the map at once, not at the next look
    assert len(files_of(maildir)) == 1
    assert not folder.refresh()  # the session already knows


def test_read_and_read_header_follow_a_file_renamed_by_another_reader_and_refuse_a_gone_one(account, maildir):
    (key,) = deliver(maildir)
    folder = account.open_folder("INBOX", read_only=True)
    mailstore.mark_read(maildir / "new" / key)

    assert folder.read(1) == MESSAGE
    assert folder.read_header(1) == b"From: bob@example.com\r\nSubject: hello\r\n\r\n"
    mailstore.delete_messages(maildir, [key])
    with pytest.raises(KeyError):
        folder.read(1)


def test_the_header_of_a_message_without_a_body_is_the_whole_message(account):
    headers_only = b"Subject: no body\r\n" + b"X-Filler: " + b"x" * 100_000 + b"\r\n"
    account.append("Drafts", headers_only, frozenset(), None)
    account.append("Drafts", b"Subject: bare\n\nLF line ends\n", frozenset(), None)
    drafts = account.open_folder("Drafts", read_only=True)

    assert drafts.read_header(1) == headers_only == drafts.read(1)
    assert drafts.read_header(2) == b"Subject: bare\n\n"


def test_append_returns_the_uid_and_keeps_flags_and_internal_date(account, maildir):
    uidvalidity, uid = account.append("Drafts", MESSAGE, frozenset({"\\Draft", "\\Seen"}), 1_700_000_000.0)
    _, plain = account.append("Drafts", MESSAGE, frozenset(), None)

    drafts = account.open_folder("Drafts", read_only=True)
    assert (
        (drafts.uidvalidity, [r.uid for r in drafts.messages()]) == (uidvalidity, [uid, plain]) == (uidvalidity, [1, 2])
    )
    first = drafts.messages()[0]
    assert first.flags == {"\\Draft", "\\Seen"} and first.internal_date == 1_700_000_000.0
    assert first.size_octets == len(MESSAGE)
    assert [name.endswith(":2,DS") for name in os.listdir(maildir / ".Drafts" / "cur")] == [True]
    assert len(os.listdir(maildir / ".Drafts" / "new")) == 1
    assert os.listdir(maildir / ".Drafts" / "tmp") == []
    with pytest.raises(NoSuchFolderError):
        account.append("Nowhere", MESSAGE, frozenset(), None)


def _append_many(maildir: str, count: int, results: Any) -> None:
    """Another process: appends to the Sent folder while others do too; reports its UIDs."""
    account = MaildirAccount(Path(maildir), "alice@example.com", quota_octets=None)
    results.put([account.append("Sent", MESSAGE, frozenset(), None)[1] for _ in range(count)])


def test_appends_from_threads_and_a_process_get_distinct_uids_that_the_map_keeps(account, maildir):
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    other = context.Process(target=_append_many, args=(str(maildir), 15, results))
    other.start()
    uids: list[int] = []
    lock = threading.Lock()

    def appender() -> None:
        mine: list[int] = []
        while len(mine) < 10 or other.is_alive():  # until the other process is done: they overlap
            mine.append(account.append("Sent", MESSAGE, frozenset(), None)[1])
        with lock:
            uids.extend(mine)

    threads = [threading.Thread(target=appender) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    uids.extend(results.get(timeout=60))
    other.join(timeout=60)

    assert other.exitcode == 0
    assert sorted(uids) == list(range(1, len(uids) + 1))  # none twice, none skipped
    sent = account.open_folder("Sent", read_only=True)
    assert [r.uid for r in sent.messages()] == sorted(uids)


def test_an_append_or_copy_whose_uid_cannot_be_recorded_leaves_no_message_behind(account, maildir, monkeypatch):
    deliver(maildir)
    inbox = account.open_folder("INBOX", read_only=False)
    account.open_folder("Archive", read_only=True)  # the Archive map exists: the next write is an append

    def disk_full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mailstore, "append_synced", disk_full)
    with pytest.raises(OSError):
        account.append("Archive", MESSAGE, frozenset(), None)
    with pytest.raises(OSError):
        inbox.copy_to([1], "Archive")
    monkeypatch.undo()

    assert files_of(maildir / ".Archive") == []
    assert account.append("Archive", MESSAGE, frozenset(), None)[1] == 1


def test_copy_returns_copyuid_pairs_and_keeps_flags(account, maildir):
    deliver(maildir, 3)
    inbox = account.open_folder("INBOX", read_only=False)
    inbox.store_flags([3], frozenset({"\\Flagged"}), "add")
    account.append("Archive", MESSAGE, frozenset(), None)

    uidvalidity, pairs = inbox.copy_to([3, 1, 99], "Archive")

    archive = account.open_folder("Archive", read_only=True)
    assert uidvalidity == archive.uidvalidity
    assert pairs == [(1, 2), (3, 3)]
    assert archive.messages()[2].flags == {"\\Flagged"}
    assert archive.read(2) == MESSAGE
    assert [r.uid for r in inbox.messages()] == [1, 2, 3]
    with pytest.raises(NoSuchFolderError):
        inbox.copy_to([1], "Nowhere")


def test_move_returns_pairs_removes_the_sources_and_moving_back_gives_new_uids(account, maildir):
    keys = deliver(maildir, 2)
    inodes = sorted(os.stat(maildir / "new" / key).st_ino for key in keys)
    inbox = account.open_folder("INBOX", read_only=False)

    _, pairs = inbox.move_to([1, 2], "Trash")

    assert pairs == [(1, 1), (2, 2)] and list(inbox.messages()) == [] and files_of(maildir) == []
    trash = account.open_folder("Trash", read_only=False)
    assert [r.key for r in trash.messages()] == keys  # the unique name (POP3's UIDL) moved along
    assert sorted(os.stat(maildir / ".Trash" / "new" / key).st_ino for key in keys) == inodes  # renamed, not copied
    _, back = trash.move_to([1], "INBOX")
    assert back == [(1, 3)]  # a new UID: never one the folder handed out before
    assert [r.uid for r in inbox.refresh().added] == [3]


def test_quota_refusals_leave_nothing_behind(maildir):
    deliver(maildir, 2)
    account = MaildirAccount(maildir, "alice@example.com", quota_octets=3 * len(MESSAGE), quota_messages=None)
    inbox = account.open_folder("INBOX", read_only=False)
    before = {sub: files_of(maildir / sub) for sub in ("", ".Archive")}

    with pytest.raises(OverQuotaError):
        account.append("INBOX", MESSAGE * 2, frozenset(), None)
    with pytest.raises(OverQuotaError):
        inbox.copy_to([1, 2], "Archive")

    assert {sub: files_of(maildir / sub) for sub in ("", ".Archive")} == before
    assert os.listdir(maildir / "tmp") == [] and os.listdir(maildir / ".Archive" / "tmp") == []
    assert inbox.move_to([1, 2], "Archive")[1] == [(1, 1), (2, 2)]  # a move does not grow the mailbox
    quota = account.quota()
    assert (quota.used_octets, quota.used_messages, quota.limit_octets) == (2 * len(MESSAGE), 2, 3 * len(MESSAGE))


def test_the_message_count_quota_is_enforced_too(maildir):
    deliver(maildir)
    account = MaildirAccount(maildir, "alice@example.com", quota_octets=None, quota_messages=1)

    with pytest.raises(OverQuotaError):
        account.append("Sent", MESSAGE, frozenset({"\\Seen"}), None)
    assert files_of(maildir / ".Sent") == []


def test_status_counts_without_selecting(account, maildir):
    deliver(maildir, 2)
    account.open_folder("INBOX", read_only=False).store_flags([2], frozenset({"\\Seen"}), "add")

    status = account.status("inbox")

    assert (status.messages, status.unseen, status.uidnext) == (2, 1, 3)
    assert status.size_octets == 2 * len(MESSAGE)


def test_a_map_rebuilt_under_an_open_folder_ends_the_selection(account, maildir):
    deliver(maildir)
    folder = account.open_folder("INBOX", read_only=True)
    (maildir / uidmap.UIDLIST_NAME).write_text("garbage\n")
    deliver(maildir)

    with pytest.raises(UidValidityChangedError):
        folder.refresh()


def test_watch_paths_are_the_folders_new_and_cur_and_its_change_stamp(account, maildir):
    folder = account.open_folder("Sent", read_only=True)

    assert folder.watch_paths() == [
        str(maildir / ".Sent" / "new"),
        str(maildir / ".Sent" / "cur"),
        str(maildir / ".Sent" / ".mailconsole-changes"),
    ]


def test_release_runs_the_callback_once(maildir):
    calls = []
    account = MaildirAccount(maildir, "alice@example.com", quota_octets=None, on_release=lambda: calls.append(1))

    account.release()
    account.release()

    assert calls == [1]


def test_a_junk_folder_made_by_delivery_before_the_first_sign_in_is_subscribed_as_junk(maildir):
    mailstore.store_message(
        home_dir=maildir.parent.parent.parent,
        mail_from="spammer@far.test",
        chunks=[MESSAGE],
        maildirs=[maildir],
        folder=mailstore.JUNK_FOLDER,
    )

    folders = {f.name: f for f in MaildirAccount(maildir, "alice@example.com", quota_octets=None).list_folders()}

    assert folders["Junk"].special_use is SpecialUse.JUNK and folders["Junk"].subscribed
    assert all(f.subscribed for f in folders.values())
    assert len(files_of(maildir / ".Junk")) == 1 and files_of(maildir) == []
