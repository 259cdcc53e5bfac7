"""Temp files that killed writers left behind are swept after 36 hours; nothing else is touched."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
from django.conf import settings

from mailconsole.celery import app
from servers import maildir, mailstore
from servers.tasks import sweep_stale_temp_files
from tests.factories import make_mailbox, make_server
from tests.helpers import wait_until

# Sockets and files: a second database backend proves nothing new here.
pytestmark = pytest.mark.backend_independent

HOURS = 3600
OLD_S = 37 * HOURS
RECENT_S = 35 * HOURS


def aged(path: Path, age_s: float, content: bytes = b"partial message") -> Path:
    """A file (or an existing link, without following it) last changed `age_s` seconds ago."""
    if not path.is_symlink():
        path.write_bytes(content)
    then = time.time() - age_s
    os.utime(path, (then, then), follow_symlinks=False)
    return path


@pytest.fixture
def server(db):
    return make_server(domain="sweep.test")


def test_the_hourly_task_removes_old_tmp_files_keeps_fresh_ones_and_never_follows_links(server, tmp_path, caplog):
    bob = make_mailbox(server, "bob").maildir
    sent = maildir.ensure_maildir(maildir.folder_maildir(bob, "Sent"))
    outside = aged(tmp_path / "outside.eml", OLD_S, b"not ours")
    old_in_tmp = aged(bob / "tmp" / "1.P1R1.host", OLD_S)
    old_in_folder_tmp = aged(sent / "tmp" / "2.P1R1.host", OLD_S)
    old_in_server_tmp = aged(server.home_path / ".tmp" / "queued.eml", OLD_S)
    fresh = aged(bob / "tmp" / "3.P1R1.host", RECENT_S)
    link = bob / "tmp" / "4.P1R1.host"
    link.symlink_to(outside)
    aged(link, OLD_S)
    nested = bob / "tmp" / "nested"
    nested.mkdir()
    old_nested = aged(nested / "5.P1R1.host", OLD_S)
    delivered = mailstore.deliver(bob, [b"Subject: kept\r\n\r\n"])
    aged(bob / "new" / delivered, OLD_S, b"Subject: kept\r\n\r\n")

    with caplog.at_level(logging.INFO, logger="mailconsole.tasks"):
        removed = sweep_stale_temp_files.apply(args=(settings.NODE_NAME,)).get()

    assert removed == 3
    assert not old_in_tmp.exists() and not old_in_folder_tmp.exists() and not old_in_server_tmp.exists()
    assert fresh.exists() and old_nested.exists()
    assert link.is_symlink() and outside.read_bytes() == b"not ours"
    assert [m.uid for m in maildir.list_messages(bob)] == [delivered]
    assert "swept 3 stale temp file(s)" in caplog.text


def test_a_tmp_folder_that_is_a_link_is_not_followed(server, tmp_path):
    carol = make_mailbox(server, "carol").maildir
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    precious = aged(elsewhere / "precious", OLD_S)
    os.rmdir(carol / "tmp")
    (carol / "tmp").symlink_to(elsewhere)
    linked_domain = server.home_path / "Mailbox" / "linked.test"
    linked_domain.symlink_to(tmp_path)
    (tmp_path / "dave" / "tmp").mkdir(parents=True)
    behind_link = aged(tmp_path / "dave" / "tmp" / "old", OLD_S)

    assert sweep_stale_temp_files.apply(args=(settings.NODE_NAME,)).get() == 0
    assert precious.exists() and behind_link.exists()


def test_the_sweep_runs_hourly_on_the_nodes_own_queue():
    entry = app.conf.beat_schedule[f"servers.sweep_stale_temp_files {settings.NODE_NAME}"]
    assert entry["task"] == "servers.sweep_stale_temp_files" and entry["schedule"] == HOURS
    assert entry["args"] == (settings.NODE_NAME,) and entry["options"]["queue"] == settings.NODE_NAME


@pytest.mark.usefixtures("supervised")
def test_the_nodes_celery_worker_runs_the_sweep():
    server = make_server(domain="sweep-worker.test")
    bob = make_mailbox(server, "bob").maildir
    orphan = aged(bob / "tmp" / "killed.P1R1.host", OLD_S)
    fresh = aged(bob / "tmp" / "writing.P1R1.host", 60)

    app.send_task("servers.sweep_stale_temp_files", args=(settings.NODE_NAME,), queue=settings.NODE_NAME)

    assert wait_until(lambda: not orphan.exists(), message="the worker to sweep tmp/")
    assert fresh.exists()
