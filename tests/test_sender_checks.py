"""Sender checks and sender lists through a real SMTP session, with the loopback DNS server.

The decisions are tested without sockets in tests/test_sender_policy.py; here the adapter asks the
loopback DNS server (tests/delivery_helpers.TestDNS: MX, A and PTR records) on a real socket
(tests/smtp_inprocess.py: the worker's session and handler in this process). The supervised
worker's own path, AUTH and the outbound limits are in tests/test_outbound_limits.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import smtplib
from pathlib import Path

import pytest

from servers import maildir, replies, sender_checks
from servers.inbound_checks import InboundChecks
from servers.sender_checks import SenderChecks
from servers.smtp import LocalDeliveryHandler, LocalEnvelope, WorkerCounters
from servers.smtp_policy import ClientList, SenderList
from servers.snapshot import MailboxEntry, ServerSnapshot
from tests.delivery_helpers import TestDNS
from tests.smtp_inprocess import lab_snapshot, serving

pytestmark = pytest.mark.backend_independent

MESSAGE = b"Subject: hello\r\n\r\nbody\r\n"
ZONE = "bl.test"


def reply(code: int, text: bytes) -> str:
    return f"{code} {text.decode()}"


def client(port: int) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=5)
    smtp.ehlo("client.test")
    return smtp


def stored(home: Path, address: str = "alice@lab.test") -> int:
    local_part, _, domain = address.partition("@")
    folder = home / domain / local_part / "new"
    return len(list(folder.iterdir())) if folder.exists() else 0


def name_loopback(dns: TestDNS, name: str) -> None:
    """127.0.0.1, the address every test client connects from, has a forward-confirmed PTR name."""
    dns.add_ptr("127.0.0.1", name)
    dns.add_a(name, "127.0.0.1")


def with_other_domain(snapshot: ServerSnapshot, home: Path, **lists: tuple[str, str]) -> ServerSnapshot:
    """lab.test plus other.test (mailbox bob), with the sender lists given per domain as (allow, deny)."""
    bob = MailboxEntry("bob@other.test", maildir.ensure_maildir(home / "other.test" / "bob"), None, None)
    return dataclasses.replace(
        snapshot,
        local_domains=snapshot.local_domains | {"other.test"},
        mailboxes={**snapshot.mailboxes, bob.address: bob},
        domain_sender_lists={
            name.replace("_", "."): (SenderList.from_text(allow), SenderList.from_text(deny))
            for name, (allow, deny) in lists.items()
        },
    )


# -- require_sender_domain ---------------------------------------------------------------------------


def test_a_sender_domain_that_does_not_exist_is_refused_at_mail_with_550_5_1_8(tmp_path, dns):
    dns.add_mx("mx-only.test", (10, "mx.mx-only.test"))
    dns.add_a("a-only.test", "192.0.2.7")
    snapshot = lab_snapshot(tmp_path, require_sender_domain=True, dns_server=dns.address)

    with serving(snapshot, checks=InboundChecks(None)) as port, client(port) as smtp:
        code, text = smtp.mail("bob@nowhere.test")
        assert reply(code, text) == replies.SENDER_DOMAIN_UNKNOWN.format(
            address="bob@nowhere.test", domain="nowhere.test"
        )
        for sender in ("bob@mx-only.test", "bob@a-only.test", ""):
            assert smtp.sendmail(sender, ["alice@lab.test"], MESSAGE) == {}, sender

    assert stored(tmp_path) == 3


def test_a_dns_timeout_on_the_sender_domain_accepts_the_mail_and_is_logged_once(tmp_path, dns, monkeypatch, caplog):
    monkeypatch.setattr(sender_checks, "SENDER_CHECK_TIMEOUT_S", 0.3)
    dns.silent.add("slow.test")
    snapshot = lab_snapshot(tmp_path, require_sender_domain=True, dns_server=dns.address)

    with (
        caplog.at_level(logging.WARNING, logger="servers.sender_checks"),
        serving(snapshot, checks=InboundChecks(None)) as port,
        client(port) as smtp,
    ):
        assert smtp.sendmail("bob@slow.test", ["alice@lab.test"], MESSAGE) == {}
        assert smtp.sendmail("carol@slow.test", ["alice@lab.test"], MESSAGE) == {}

    warnings = [r.message for r in caplog.records if "DNS did not answer" in r.message]
    assert len(warnings) == 1
    assert stored(tmp_path) == 2


# -- ptr_matches_sender --------------------------------------------------------------------------------


def test_a_client_named_in_spam_com_posing_as_example_com_is_refused_with_550_5_7_1(tmp_path, dns):
    name_loopback(dns, "mail.spam.test")
    snapshot = lab_snapshot(tmp_path, ptr_matches_sender=True, dns_server=dns.address)

    with serving(snapshot, checks=InboundChecks(None)) as port, client(port) as smtp:
        code, text = smtp.mail("ceo@example.test")
        assert reply(code, text) == replies.PTR_NOT_IN_SENDER_DOMAIN.format(
            address="ceo@example.test", name="mail.spam.test", domain="example.test"
        )
        smtp.rset()
        # The name must lie in the sender's domain, not the other way round.
        assert smtp.mail("news@lists.spam.test")[0] == 550
        smtp.rset()
        assert smtp.sendmail("news@Spam.TEST", ["alice@lab.test"], MESSAGE) == {}

    assert stored(tmp_path) == 1


def test_a_ptr_name_that_does_not_resolve_back_to_the_client_counts_as_no_name(tmp_path, dns):
    dns.add_ptr("127.0.0.1", "mail.example.test")
    dns.add_a("mail.example.test", "192.0.2.99")  # not the client: not forward-confirmed
    snapshot = lab_snapshot(tmp_path, ptr_matches_sender=True, dns_server=dns.address)

    with serving(snapshot, checks=InboundChecks(None)) as port, client(port) as smtp:
        code, text = smtp.mail("ceo@example.test")

    assert reply(code, text) == replies.PTR_NOT_IN_SENDER_DOMAIN.format(
        address="ceo@example.test", name="none", domain="example.test"
    )


def test_relay_list_clients_are_not_checked(tmp_path, dns):
    snapshot = lab_snapshot(
        tmp_path,
        ptr_matches_sender=True,
        require_sender_domain=True,
        dns_server=dns.address,
        relay_list=ClientList.from_rules([("network", "127.0.0.0/8")]),
    )

    with serving(snapshot, checks=InboundChecks(None)) as port, client(port) as smtp:
        assert smtp.sendmail("ceo@nowhere.test", ["alice@lab.test"], MESSAGE) == {}

    assert dns.queries == []


# -- sender lists --------------------------------------------------------------------------------------


def test_the_servers_deny_list_refuses_at_mail_and_its_allow_list_skips_the_dnsbl(tmp_path, dns):
    dns.add_a(f"1.0.0.127.{ZONE}", "127.0.0.2")  # the zone lists the test client
    snapshot = lab_snapshot(
        tmp_path,
        dnsbl_zones=(ZONE,),
        dnsbl_action="reject",
        dns_server=dns.address,
        sender_deny=SenderList.from_text("@pest.test"),
        sender_allow=SenderList.from_text("partner.test\nboss@far.test"),
    )

    with serving(snapshot, checks=InboundChecks(None)) as port, client(port) as smtp:
        code, text = smtp.mail("x@mail.pest.test")
        assert reply(code, text) == replies.SENDER_DENIED.format(address="x@mail.pest.test")
        smtp.rset()
        assert smtp.mail("stranger@far.test")[0] == 554  # the DNSBL still refuses everyone else
        smtp.rset()
        assert smtp.sendmail("news@partner.test", ["alice@lab.test"], MESSAGE) == {}
        assert smtp.sendmail("Boss@far.test", ["alice@lab.test"], MESSAGE) == {}

    assert stored(tmp_path) == 2


def test_a_domains_allow_list_lifts_a_mail_stage_refusal_for_its_recipients_only(tmp_path, dns):
    name_loopback(dns, "mail.spam.test")
    snapshot = with_other_domain(
        lab_snapshot(tmp_path, ptr_matches_sender=True, dns_server=dns.address),
        tmp_path,
        lab_test=("example.test", ""),
    )
    refusal = replies.PTR_NOT_IN_SENDER_DOMAIN.format(
        address="ceo@example.test", name="mail.spam.test", domain="example.test"
    )

    with serving(snapshot, checks=InboundChecks(None)) as port, client(port) as smtp:
        assert smtp.mail("ceo@example.test")[0] == 250
        assert smtp.rcpt("alice@lab.test")[0] == 250
        assert reply(*smtp.rcpt("bob@other.test")) == refusal
        assert smtp.data(MESSAGE)[0] == 250

    assert (stored(tmp_path), stored(tmp_path, "bob@other.test")) == (1, 0)


def test_a_domains_deny_list_refuses_at_rcpt_for_its_recipients_only(tmp_path):
    snapshot = with_other_domain(lab_snapshot(tmp_path), tmp_path, other_test=("", "far.test"))

    with serving(snapshot, checks=InboundChecks(None)) as port, client(port) as smtp:
        smtp.mail("pest@far.test")
        assert reply(*smtp.rcpt("bob@other.test")) == replies.SENDER_DENIED_FOR_DOMAIN.format(
            address="pest@far.test", recipient="bob@other.test"
        )
        assert smtp.rcpt("alice@lab.test")[0] == 250


# -- who is checked, and how refusals are counted ------------------------------------------------------


class RecordingSenderChecks(SenderChecks):
    """Sender checks that answer "no such domain, no name" and record what was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    async def sender_domain(self, domain, dns_server):
        self.asked.append(f"domain {domain}")
        return sender_checks.SenderDomainLookup(exists=False)

    async def client_names(self, client_ip, dns_server):
        self.asked.append(f"ptr {client_ip}")
        return (), False


@dataclasses.dataclass
class FakeSession:
    signed_in_as: str | None = None
    client_ip: str = "127.0.0.1"
    session_id: str = "s1"
    dnsbl_listed: tuple[str, ...] | None = None
    tls_active: bool = False
    messages_accepted: int = 0
    bytes_accepted: int = 0
    hostname: str = "mx.test.invalid"


def test_signed_in_users_are_not_checked_and_each_refusal_is_counted_with_its_reason(tmp_path):
    checks = RecordingSenderChecks()
    snapshot = lab_snapshot(
        tmp_path, require_sender_domain=True, ptr_matches_sender=True, sender_deny=SenderList.from_text("pest.test")
    )
    handler = LocalDeliveryHandler(lambda: snapshot, WorkerCounters(), None, sender_checks=checks)

    async def mail(session: FakeSession, sender: str) -> str:
        return await handler.handle_MAIL(session, None, LocalEnvelope(), sender, [])

    # lab.test has no MX and no name in these checks' DNS: a signed-in user is not asked about.
    assert asyncio.run(mail(FakeSession(signed_in_as="alice@lab.test"), "alice@lab.test")) == "250 2.1.0 OK"
    assert checks.asked == []

    assert asyncio.run(mail(FakeSession(), "ceo@nowhere.test"))[:9] == "550 5.1.8"
    assert asyncio.run(mail(FakeSession(), "x@pest.test"))[:9] == "550 5.7.1"
    assert handler.counters.refusals == {"sender_domain": 1, "sender_denied": 1}
