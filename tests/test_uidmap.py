"""The persistent UID map of a Maildir folder, on real temporary directories (no database)."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path

import pytest

from servers import mailstore, uidmap
from servers.maildir import crlf_size_octets, ensure_maildir
from servers.uidmap import UIDLIST_NAME, UidMap

# No database here: the store on temporary directories; nothing to prove on a second backend.
pytestmark = pytest.mark.backend_independent

MESSAGE = b"From: bob@example.com\nSubject: hello\n\nHello Alice\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return ensure_maildir(tmp_path / "alice")


def deliver(folder: Path, mtime_s: int | None = None) -> str:
    name = mailstore.deliver(folder, [MESSAGE])
    if mtime_s is not None:
        os.utime(folder / "new" / name, ns=(mtime_s * 10**9, mtime_s * 10**9))
    return name


def fresh_map(folder: Path) -> UidMap:
    """A map object of its own: what another process opening the folder would have."""
    return UidMap(folder, uidvalidity_counter=folder / uidmap.UIDVALIDITY_COUNTER_NAME)


def uids_of(folder: Path) -> dict[str, int]:
    view, _ = fresh_map(folder).sync()
    return {key: entry.uid for key, entry in view.entries.items()}


def test_uids_are_given_in_delivery_order_and_persist_across_reopens(folder):
    late = deliver(folder, mtime_s=2_000_000_000)
    early = deliver(folder, mtime_s=1_000_000_000)

    first, _ = fresh_map(folder).sync()
    again, _ = fresh_map(folder).sync()

    assert {key: entry.uid for key, entry in first.entries.items()} == {early: 1, late: 2}
    assert again == first
    assert first.next_uid == 3


def test_the_map_keeps_the_crlf_size_and_delivery_time_so_a_fresh_reader_reads_no_message(folder, monkeypatch):
    name = deliver(folder, mtime_s=1_500_000_000)
    unterminated = mailstore.deliver(folder, [b"Subject: x\r\n\r\nno line end\nat the end"])
    fresh_map(folder).sync()

    def no_reads(*args: object) -> int:
        raise AssertionError("a message file was read")

    monkeypatch.setattr(uidmap, "_cached_crlf_size", no_reads)
    view, _ = fresh_map(folder).sync()

    entry = view.entries[name]
    assert entry.size_octets == crlf_size_octets(folder / "new" / name) == len(MESSAGE.replace(b"\n", b"\r\n"))
    assert entry.mtime_ns == 1_500_000_000 * 10**9
    assert view.entries[unterminated].size_octets == crlf_size_octets(folder / "new" / unterminated)


def test_a_message_moved_from_new_to_cur_keeps_its_uid(folder):
    name = deliver(folder)
    before = uids_of(folder)
    mailstore.mark_read(folder / "new" / name)

    assert uids_of(folder) == before == {name: 1}


def test_uids_of_removed_messages_are_never_given_again(folder):
    first, second = deliver(folder, 1_000_000_000), deliver(folder, 1_000_000_001)
    assert uids_of(folder) == {first: 1, second: 2}

    mailstore.delete_messages(folder, [second])
    assert uids_of(folder) == {first: 1}
    third = deliver(folder)

    assert uids_of(folder) == {first: 1, third: 3}
    assert fresh_map(folder).view().next_uid == 4


def test_a_compacted_map_keeps_every_uid_and_the_next_uid(folder, monkeypatch):
    monkeypatch.setattr(uidmap, "COMPACT_MIN_DEAD_LINES", 4)
    names = [deliver(folder, 1_000_000_000 + n) for n in range(6)]
    uids_of(folder)
    mailstore.delete_messages(folder, names[:4])
    size_before = (folder / UIDLIST_NAME).stat().st_size

    after = uids_of(folder)

    assert after == {names[4]: 5, names[5]: 6}
    assert (folder / UIDLIST_NAME).stat().st_size < size_before  # rewritten without the dead lines
    assert fresh_map(folder).view().next_uid == 7


def test_a_corrupt_map_is_rebuilt_with_a_larger_uidvalidity(folder):
    deliver(folder)
    old, _ = fresh_map(folder).sync()
    (folder / UIDLIST_NAME).write_bytes(b"MAILCONSOLE-UIDLIST 1 nonsense\n3 x\n")

    new, _ = fresh_map(folder).sync()

    assert new.uidvalidity > old.uidvalidity
    assert [entry.uid for entry in new.entries.values()] == [1]


def test_a_missing_map_is_rebuilt_with_a_larger_uidvalidity_even_within_the_same_second(folder):
    deliver(folder)
    old, _ = fresh_map(folder).sync()
    (folder / UIDLIST_NAME).unlink()

    new, _ = fresh_map(folder).sync()

    assert new.uidvalidity > old.uidvalidity


def test_a_torn_last_line_from_a_crashed_writer_is_cut_off_and_the_map_kept(folder):
    name = deliver(folder)
    old, _ = fresh_map(folder).sync()
    with open(folder / UIDLIST_NAME, "ab") as file:
        file.write(b"2 40 17000")  # a writer died mid-line, before telling anyone UID 2

    second = deliver(folder)
    new, _ = fresh_map(folder).sync()

    assert new.uidvalidity == old.uidvalidity
    assert {key: entry.uid for key, entry in new.entries.items()} == {name: 1, second: 2}
    assert (folder / UIDLIST_NAME).read_bytes().endswith(b"\n")


def test_the_map_is_a_dot_file_that_maildir_readers_skip(folder):
    deliver(folder)
    uids_of(folder)

    assert (folder / UIDLIST_NAME).is_file()
    assert all(not name.startswith(".") for sub in ("new", "cur") for name in os.listdir(folder / sub))


def _deliver_and_sync(folder: str, rounds: int) -> None:
    """Another process: delivers and numbers messages while others do the same."""
    for _ in range(rounds):
        mailstore.deliver(Path(folder), [MESSAGE])
        UidMap(Path(folder)).sync()


def test_concurrent_threads_and_a_process_never_give_one_uid_twice_or_two_uids_to_one_message(folder):
    context = multiprocessing.get_context("spawn")
    other = context.Process(target=_deliver_and_sync, args=(str(folder), 30))
    other.start()
    seen: list[dict[str, int]] = []
    delivered = [30]  # the other process's
    seen_lock = threading.Lock()

    def reader() -> None:
        own = UidMap(folder)  # each thread a map object of its own, as separate processes have
        rounds = 0
        # Until the other process is done too, so they overlap however slowly it starts.
        while rounds < 20 or other.is_alive():
            mailstore.deliver(folder, [MESSAGE])
            view, _ = own.sync()
            rounds += 1
            with seen_lock:
                seen.append({key: entry.uid for key, entry in view.entries.items()})
        with seen_lock:
            delivered.append(rounds)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other.join(timeout=60)
    assert other.exitcode == 0

    final = uids_of(folder)
    total = sum(delivered)
    assert len(final) == total
    assert sorted(final.values()) == list(range(1, total + 1))  # every message one UID, none twice, none lost
    for snapshot in seen:  # whatever any reader saw agrees with the end result
        assert all(final[key] == uid for key, uid in snapshot.items())


def test_dot_files_and_names_a_map_line_cannot_hold_get_no_uid(folder):
    name = deliver(folder)
    for odd in (".hidden", "with space:2,S", "tab\there", "new\nline"):
        (folder / "cur" / odd).write_bytes(MESSAGE)

    assert uids_of(folder) == {name: 1}
    assert uids_of(folder) == {name: 1}  # and the map reads back


def test_a_map_forgotten_by_the_process_cache_reads_back_the_same_uids(tmp_path, monkeypatch):
    monkeypatch.setattr(uidmap, "MAX_MAPS", 1)
    first, second = ensure_maildir(tmp_path / "first"), ensure_maildir(tmp_path / "second")
    names = {folder: deliver(folder) for folder in (first, second)}
    before = {folder: uidmap.uid_map(folder).sync()[0] for folder in (first, second)}  # second evicts first

    again = uidmap.uid_map(first)

    assert again is not uidmap.uid_map(second)
    assert again.sync()[0] == before[first]
    assert before[first].entries[names[first]].uid == 1


def test_a_map_read_from_its_file_keeps_one_copy_of_each_name_and_still_drops_by_uid(folder):
    first, second, third = (deliver(folder, 1_000_000_000 + n) for n in range(3))
    fresh_map(folder).sync()
    reader = fresh_map(folder)  # reads the file: its names come from the file, then from the listing
    listing = uidmap.list_folder(folder)
    view, _ = reader.sync(listing)
    assert all(key is next(k for k in listing if k == key) for key in view.entries)

    mailstore.delete_messages(folder, [second])
    fresh_map(folder).sync()  # another process drops it: a drop line the reader has not seen
    mailstore.delete_messages(folder, [first])
    view, _ = reader.sync()  # reads the drop line, then drops the other itself

    assert {key: entry.uid for key, entry in view.entries.items()} == {third: 3}
    assert uids_of(folder) == {third: 3}
