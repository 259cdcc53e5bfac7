"""The Maildir store, on real temporary directories."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest

from servers import maildir as maildir_module
from servers import mailstore
from servers.maildir import crlf_size_octets, ensure_maildir, list_messages, read_message, unique_part
from servers.mailstore import MaildirMailbox, delete_messages, deliver

MESSAGE = b"From: bob@example.com\r\nSubject: hello\r\n\r\nHello Alice\r\n"


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    return ensure_maildir(tmp_path / "example.com" / "alice")


def set_mtime(path: Path, seconds: int) -> None:
    os.utime(path, ns=(seconds * 10**9, seconds * 10**9))


def move_to_cur(maildir: Path, name: str, flags: str = "S") -> Path:
    target = maildir / "cur" / f"{name}:2,{flags}"
    os.rename(maildir / "new" / name, target)
    return target


def expected_octets(content: bytes) -> int:
    """An independent statement of the rule: bare LF becomes CRLF, a last line gets its CRLF."""
    normalised = re.sub(rb"(?<!\r)\n", b"\r\n", content)
    if normalised and not normalised.endswith(b"\n"):
        normalised += b"\r\n"
    return len(normalised)


def test_ensure_maildir_creates_tmp_new_and_cur(tmp_path):
    path = ensure_maildir(tmp_path / "a" / "b")
    assert sorted(p.name for p in path.iterdir()) == ["cur", "new", "tmp"]


def test_ensure_maildir_keeps_what_is_already_there(maildir):
    name = deliver(maildir, [MESSAGE])
    ensure_maildir(maildir)
    assert os.listdir(maildir / "new") == [name]


def test_delivery_puts_the_whole_message_in_new_and_leaves_tmp_empty(maildir):
    name = deliver(maildir, [MESSAGE[:10], MESSAGE[10:], b""])

    assert os.listdir(maildir / "tmp") == []
    assert os.listdir(maildir / "new") == [name]
    assert (maildir / "new" / name).read_bytes() == MESSAGE


def test_delivered_names_are_unique_and_short_enough_for_uidl(maildir):
    names = {deliver(maildir, [MESSAGE]) for _ in range(50)}
    assert len(names) == 50
    # RFC 1939 section 7: a unique-id is 1 to 70 characters from 0x21 to 0x7E.
    assert all(re.fullmatch(r"[\x21-\x7e]{1,70}", name) and ":" not in name for name in names)


def test_a_failed_delivery_leaves_nothing_in_new_or_tmp(maildir):
    def chunks():
        yield b"Subject: half\r\n"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        deliver(maildir, chunks())

    assert os.listdir(maildir / "tmp") == []
    assert os.listdir(maildir / "new") == []


def test_a_failed_directory_sync_takes_the_message_back_out_of_new(maildir, monkeypatch):
    def failing_fsync_dir(directory: Path) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(mailstore, "fsync_dir", failing_fsync_dir)

    with pytest.raises(OSError):
        deliver(maildir, [MESSAGE])

    assert os.listdir(maildir / "tmp") == []
    assert os.listdir(maildir / "new") == []


def test_delivery_syncs_the_file_before_linking_it_and_the_directory_after(maildir, monkeypatch):
    events = []
    real_fsync, real_link = os.fsync, os.link
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync file"), real_fsync(fd)))
    monkeypatch.setattr(os, "link", lambda src, dst: (events.append("link"), real_link(src, dst)))
    monkeypatch.setattr(mailstore, "fsync_dir", lambda directory: events.append(f"fsync {directory.name}/"))

    deliver(maildir, [MESSAGE])

    assert events == ["fsync file", "link", "fsync new/"]


def test_delivery_falls_back_to_rename_where_hard_links_are_refused(maildir, monkeypatch):
    def refuse_link(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse_link)

    name = deliver(maildir, [MESSAGE])

    assert (maildir / "new" / name).read_bytes() == MESSAGE
    assert os.listdir(maildir / "tmp") == []


def test_the_listing_covers_new_and_cur_oldest_delivery_first(maildir):
    oldest, middle, newest = (deliver(maildir, [MESSAGE]) for _ in range(3))
    set_mtime(maildir / "new" / newest, 3_000)
    set_mtime(maildir / "new" / oldest, 1_000)
    set_mtime(maildir / "new" / middle, 2_000)
    move_to_cur(maildir, middle)

    listing = list_messages(maildir)

    assert [message.uid for message in listing] == [oldest, middle, newest]
    assert listing[1].path == maildir / "cur" / f"{middle}:2,S"
    assert [message.mtime_ns for message in listing] == [1_000 * 10**9, 2_000 * 10**9, 3_000 * 10**9]


def test_a_message_keeps_its_uid_when_it_moves_from_new_to_cur(maildir):
    name = deliver(maildir, [MESSAGE])
    before = list_messages(maildir)
    move_to_cur(maildir, name, flags="RS")

    after = list_messages(maildir)

    assert [m.uid for m in before] == [m.uid for m in after] == [name]


def test_uids_are_the_same_for_a_fresh_listing_after_a_restart(maildir):
    for _ in range(3):
        deliver(maildir, [MESSAGE])
    assert [m.uid for m in list_messages(maildir)] == [m.uid for m in list_messages(Path(str(maildir)))]


def test_a_message_caught_in_both_new_and_cur_is_listed_once(maildir):
    name = deliver(maildir, [MESSAGE])
    os.link(maildir / "new" / name, maildir / "cur" / f"{name}:2,")

    listing = list_messages(maildir)

    assert [m.uid for m in listing] == [name]
    assert listing[0].path.parent.name == "cur"


def test_dot_files_and_subdirectories_are_not_messages(maildir):
    (maildir / "new" / ".hidden").write_bytes(MESSAGE)
    (maildir / "cur" / "subdir").mkdir()
    name = deliver(maildir, [MESSAGE])
    assert [m.uid for m in list_messages(maildir)] == [name]


def test_unique_part_drops_the_info_suffix():
    assert unique_part("1700000000.P1R2.host:2,RS") == "1700000000.P1R2.host"
    assert unique_part("1700000000.P1R2.host") == "1700000000.P1R2.host"


def test_the_size_of_a_crlf_message_is_its_file_size(maildir):
    name = deliver(maildir, [MESSAGE])
    assert list_messages(maildir)[0].size_octets == len(MESSAGE) == (maildir / "new" / name).stat().st_size


def test_the_size_counts_each_bare_lf_as_crlf(maildir):
    deliver(maildir, [b"Subject: lf\n\nline one\nline two\r\n"])
    assert list_messages(maildir)[0].size_octets == len(b"Subject: lf\r\n\r\nline one\r\nline two\r\n")


def test_the_size_counts_the_crlf_sent_after_an_unterminated_last_line(maildir):
    deliver(maildir, [b"Subject: x\r\n\r\nno end"])
    assert list_messages(maildir)[0].size_octets == len(b"Subject: x\r\n\r\nno end\r\n")


def test_an_empty_message_has_size_zero(maildir):
    deliver(maildir, [])
    assert list_messages(maildir)[0].size_octets == 0


@pytest.mark.parametrize(
    "content",
    [b"", b"\n", b"\r\n", b"\r", b"a\r", b"a\r\r\n", b"\n\n\r\n\n", b"a\rb\nc\r\nd", b"\r\n\r\n\r\r\n\n\r"],
)
@pytest.mark.parametrize("chunk_octets", [1, 2, 3, 64 * 1024])
def test_the_size_is_exact_whatever_the_read_chunk_boundaries(tmp_path, content, chunk_octets):
    path = tmp_path / "message"
    path.write_bytes(content)
    assert crlf_size_octets(path, chunk_octets=chunk_octets) == expected_octets(content)


def test_read_message_returns_the_stored_bytes(maildir):
    deliver(maildir, [b"Subject: lf\n\nkept as stored\n"])
    assert read_message(list_messages(maildir)[0]) == b"Subject: lf\n\nkept as stored\n"


def test_read_message_follows_a_message_flagged_after_the_listing(maildir):
    name = deliver(maildir, [MESSAGE])
    (listed,) = list_messages(maildir)
    move_to_cur(maildir, name)

    assert read_message(listed) == MESSAGE


def test_reading_a_message_deleted_elsewhere_raises_file_not_found(maildir):
    name = deliver(maildir, [MESSAGE])
    (listed,) = list_messages(maildir)
    os.unlink(maildir / "new" / name)

    with pytest.raises(FileNotFoundError):
        read_message(listed)


def test_delete_messages_removes_them_from_new_and_cur_and_keeps_the_rest(maildir):
    in_new, in_cur, kept = (deliver(maildir, [MESSAGE]) for _ in range(3))
    move_to_cur(maildir, in_cur)

    removed = delete_messages(maildir, [in_new, in_cur])

    assert removed == 2
    assert [m.uid for m in list_messages(maildir)] == [kept]
    assert os.listdir(maildir / "cur") == []


def test_deleting_a_message_that_is_already_gone_is_not_an_error(maildir):
    name = deliver(maildir, [MESSAGE])
    assert delete_messages(maildir, [name, "1.P1R0.nowhere"]) == 1
    assert delete_messages(maildir, [name]) == 0


def test_a_deleted_uid_is_not_given_to_a_later_message(maildir):
    first = deliver(maildir, [MESSAGE])
    delete_messages(maildir, [first])
    assert deliver(maildir, [MESSAGE]) != first


def test_the_mailbox_handle_reads_by_uid_and_commits_deletions(maildir):
    names = [deliver(maildir, [b"Subject: %d\r\n\r\n" % n]) for n in range(2)]
    mailbox = MaildirMailbox(maildir)
    listing = mailbox.messages()
    by_uid = {message.uid: message for message in listing}

    assert mailbox.read(names[0]) == b"Subject: 0\r\n\r\n"
    assert set(by_uid) == set(names)
    mailbox.commit_deletions([names[0]])
    assert [m.uid for m in list_messages(maildir)] == [names[1]]


def test_the_mailbox_handle_runs_its_release_callback_once(maildir):
    releases = []
    mailbox = MaildirMailbox(maildir, on_release=lambda: releases.append(1))
    mailbox.release()
    mailbox.release()
    assert releases == [1]


def test_a_second_listing_takes_sizes_from_memory_even_after_a_move_to_cur(maildir, monkeypatch):
    name = deliver(maildir, [b"Subject: lf\n\nbody\n"])
    first = list_messages(maildir)
    move_to_cur(maildir, name)

    def must_not_read(path, *args, **kwargs):
        raise AssertionError(f"{path} was read again")

    monkeypatch.setattr(maildir_module, "crlf_size_octets", must_not_read)
    assert [m.size_octets for m in list_messages(maildir)] == [m.size_octets for m in first]


def test_a_file_rewritten_in_place_is_measured_again(maildir):
    name = deliver(maildir, [b"Subject: a\r\n\r\nshort\r\n"])
    assert list_messages(maildir)[0].size_octets == len(b"Subject: a\r\n\r\nshort\r\n")
    path = maildir / "new" / name
    path.write_bytes(b"Subject: a\n\nmuch longer body\n")
    set_mtime(path, 1_800_000_000)
    assert list_messages(maildir)[0].size_octets == len(b"Subject: a\r\n\r\nmuch longer body\r\n")


def test_the_quota_counts_every_folder_not_only_inbox(maildir):
    deliver(maildir, [MESSAGE])
    archive = ensure_maildir(maildir / ".Archive")
    for _ in range(3):
        deliver(archive, [MESSAGE])
    ensure_maildir(maildir / "..deleted-Old")  # a folder on its way out is no longer counted
    deliver(maildir / "..deleted-Old", [MESSAGE])

    octets, messages = maildir_module.mailbox_usage(maildir)

    assert messages == 4
    assert octets == 4 * len(MESSAGE)
    assert maildir_module.would_exceed_quota(maildir, None, 4, 0, 1)
    assert not maildir_module.would_exceed_quota(maildir, None, 5, 0, 1)
