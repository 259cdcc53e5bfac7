"""What keeps the web pages quick with big mailboxes (benchmarks/web.py): incremental index scans,
remembered mailbox sizes, per-day counts made by the database."""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from frontend import queries
from frontend.webmail import index
from frontend.webmail.models import INBOX, MailboxIndexState, MessageIndex
from servers import maildir, services
from servers.models import Logon
from tests.webmail_helpers import make_lab, store, text_message

pytestmark = pytest.mark.django_db


@pytest.fixture
def lab(fast_hashing):
    return make_lab()


def settle(mailbox) -> None:
    """Let the last scan count as made long after the folders last changed."""
    state = MailboxIndexState.objects.get(mailbox=mailbox, folder=INBOX)
    state.scanned_at_ns += 10 * index.SCAN_SETTLE_NS
    state.save()


def indexed(mailbox) -> dict[str, str]:
    return dict(MessageIndex.objects.for_mailbox(mailbox.pk, INBOX).values_list("uid", "file_name"))


def test_new_mail_lists_new_alone_and_changes_behind_the_index_are_all_found(lab, monkeypatch):
    helena = lab.helena
    first, second = store(helena, text_message(subject="one")), store(helena, text_message(subject="two"))
    index.refresh(helena.pk, helena.maildir)
    settle(helena)
    listed: list[str] = []
    original = index._names
    monkeypatch.setattr(index, "_names", lambda directory: listed.append(directory.name) or original(directory))

    third = store(helena, text_message(subject="three"))
    assert index.refresh(helena.pk, helena.maildir).scanned
    assert listed == ["new"]
    assert set(indexed(helena)) == {first, second, third}

    # A mail client reads a message (new/ to cur/, flag S), then deletes it, without the webmail.
    os.rename(helena.maildir / "new" / first, helena.maildir / "cur" / f"{first}:2,S")
    index.refresh(helena.pk, helena.maildir)
    assert indexed(helena)[first] == f"cur/{first}:2,S"
    assert MessageIndex.objects.get(mailbox=helena, uid=first).is_read
    os.unlink(helena.maildir / "cur" / f"{first}:2,S")
    index.refresh(helena.pk, helena.maildir)
    assert set(indexed(helena)) == {second, third}


def test_a_message_seen_in_new_and_cur_at_once_is_indexed_where_it_went(lab):
    helena = lab.helena
    uid = store(helena, text_message())
    index.refresh(helena.pk, helena.maildir)
    os.link(helena.maildir / "new" / uid, helena.maildir / "cur" / f"{uid}:2,S")  # mid-move
    index.refresh(helena.pk, helena.maildir, force=True)
    assert indexed(helena) == {uid: f"cur/{uid}:2,S"}
    os.unlink(helena.maildir / "new" / uid)
    index.refresh(helena.pk, helena.maildir, force=True)
    assert indexed(helena) == {uid: f"cur/{uid}:2,S"}


def test_a_big_mailbox_is_counted_once_until_its_folders_change(lab, monkeypatch):
    helena = lab.helena
    monkeypatch.setattr(maildir, "USAGE_MIN_FILES_TO_REMEMBER", 1)
    counted: list[int] = []
    original = maildir.count_usage
    monkeypatch.setattr(maildir, "count_usage", lambda path: counted.append(1) or original(path))
    for n in range(2):
        store(helena, text_message(subject=f"m{n}"))
    # Folders changed a moment ago may change again within the same clock tick: not trusted yet.
    assert services.mailbox_usage(helena).message_count == 2
    assert services.mailbox_usage(helena).message_count == 2
    assert len(counted) == 2
    long_ago_ns = time.time_ns() - 60 * 10**9
    for sub in ("new", "cur"):
        os.utime(helena.maildir / sub, ns=(long_ago_ns, long_ago_ns))
    services.mailbox_usage(helena)
    assert services.mailbox_usage(helena).message_count == 2
    assert len(counted) == 3
    store(helena, text_message(subject="one more"))
    assert services.mailbox_usage(helena).message_count == 3
    assert len(counted) == 4


def test_sign_ins_are_counted_per_local_day(lab):
    administrator = get_user_model().objects.create_superuser("root")
    with timezone.override("Pacific/Auckland"):
        today = timezone.localdate()
        midnight = timezone.make_aware(dt.datetime.combine(today, dt.time.min))
        # Today, yesterday, the first of the 14 days, and the day before it (not counted).
        for at in (
            midnight + dt.timedelta(minutes=1),
            midnight - dt.timedelta(minutes=1),
            midnight - dt.timedelta(days=12, hours=23),
            midnight - dt.timedelta(days=13, minutes=1),
        ):
            Logon.objects.create(mailbox=lab.helena, client_address="192.0.2.1", logon_at=at, last_access_at=at)
        per_day = queries.logons_per_day(administrator)
    assert len(per_day) == 14
    assert per_day[-1] == (today.isoformat(), 1)
    assert per_day[-2] == ((today - dt.timedelta(days=1)).isoformat(), 1)
    assert per_day[0] == ((today - dt.timedelta(days=13)).isoformat(), 1)
    assert sum(n for _, n in per_day) == 3
