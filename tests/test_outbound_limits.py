"""Outbound abuse limits: the counters in Redis, hold and release through the delivery engine, every face.

The decisions are tested without sockets in tests/test_sender_policy.py. Here: the Redis counters
with a clock the test moves; the delivery engine in-process (its own node, no Celery worker; a real
DNS server and a real remote SMTP server on loopback) holding a blocked mailbox's queued mail and
delivering it once released, nothing lost; the console, the API and `winpop` releasing; and, at the
end, a supervised SMTP worker blocking a signed-in mailbox over its limit.
"""

from __future__ import annotations

import asyncio
import smtplib
import uuid
from email.message import EmailMessage
from io import StringIO

import pytest
import redis.asyncio as aioredis
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from frontend.webmail.submission import SubmissionError, submit
from servers import mailstore, replies
from servers.delivery import engine
from servers.delivery.models import QueuedMessage
from servers.livestate import redis_client
from servers.models import AuditEntry, Mailbox
from servers.outbound_counters import OutboundCounters, Sent
from servers.services import outbound_limits
from tests.api_factories import client_for
from tests.delivery_helpers import mailbox_messages, run_queue, run_until_empty, send
from tests.factories import PASSWORD, make_mailbox, make_server, make_user
from tests.helpers import wait_until, worker_running

REASON = "more than 2 messages in an hour"


def forget_counters(server_id: int) -> None:
    client = redis_client()
    for key in client.scan_iter(match=f"mailconsole:outbound:{server_id}:*", count=500):
        client.delete(key)


# -- the counters --------------------------------------------------------------------------------------


@pytest.mark.backend_independent
def test_messages_are_counted_per_hour_and_day_and_a_recipient_is_new_only_the_first_time():
    now = [1_000_000 * 86400.0 + 3600 * 5]  # 05:00 on some day
    address = f"alice-{uuid.uuid4().hex[:8]}@lab.test"

    async def run() -> list[Sent | None]:
        redis = aioredis.Redis.from_url(settings.REDIS_URL)
        counters = OutboundCounters(redis, clock=lambda: now[0])
        try:
            figures = [await counters.count_message(7, address, ["a@far.test", "b@far.test"])]
            figures.append(await counters.count_message(7, address, ["A@far.test", "c@far.test"]))
            now[0] += 3600  # the next hour: the hour's count starts again, the day's goes on
            figures.append(await counters.count_message(7, address, ["b@far.test"]))
            now[0] += 86400  # the next day: new recipients are counted from zero, known ones stay known
            figures.append(await counters.count_message(7, address, ["c@far.test", "d@far.test"]))
            return figures
        finally:
            await redis.aclose()

    assert asyncio.run(run()) == [(1, 1, 2), (2, 2, 3), (1, 3, 3), (1, 1, 1)]


@pytest.mark.backend_independent
def test_without_redis_nothing_is_counted_and_nothing_blocked():
    async def run() -> Sent | None:
        redis = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
        try:
            return await OutboundCounters(redis).count_message(1, "alice@lab.test", ["a@far.test"])
        finally:
            await redis.aclose()

    assert asyncio.run(run()) is None


# -- hold and release through the delivery engine ------------------------------------------------------


def test_a_blocked_mailboxs_queued_mail_is_held_and_goes_out_once_released(server, dns, remotes):
    dns.add_a("far.test", "127.0.0.4")
    remote = remotes("127.0.0.4")
    alice = Mailbox.objects.get(local_part="alice", domain__server=server)
    queued = send(server, ["bob@far.test"])

    assert outbound_limits.block_sending(server.pk, "alice@lab.test", REASON)
    # A file written after the block (the message the worker was storing) is held once indexed.
    mailstore.enqueue(server.home_dir, "Alice@LAB.test", ["carol@far.test"], [b"Subject: two\r\n\r\nbody\r\n"])
    run_queue(server, rounds=2)

    held = QueuedMessage.objects.filter(server=server, held=True)
    assert sorted(held.values_list("mail_from", flat=True)) == ["Alice@LAB.test", "alice@lab.test"]
    assert queued.pk in held.values_list("pk", flat=True)
    assert remote.recipients() == []
    assert engine.process_message(queued.pk) == "busy"  # not even claimed
    # The user and the postmaster were told (the notice has the null sender, so it is not held).
    [notice] = mailbox_messages(server, "alice")
    assert notice["Subject"] == "Sending blocked for alice@lab.test"
    assert REASON in notice.get_content() and "the 1 message(s)" in notice.get_content()
    assert any((server.home_path / "Drop").iterdir())  # postmaster@lab.test: a group without members
    assert not outbound_limits.block_sending(server.pk, "alice@lab.test", REASON)  # once is enough

    assert outbound_limits.release_sending(alice, actor="test") == 2
    run_until_empty(server)

    assert sorted(remote.recipients()) == ["bob@far.test", "carol@far.test"]
    alice.refresh_from_db()
    assert alice.sending_blocked_at is None and alice.sending_blocked_reason == ""
    assert AuditEntry.objects.filter(action="release_mailbox_sending", object_id=str(alice.pk)).exists()


def test_release_can_delete_the_held_mail_without_reports(server, dns, remotes):
    dns.add_a("far.test", "127.0.0.4")
    remote = remotes("127.0.0.4")
    alice = Mailbox.objects.get(local_part="alice", domain__server=server)
    queued = send(server, ["bob@far.test"])
    outbound_limits.block_sending(server.pk, "alice@lab.test", REASON)

    assert outbound_limits.release_sending(alice, delete_held=True, actor="test") == 1
    run_until_empty(server)

    assert not QueuedMessage.objects.filter(pk=queued.pk).exists()
    assert not (server.home_path / "Queue" / queued.name).exists()
    assert remote.recipients() == []
    assert len(mailbox_messages(server, "alice")) == 1  # the notice only: no DSN for deleted mail


def test_a_message_claimed_after_its_sender_was_blocked_is_held_not_sent(server, dns, remotes):
    dns.add_a("far.test", "127.0.0.4")
    remote = remotes("127.0.0.4")
    queued = send(server, ["bob@far.test"])
    # The block is written, but did not reach this row yet (it raced the scan that dispatched it).
    Mailbox.objects.filter(local_part="alice", domain__server=server).update(
        sending_blocked_at="2026-01-01T00:00:00Z", sending_blocked_reason=REASON
    )

    assert engine.process_message(queued.pk) == "held"

    queued.refresh_from_db()
    assert queued.held and queued.attempts == 0
    assert remote.recipients() == []


# -- the faces: console, API, winpop -------------------------------------------------------------------


@pytest.fixture
def blocked(db, fast_hashing):
    """alice@lab.test blocked with one held message; carol administers lab.test, dave another domain."""
    server = make_server(domain="lab.test")
    alice = make_mailbox(server, "alice")
    send(server, ["bob@far.test"])
    outbound_limits.block_sending(server.pk, alice.address, REASON)
    other = make_server(domain="other.test")
    carol, dave = make_user("carol"), make_user("dave")
    server.default_domain.administrators.add(carol)
    other.default_domain.administrators.add(dave)
    alice.refresh_from_db()
    return alice, carol, dave


def test_the_console_shows_blocked_mailboxes_and_a_domain_administrator_releases_with_a_csrf_post(blocked):
    alice, carol, dave = blocked
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(carol)

    assert alice.address in browser.get(reverse("console:dashboard")).content.decode()
    page = browser.get(reverse("console:mailbox", args=[alice.pk]))
    assert b'data-testid="sending-blocked"' in page.content and REASON.encode() in page.content
    url = reverse("console:mailbox", args=[alice.pk])
    assert browser.post(url, {"form": "release_sending", "held_mail": "send"}).status_code == 403  # no token
    token = page.cookies["csrftoken"].value if "csrftoken" in page.cookies else browser.cookies["csrftoken"].value

    response = browser.post(url, {"form": "release_sending", "held_mail": "send", "csrfmiddlewaretoken": token})

    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.sending_blocked_at is None
    assert not QueuedMessage.objects.filter(held=True).exists()
    stranger = Client()
    stranger.force_login(dave)
    assert stranger.get(url).status_code == 404
    assert alice.address not in stranger.get(reverse("console:dashboard")).content.decode()


def test_the_api_shows_the_block_and_releases_for_who_sees_the_mailbox(blocked):
    alice, carol, dave = blocked
    url = f"/api/v1/mailboxes/{alice.pk}/"

    assert client_for(dave).post(url + "release-sending/", {}, format="json").status_code == 404
    shown = client_for(carol).get(url).json()
    assert shown["sending_blocked_reason"] == REASON and shown["sending_blocked_at"]

    response = client_for(carol).post(url + "release-sending/", {"delete_held": True}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["held_messages"] == 1
    assert response.json()["mailbox"]["sending_blocked_at"] is None
    assert not QueuedMessage.objects.filter(mail_from=alice.address).exists()


def test_a_domain_administrator_may_not_change_a_mailboxs_outbound_limits_but_an_operator_may(blocked):
    alice, carol, _ = blocked
    operator = make_user("oscar")
    alice.domain.server.operators.add(operator)
    url = f"/api/v1/mailboxes/{alice.pk}/"

    refused = client_for(carol).patch(url, {"outbound_max_messages_per_hour": 1000}, format="json")
    assert refused.status_code == 400 and "outbound_max_messages_per_hour" in refused.json()
    changed = client_for(operator).patch(url, {"outbound_max_messages_per_hour": 1000}, format="json")
    assert changed.status_code == 200 and changed.json()["outbound_max_messages_per_hour"] == 1000


def test_winpop_lists_blocked_mailboxes_and_releases_one(blocked):
    alice, _, _ = blocked
    out = StringIO()
    call_command("winpop", "blocked", stdout=out)
    assert alice.address in out.getvalue() and REASON in out.getvalue()

    out = StringIO()
    call_command("winpop", "release", alice.address, stdout=out)

    assert "1 held message sent on" in out.getvalue()
    alice.refresh_from_db()
    assert alice.sending_blocked_at is None
    call_command("winpop", "sendlimits", alice.address, "5", "-", "0", stdout=StringIO())
    alice.refresh_from_db()
    assert (
        alice.outbound_max_messages_per_hour,
        alice.outbound_max_messages_per_day,
        alice.outbound_max_new_recipients_per_day,
    ) == (5, None, 0)


# -- a real SMTP worker --------------------------------------------------------------------------------


@pytest.mark.usefixtures("supervised")
def test_the_worker_blocks_a_signed_in_mailbox_over_its_hourly_limit_until_it_is_released():
    server = make_server(domain="lab.test", start=True)
    make_mailbox(server, "alice")
    make_mailbox(server, "carol")
    forget_counters(server.pk)
    from servers import services

    services.update_virtual_server(server, outbound_max_messages_per_hour=2)
    worker_running(server)

    def session() -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", server.port, timeout=10)
        client.login("alice@lab.test", PASSWORD)
        return client

    with session() as client:
        for _ in range(2):
            assert client.sendmail("alice@lab.test", ["carol@lab.test"], b"Subject: hi\r\n\r\nhi\r\n") == {}
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("alice@lab.test", ["carol@lab.test"], b"Subject: three\r\n\r\nhi\r\n")
    blocked_reply = replies.SENDING_BLOCKED.format(user="alice@lab.test", reason=REASON)
    assert f"{refused.value.smtp_code} {refused.value.smtp_error.decode()}" == blocked_reply
    with session() as client:
        code, text = client.mail("alice@lab.test")
        assert f"{code} {text.decode()}" == blocked_reply
    alice = Mailbox.objects.get(local_part="alice", domain__server=server)
    assert alice.sending_blocked_reason == REASON
    # The notice goes through the queue to alice's own mailbox (the null sender is never held).
    wait_until(
        lambda: any(b"Sending blocked" in p.read_bytes() for p in (alice.maildir / "new").iterdir()),
        timeout_s=30,
        message="the notice in alice's mailbox",
    )

    # The webmail sends through the same SMTP AUTH and says why in plain words.
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "alice@lab.test", "carol@lab.test", "webmail"
    message.set_content("hi")
    with pytest.raises(SubmissionError, match="blocked from sending.*held, not lost"):
        submit(alice, PASSWORD, message, ["carol@lab.test"])

    call_command("winpop", "release", "alice@lab.test", stdout=StringIO())

    with session() as client:
        assert client.sendmail("alice@lab.test", ["carol@lab.test"], b"Subject: again\r\n\r\nhi\r\n") == {}
    forget_counters(server.pk)


def test_the_queue_shows_held_messages_as_held_on_the_api(blocked):
    alice, _, _ = blocked
    entries = client_for(make_user("root", superuser=True)).get("/api/v1/queue/").json()["results"]

    [held] = [entry for entry in entries if entry["sender"] == alice.address]
    [notice] = [entry for entry in entries if entry["sender"] == ""]  # the notice: never held
    assert held["held"] and held["next_retry_at"] is None
    assert not notice["held"]
    out = StringIO()
    call_command("smtpqueue", "list", str(alice.domain.server_id), stdout=out)
    assert "held (sender blocked" in out.getvalue()


def test_the_webmail_tells_a_blocked_user_before_they_write(db, fast_hashing):
    from tests.webmail_helpers import make_lab, signed_in_client

    lab = make_lab()
    client = signed_in_client(lab.helena)
    assert b'data-testid="sending-blocked"' not in client.get(reverse("webmail:compose")).content
    Mailbox.objects.filter(pk=lab.helena.pk).update(
        sending_blocked_at="2026-01-01T00:00:00Z", sending_blocked_reason=REASON
    )

    page = client.get(reverse("webmail:compose")).content.decode()

    assert 'data-testid="sending-blocked"' in page and REASON in page
