"""The Anti-spam tab's DNSBL and greylisting through a real SMTP session, and its settings on every face.

The decisions are tested at their boundaries without sockets in tests/test_smtp_policy.py; here the
adapter asks the loopback DNS server (tests/delivery_helpers.TestDNS) and the test Redis, on a real
socket (tests/smtp_inprocess.py: the worker's session and handler in this process), with an
injected clock for greylisting. Those need no database, so they run on SQLite only; the supervised
worker's own path is in tests/test_smtp_access.py.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import uuid
from collections.abc import Iterator
from email import message_from_bytes
from io import StringIO
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from servers import inbound_checks, replies, services
from servers.inbound_checks import InboundChecks
from servers.smtp_policy import ClientList
from servers.snapshot import load_snapshot
from tests.delivery_helpers import TestDNS
from tests.factories import make_server
from tests.smtp_inprocess import lab_snapshot, serving

MESSAGE = b"Subject: hello\r\n\r\nbody\r\n"
ZONE = "bl.test"


def list_loopback(dns: TestDNS) -> None:
    """The zone lists 127.0.0.1, the address every test client connects from (RFC 5782 2.1)."""
    dns.add_a(f"1.0.0.127.{ZONE}", "127.0.0.2")


def stored_messages(home: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted((home / "lab.test" / "alice" / "new").iterdir())]


def client(port: int) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=5)
    smtp.ehlo("client.test")
    return smtp


@pytest.mark.backend_independent
def test_a_listed_client_is_refused_at_mail_with_554_naming_the_zone_and_its_address(tmp_path, dns):
    list_loopback(dns)
    snapshot = lab_snapshot(tmp_path, dnsbl_zones=(ZONE,), dnsbl_action="reject", dns_server=dns.address)

    with serving(snapshot, checks=InboundChecks(None)) as port, client(port) as smtp:
        code, text = smtp.mail("spammer@far.test")

    assert f"{code} {text.decode()}" == replies.DNSBL_LISTED.format(address="127.0.0.1", zone=ZONE)
    assert stored_messages(tmp_path) == []


@pytest.mark.backend_independent
def test_in_tag_mode_a_listed_clients_message_is_stored_with_an_x_dnsbl_header(tmp_path, dns):
    list_loopback(dns)
    dns.add_a("1.0.0.127.clean.test", "127.255.255.254")  # an error code of the list, not a listing
    snapshot = lab_snapshot(tmp_path, dnsbl_zones=("clean.test", ZONE), dnsbl_action="tag", dns_server=dns.address)

    with serving(snapshot, checks=InboundChecks(None)) as port, client(port) as smtp:
        assert smtp.sendmail("bob@far.test", ["alice@lab.test"], MESSAGE) == {}

    [stored] = stored_messages(tmp_path)
    assert message_from_bytes(stored).get_all("X-DNSBL") == [f"{ZONE} listed 127.0.0.1"]


@pytest.mark.backend_independent
def test_relay_list_clients_are_not_asked_about(tmp_path, dns):
    list_loopback(dns)
    snapshot = lab_snapshot(
        tmp_path,
        dnsbl_zones=(ZONE,),
        dnsbl_action="reject",
        dns_server=dns.address,
        relay_list=ClientList.from_rules([("network", "127.0.0.0/8")]),
    )

    with serving(snapshot, checks=InboundChecks(None)) as port, client(port) as smtp:
        assert smtp.sendmail("bob@far.test", ["alice@lab.test"], MESSAGE) == {}

    assert not any(name.endswith(ZONE) for name, _ in dns.queries)


@pytest.fixture
def redis_checks() -> Iterator[tuple[InboundChecks, list[float]]]:
    """Checks on the test Redis with a clock the test moves; the Redis client is closed by `serving`."""
    now = [1_000_000.0]
    yield InboundChecks(aioredis.Redis.from_url(settings.REDIS_URL), clock=lambda: now[0]), now


@pytest.mark.backend_independent
def test_greylisting_defers_an_unknown_triplet_and_accepts_the_retry_after_the_delay(tmp_path, redis_checks):
    checks, now = redis_checks
    snapshot = lab_snapshot(tmp_path, greylisting=True, greylisting_delay_s=300)
    sender = f"bob-{uuid.uuid4().hex[:8]}@far.test"  # a triplet no other run has seen

    with serving(snapshot, checks=checks) as port:
        with client(port) as smtp:
            smtp.mail(sender)
            code, text = smtp.rcpt("Alice@lab.test")
            assert f"{code} {text.decode()}" == replies.GREYLISTED.format(address="alice@lab.test")
            assert "greylisted, try again later" in text.decode()
        now[0] += 299
        with client(port) as smtp:
            smtp.mail(sender)
            assert smtp.rcpt("alice@lab.test")[0] == 451
        now[0] += 1
        with client(port) as smtp:
            assert smtp.sendmail(sender.upper(), ["alice@lab.test"], MESSAGE) == {}
        now[0] += 10 * 24 * 3600  # well past the 24 h window: the triplet passed, so it stays allowed
        with client(port) as smtp:
            assert smtp.sendmail(sender, ["alice@lab.test"], MESSAGE) == {}

    assert len(stored_messages(tmp_path)) == 2


@pytest.mark.backend_independent
def test_a_passed_triplet_is_answered_from_memory_for_a_while_then_asked_again():
    asked = []

    class CountingRedis:
        """Redis as the greylist sees it, counting the reads: the triplet passed long ago."""

        async def mget(self, *keys):
            asked.append(keys)
            return [b"1.0", repr(now[0] + 30 * 24 * 3600).encode()]

        async def set(self, *args, **kwargs):
            return True

    now = [1_000_000.0]
    checks = InboundChecks(CountingRedis(), clock=lambda: now[0])

    def greylisted() -> bool:
        return asyncio.run(checks.greylisted(1, "192.0.2.7", "bob@far.test", "alice@lab.test", 300))

    assert greylisted() is False and len(asked) == 1
    assert greylisted() is False and len(asked) == 1  # remembered: no round trip
    now[0] += inbound_checks.GREYLIST_KNOWN_S + 1
    assert greylisted() is False and len(asked) == 2


@pytest.mark.backend_independent
def test_greylisting_accepts_when_redis_is_down_and_says_so_once(tmp_path, caplog):
    down = InboundChecks(aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1))
    snapshot = lab_snapshot(tmp_path, greylisting=True)

    with (
        caplog.at_level(logging.WARNING, logger="servers.inbound_checks"),
        serving(snapshot, checks=down) as port,
        client(port) as smtp,
    ):
        assert smtp.sendmail("bob@far.test", ["alice@lab.test"], MESSAGE) == {}
        assert smtp.sendmail("bob@far.test", ["alice@lab.test"], MESSAGE) == {}

    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "Redis unavailable" in caplog.records[0].message


@pytest.mark.backend_independent
def test_dnsbl_lookups_that_fail_or_time_out_list_nobody_and_are_logged_once(dns, monkeypatch, caplog):
    monkeypatch.setattr(inbound_checks, "DNSBL_TIMEOUT_S", 0.3)
    dns.servfail.add("1.0.0.127.broken.test")
    dns.silent.add("1.0.0.127.silent.test")
    list_loopback(dns)
    checks = InboundChecks(None)

    async def twice() -> list[tuple[str, ...]]:
        zones = ("broken.test", "silent.test", ZONE)
        return [await checks.listed_zones("127.0.0.1", zones, dns.address) for _ in range(2)]

    with caplog.at_level(logging.WARNING, logger="servers.inbound_checks"):
        assert asyncio.run(twice()) == [(ZONE,), (ZONE,)]

    failures = [r.message for r in caplog.records]
    assert len([m for m in failures if "broken.test" in m]) == 1
    assert len([m for m in failures if "silent.test" in m]) == 1


# -- the settings, on the API and the command line ---------------------------------------------------


@pytest.mark.django_db
def test_the_anti_spam_settings_are_off_by_default_and_reach_the_workers_snapshot(settings):
    server = make_server()
    assert (server.dnsbl_zones, server.dnsbl_action, server.greylisting, server.greylisting_delay_s) == (
        "",
        "tag",
        False,
        300,
    )

    services.update_virtual_server(server, dnsbl_zones="zen.example.test, BL.test.", greylisting="yes")
    policy = load_snapshot(server.pk).policy

    assert policy.dnsbl_zones == ("zen.example.test", "bl.test") and policy.greylisting


def test_the_api_takes_zone_names_and_answers_field_errors_for_bad_ones(admin):
    server = make_server()
    url = f"/api/v1/servers/{server.pk}/"

    response = admin.patch(url, {"dnsbl_zones": "zen.example.test\nbl.test", "dnsbl_action": "reject"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["dnsbl_zones"] == "zen.example.test\nbl.test"

    for body, field in [
        ({"dnsbl_zones": "bad_zone.test"}, "dnsbl_zones"),
        ({"dnsbl_zones": "nodot"}, "dnsbl_zones"),
        ({"dnsbl_action": "drop"}, "dnsbl_action"),
        ({"greylisting_delay_s": 0}, "greylisting_delay_s"),
        ({"greylisting_delay_s": 86401}, "greylisting_delay_s"),
    ]:
        response = admin.patch(url, body, format="json")
        assert response.status_code == 400 and field in response.json(), (body, response.content)


@pytest.mark.django_db
def test_smtpsvc_set_changes_the_anti_spam_settings_and_refuses_bad_zone_names():
    server = make_server()

    call_command("smtpsvc", "set", str(server.pk), "dnsbl_zones=bl.test,zen.example.test", stdout=StringIO())
    call_command("smtpsvc", "set", str(server.pk), "greylisting_delay_s=60", stdout=StringIO())
    server.refresh_from_db()
    assert (server.dnsbl_zones, server.greylisting_delay_s) == ("bl.test\nzen.example.test", 60)

    with pytest.raises(CommandError, match="zone"):
        call_command("smtpsvc", "set", str(server.pk), "dnsbl_zones=not a zone", stdout=StringIO())
