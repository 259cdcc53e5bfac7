"""What keeps the web pages quick with big mailboxes (benchmarks/web.py)."""

from __future__ import annotations

import os
import time

import pytest

from frontend import usage
from tests.webmail_helpers import make_lab, store, text_message

pytestmark = pytest.mark.django_db


@pytest.fixture
def lab(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]
    return make_lab()


def test_a_big_mailbox_is_counted_once_until_its_folders_change(lab, monkeypatch):
    helena = lab.helena
    monkeypatch.setattr(usage, "MIN_FILES_TO_REMEMBER", 1)
    counted: list[int] = []
    original = usage.mailbox_usage
    monkeypatch.setattr(usage, "mailbox_usage", lambda mailbox: counted.append(1) or original(mailbox))
    for n in range(2):
        store(helena, text_message(subject=f"m{n}"))
    # Folders changed a moment ago may change again within the same clock tick: not trusted yet.
    assert usage.stored_usage(helena).message_count == 2
    assert usage.stored_usage(helena).message_count == 2
    assert len(counted) == 2
    long_ago_ns = time.time_ns() - 60 * 10**9
    for sub in ("new", "cur"):
        os.utime(helena.maildir / sub, ns=(long_ago_ns, long_ago_ns))
    usage.stored_usage(helena)
    assert usage.stored_usage(helena).message_count == 2
    assert len(counted) == 3
    store(helena, text_message(subject="one more"))
    assert usage.stored_usage(helena).message_count == 3
    assert len(counted) == 4
