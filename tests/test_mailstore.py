"""The mail store, the only writer of accepted and stored messages, on real temporary directories."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from servers import mailstore, message_format
from servers.maildir import ensure_maildir, list_messages

MESSAGE = b"From: bob@example.com\r\nSubject: hello\r\n\r\nHello Alice\r\n"
RECEIVED = b"Received: from client ([192.0.2.1])\r\n\tby mx.example.com (MailConsole) with ESMTP id 1;\r\n"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A server's home as a running server has it: Maildirs, Drop/, Queue/ and the temp folder."""
    for sub in (mailstore.DROP_DIR, mailstore.QUEUE_DIR, mailstore.TMP_DIR):
        (tmp_path / sub).mkdir()
    return tmp_path


def maildir_of(home: Path, local_part: str) -> Path:
    return ensure_maildir(home / "Mailbox" / "example.com" / local_part)


def files_in(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


# --- the message format ---------------------------------------------------------------------------


def test_the_envelope_round_trips_sender_and_recipients_and_finds_the_message():
    recipients = ["bob@example.com", "josé@exämple.com"]
    raw = mailstore.envelope_chunk("alice@example.com", recipients) + MESSAGE

    assert mailstore.parse_envelope(raw) == ("alice@example.com", recipients, len(raw) - len(MESSAGE))
    assert mailstore.message_of(raw) == MESSAGE


def test_the_envelope_keeps_the_null_sender_and_reads_angle_brackets():
    assert mailstore.parse_envelope(mailstore.envelope_chunk("", ["bob@example.com"]))[0] == ""
    assert mailstore.parse_envelope(b"x-sender: <a@b.test>\nX-Receiver: <c@d.test>\nSubject: x\n\n") == (
        "a@b.test",
        ["c@d.test"],
        len(b"x-sender: <a@b.test>\nX-Receiver: <c@d.test>\n"),
    )


def test_a_file_without_an_envelope_is_refused_when_read_as_a_queue_file(tmp_path):
    path = tmp_path / "x.eml"
    path.write_bytes(MESSAGE)
    with pytest.raises(mailstore.EnvelopeError):
        mailstore.read_queue_file(path)


@pytest.mark.parametrize(
    ("message", "hops"),
    [
        (RECEIVED + MESSAGE, 1),
        (RECEIVED + RECEIVED.replace(b"Received:", b"RECEIVED:") + MESSAGE, 2),
        (b"Received: a\nReceived: b\nSubject: lf only\n\nReceived: in the body\n", 2),
        (b"Subject: none\r\n\r\nReceived: in the body\r\n", 0),
        (b"X-Received: not a trace header\r\n\r\n", 0),
    ],
)
def test_the_hop_count_is_the_received_headers_of_the_header_section(message, hops):
    assert message_format.hop_count(message) == hops


# --- Maildir delivery -------------------------------------------------------------------------------


def test_one_copy_is_written_and_hard_linked_into_every_recipients_new(home):
    maildirs = [maildir_of(home, name) for name in ("alice", "bob", "carol")]

    name = mailstore.deliver_to_mailboxes(maildirs, [MESSAGE[:7], MESSAGE[7:]])

    inodes = {os.stat(m / "new" / name).st_ino for m in maildirs}
    assert len(inodes) == 1 and os.stat(maildirs[0] / "new" / name).st_nlink == 3
    assert all((m / "new" / name).read_bytes() == MESSAGE and files_in(m / "tmp") == [] for m in maildirs)


def test_a_failed_link_takes_the_copies_already_linked_back_out(home, monkeypatch):
    maildirs = [maildir_of(home, name) for name in ("alice", "bob", "carol")]
    real_link, calls = os.link, []

    def link_fails_the_second_time(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.EIO, "I/O error")
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link_fails_the_second_time)

    with pytest.raises(OSError):
        mailstore.deliver_to_mailboxes(maildirs, [MESSAGE])

    assert all(files_in(m / "new") == [] and files_in(m / "tmp") == [] for m in maildirs)


def test_the_store_refuses_a_maildir_inside_another_maildirs_new(home):
    bob = maildir_of(home, "bob")
    with pytest.raises(OSError):
        mailstore.deliver_to_mailboxes([bob, bob / "new"], [MESSAGE])
    assert files_in(bob / "new") == []


# --- one accepted message for every kind of recipient ------------------------------------------------


def test_an_accepted_message_goes_to_maildirs_drop_and_queue_in_one_call(home):
    alice, bob = maildir_of(home, "alice"), maildir_of(home, "bob")

    mailstore.store_message(
        home_dir=home,
        mail_from="sender@far.test",
        chunks=[RECEIVED, MESSAGE],
        maildirs=[alice, bob],
        drop_recipients=["drop@example.com"],
        remote_recipients=["carol@far.test", "dave@far.test"],
    )

    [name] = files_in(alice / "new")
    stored = (alice / "new" / name).read_bytes()
    assert stored == b"Return-Path: <sender@far.test>\r\n" + RECEIVED + MESSAGE
    assert len(stored) == mailstore.stored_size_octets("sender@far.test", [RECEIVED, MESSAGE])
    assert files_in(bob / "new") == [name]
    [drop_name] = files_in(home / mailstore.DROP_DIR)
    drop_file = (home / mailstore.DROP_DIR / drop_name).read_bytes()
    assert mailstore.parse_envelope(drop_file)[:2] == ("sender@far.test", ["drop@example.com"])
    assert mailstore.message_of(drop_file) == RECEIVED + MESSAGE
    [queue_name] = mailstore.list_queue(home)
    queued = mailstore.read_queue_file(home / mailstore.QUEUE_DIR / queue_name)
    assert (queued.mail_from, queued.recipients) == ("sender@far.test", ("carol@far.test", "dave@far.test"))
    assert mailstore.message_of((home / mailstore.QUEUE_DIR / queue_name).read_bytes()) == RECEIVED + MESSAGE
    assert files_in(home / mailstore.TMP_DIR) == []


def test_a_failed_queue_write_takes_back_the_maildir_and_drop_copies(home, monkeypatch):
    alice = maildir_of(home, "alice")

    def queue_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mailstore, "enqueue", queue_full)

    with pytest.raises(OSError):
        mailstore.store_message(
            home_dir=home,
            mail_from="sender@far.test",
            chunks=[MESSAGE],
            maildirs=[alice],
            drop_recipients=["drop@example.com"],
            remote_recipients=["carol@far.test"],
        )

    assert files_in(alice / "new") == [] and files_in(alice / "tmp") == []
    assert files_in(home / mailstore.DROP_DIR) == [] and files_in(home / mailstore.TMP_DIR) == []


def test_every_file_is_synced_before_it_is_published_and_its_folder_after(home, monkeypatch):
    alice = maildir_of(home, "alice")
    events = []
    real_fsync, real_link, real_rename = os.fsync, os.link, os.rename
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(
        os, "link", lambda src, dst: (events.append(f"link {Path(dst).parent.name}/"), real_link(src, dst))
    )
    monkeypatch.setattr(
        os, "rename", lambda src, dst: (events.append(f"rename {Path(dst).parent.name}/"), real_rename(src, dst))
    )

    mailstore.store_message(
        home_dir=home,
        mail_from="",
        chunks=[MESSAGE],
        maildirs=[alice],
        drop_recipients=["drop@example.com"],
        remote_recipients=["carol@far.test"],
    )

    # The directory syncs are os.fsync of a directory fd: one after each publication.
    assert events == [
        "fsync",
        "link new/",
        "fsync",
        "fsync",
        "rename Drop/",
        "fsync",
        "fsync",
        "rename Queue/",
        "fsync",
    ]


def test_the_smtp_path_syncs_the_data_once_for_every_recipient_and_creates_no_folder(home, monkeypatch):
    maildirs = [maildir_of(home, name) for name in ("alice", "bob", "carol")]
    fsyncs, real_fsync = [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd)))
    monkeypatch.setattr(mailstore, "ensure_maildir", lambda path: pytest.fail("the SMTP path made a folder"))

    mailstore.store_message(home_dir=home, mail_from="a@b.test", chunks=[RECEIVED, MESSAGE], maildirs=maildirs)

    assert len(fsyncs) == 1 + len(maildirs)  # the message once, then each new/


def test_local_delivery_can_create_missing_maildirs_and_drop(tmp_path):
    (tmp_path / mailstore.TMP_DIR).mkdir()
    new_maildir = tmp_path / "Mailbox" / "example.com" / "new-user"

    mailstore.store_message(
        home_dir=tmp_path,
        mail_from="a@b.test",
        chunks=[MESSAGE],
        maildirs=[new_maildir],
        drop_recipients=["drop@example.com"],
        create_dirs=True,
    )

    assert len(files_in(new_maildir / "new")) == 1 and len(files_in(tmp_path / mailstore.DROP_DIR)) == 1


# --- BadMail/ and Pickup/ ------------------------------------------------------------------------------


def test_badmail_keeps_the_message_once_and_rewrites_the_report(home):
    mailstore.to_badmail(home, "m1.eml", MESSAGE, "first reason\r\n")
    path = mailstore.to_badmail(home, "m1.eml", b"not written again", "second reason\r\n")

    assert path.read_bytes() == MESSAGE
    assert (home / mailstore.BADMAIL_DIR / "m1.bdr").read_bytes() == b"second reason\r\n"
    assert files_in(home / mailstore.BADMAIL_DIR) == ["m1.bdr", "m1.eml"]


def test_a_pickup_file_is_queued_then_removed(home):
    pickup = home / mailstore.PICKUP_DIR
    pickup.mkdir()
    (pickup / "note.eml").write_bytes(MESSAGE)

    message_id = mailstore.take_from_pickup(home, pickup / "note.eml", lambda data: ("a@b.test", ["c@d.test"], data))

    assert mailstore.list_queue(home) == [f"{message_id}{mailstore.SUFFIX}"] and files_in(pickup) == []
    assert mailstore.take_from_pickup(home, pickup / "note.eml", lambda data: ("", [], data)) is None


def test_a_pickup_file_that_cannot_be_parsed_goes_to_badmail(home):
    pickup = home / mailstore.PICKUP_DIR
    pickup.mkdir()
    (pickup / "bad.eml").write_bytes(b"garbage")

    def refuse(data: bytes):
        raise ValueError("no envelope")

    with pytest.raises(mailstore.PickupRefusedError, match="no envelope"):
        mailstore.take_from_pickup(home, pickup / "bad.eml", refuse)

    assert files_in(pickup) == [] and mailstore.list_queue(home) == []
    assert (home / mailstore.BADMAIL_DIR / "bad.eml").read_bytes() == b"garbage"
    assert "no envelope" in (home / mailstore.BADMAIL_DIR / "bad.bdr").read_text()


# --- changes to stored messages ------------------------------------------------------------------------


def test_marking_read_moves_the_message_into_cur_and_keeps_its_uid(home):
    alice = maildir_of(home, "alice")
    uid = mailstore.deliver(alice, [MESSAGE])

    path = mailstore.mark_read(alice / "new" / uid)

    assert path == alice / "cur" / f"{uid}:2,S" and files_in(alice / "new") == []
    assert [m.uid for m in list_messages(alice)] == [uid]


def test_flags_are_kept_sorted_and_unread_removes_only_the_seen_flag(home):
    alice = maildir_of(home, "alice")
    uid = mailstore.deliver(alice, [MESSAGE])

    flagged = mailstore.set_flags(alice / "new" / uid, "SRF")
    assert flagged is not None and flagged.name == f"{uid}:2,FRS"
    unread = mailstore.mark_read(flagged, seen=False)
    assert unread is not None and unread.name == f"{uid}:2,FR"
    assert mailstore.flags_of(unread.name) == "FR"
    assert mailstore.set_flags(flagged, "S") is None  # moved meanwhile: nothing to change


def test_the_sent_copy_lands_read_in_a_folder_made_for_it(home):
    alice = maildir_of(home, "alice")

    uid = mailstore.save_sent_copy(alice / ".Sent", MESSAGE)

    assert files_in(alice / ".Sent" / "cur") == [f"{uid}:2,S"] and files_in(alice / ".Sent" / "new") == []
    assert (alice / ".Sent" / "cur" / f"{uid}:2,S").read_bytes() == MESSAGE


@pytest.mark.backend_independent
def test_every_change_to_a_folders_messages_grows_its_change_stamp(tmp_path):
    maildir = ensure_maildir(tmp_path / "alice")
    assert mailstore.change_stamp(maildir) is None

    key = mailstore.deliver(maildir, [b"Subject: a\r\n\r\nx\r\n"])
    after_delivery = mailstore.change_stamp(maildir)
    mailstore.mark_read(maildir / "new" / key)
    after_read = mailstore.change_stamp(maildir)
    mailstore.delete_messages(maildir, [key])
    after_deletion = mailstore.change_stamp(maildir)

    assert after_delivery is not None and after_read is not None and after_deletion is not None
    assert [after_delivery[1], after_read[1], after_deletion[1]] == [1, 2, 3]
    assert after_delivery[0] == after_read[0] == after_deletion[0]


@pytest.mark.backend_independent
def test_a_full_change_stamp_is_replaced_by_a_new_empty_file(tmp_path, monkeypatch):
    maildir = ensure_maildir(tmp_path / "alice")
    monkeypatch.setattr(mailstore, "CHANGE_STAMP_MAX_OCTETS", 3)
    mailstore.note_folder_changed(maildir)
    mailstore.note_folder_changed(maildir)
    before = mailstore.change_stamp(maildir)

    mailstore.note_folder_changed(maildir)

    after = mailstore.change_stamp(maildir)
    assert before is not None and after is not None
    assert after[1] == 0 and after != before
    assert sorted(p.name for p in maildir.iterdir() if p.name.startswith(".mailconsole-changes")) == [
        ".mailconsole-changes"
    ]
