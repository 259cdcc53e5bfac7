"""Anti-spam refusal counts on their way to the console: the session processes' reports, the heartbeat,
and the server's Anti-spam tab. (Counted by `WorkerCounters.count_refusal`; a real-process run is in
tests/test_smtp_session_processes.py.)"""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from servers.livestate import Heartbeat, heartbeat_key, redis_client
from servers.workers.dispatch import Dispatcher, SessionProcess, format_report, parse_report
from servers.workers.smtpd import SMTPWorker
from tests.panel_helpers import Cast, make_cast


@pytest.mark.backend_independent
def test_a_session_process_report_carries_its_refusals_and_an_older_report_still_reads():
    report = format_report(3, 17, {"greylisted": 5, "dnsbl": 2, "unused": 0})

    assert report == b"3 17 dnsbl=2,greylisted=5"
    assert parse_report(report) == (3, 17, {"dnsbl": 2, "greylisted": 5})
    assert parse_report(format_report(0, 4, {})) == (0, 4, {})
    assert parse_report(b"1 2") == (1, 2, {})
    assert parse_report(format_report(1, 2, {"sender limit": 3, "a=b,c": 1})) == (1, 2, {"a_b_c": 1, "sender_limit": 3})
    assert parse_report(b"1 2 dnsbl=x,greylisted=4 junk") == (1, 2, {"greylisted": 4})
    with pytest.raises(ValueError):
        parse_report(b"1 x")


@pytest.mark.backend_independent
def test_the_worker_adds_its_session_processes_counts_and_keeps_a_replaced_ones():
    dispatcher = Dispatcher(count=2, child_argv=lambda i, fd: [], refusal=lambda n: None, unavailable=lambda: b"")
    first, second = dispatcher.children
    first.refusals, second.refusals = {"greylisted": 4}, {"greylisted": 1, "dnsbl": 2}
    dispatcher._keep_refusals(second)  # as when a dead session process is started again
    second.refusals = {"dnsbl": 1}
    worker = SMTPWorker(1)
    worker.dispatcher = dispatcher
    worker.counters.refusals.update({"dnsbl": 10})

    fields = worker.heartbeat_fields()

    assert json.loads(fields["refusals"]) == {"dnsbl": 13, "greylisted": 5}
    assert isinstance(SessionProcess(3).refusals, dict)


@pytest.mark.backend_independent
def test_a_heartbeat_reads_the_refusal_counts_and_ignores_a_broken_field():
    base = {"pid": "10", "state": "running", "sent_at": "1.0"}

    assert Heartbeat.from_hash(1, {**base, "refusals": '{"dnsbl": 2}'}).refusals == {"dnsbl": 2}
    assert Heartbeat.from_hash(1, base).refusals == {}
    assert Heartbeat.from_hash(1, {**base, "refusals": "[1"}).refusals == {}


@pytest.fixture
def cast(db, fast_hashing) -> Cast:
    return make_cast()


def test_the_anti_spam_tab_shows_the_counts_of_the_running_worker(cast):
    key = heartbeat_key("smtp", cast.server.pk)
    client = redis_client()
    client.hset(
        key,
        mapping={
            "pid": 1,
            "state": "running",
            "sent_at": 1.0,
            "config_version": 1,
            "refusals": json.dumps({"greylisted": 7, "spf": 2}),
        },
    )
    try:
        console = Client()
        console.force_login(cast.oscar)
        html = console.get(reverse("console:server", args=[cast.server.pk]) + "?tab=antispam").content.decode()
    finally:
        client.delete(key)

    assert 'data-testid="refusal-counts"' in html
    rows = html.split('data-testid="refusal-counts"', 1)[1]
    count_cell = '<td class="text-end font-monospace">'
    assert f'<tr data-reason="dnsbl"><td>Listed by a DNS blocklist (554 5.7.1 at MAIL)</td>{count_cell}0</td>' in rows
    assert '<tr data-reason="greylisted">' in rows and '<td class="text-end font-monospace">7</td>' in rows
    assert '<tr data-reason="spf"><td>spf</td><td class="text-end font-monospace">2</td>' in rows


def test_without_a_heartbeat_the_anti_spam_tab_says_the_counts_are_not_known(cast):
    console = Client()
    console.force_login(cast.oscar)

    html = console.get(reverse("console:server", args=[cast.server.pk]) + "?tab=antispam").content.decode()

    assert "Not known: the server's worker is not running" in html
