"""SPF, DKIM and DMARC on incoming mail, through real SMTP sessions and a real DNS server.

The loopback DNS server (tests/delivery_helpers.TestDNS) publishes the far.test domain's SPF,
DKIM (a key generated here; messages are signed with dkimpy) and DMARC records; every client
connects from 127.0.0.1. The first part runs the worker's session and handler in this process on a
real socket (tests/smtp_inprocess.py: no database); the second runs the supervised worker process
and talks to it with swaks and smtplib. The rules themselves are in tests/test_sender_auth_rules.py.
"""

from __future__ import annotations

import base64
import email
import email.policy
import smtplib
import subprocess
import time
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from servers import inbound_auth, replies
from servers.delivery.services import update_delivery_settings
from servers.inbound_checks import InboundChecks
from servers.message_auth import sender_check
from servers.models import VirtualServer
from tests.delivery_helpers import TestDNS
from tests.factories import PASSWORD, make_mailbox, make_server
from tests.helpers import worker_running
from tests.smtp_inprocess import HOSTNAME, lab_snapshot, serving

ALICE = "alice@lab.test"


@pytest.fixture(scope="module")
def signing_key() -> tuple[bytes, str]:
    """An RSA key (PEM) and its DKIM TXT record."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


def message(author: str = "bob@far.test", subject: str = "hello", extra: bytes = b"") -> bytes:
    return (
        f"From: Bob <{author}>\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{time.time_ns()}@far.test>\r\n".encode()
        + extra
        + b"\r\nHello Alice.\r\n"
    )


def signed(content: bytes, pem: bytes, domain: str = "far.test") -> bytes:
    return dkim.sign(content, b"sel", domain.encode(), pem, include_headers=[b"from", b"to", b"subject"]) + content


def publish(dns: TestDNS, *, spf: str | None = None, dkim_record: str | None = None, dmarc: str | None = None) -> None:
    if spf is not None:
        dns.add_txt("far.test", spf)
    if dkim_record is not None:
        dns.add_txt("sel._domainkey.far.test", dkim_record)
    if dmarc is not None:
        dns.add_txt("_dmarc.far.test", dmarc)


def inbox(home: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted((home / "lab.test" / "alice" / "new").iterdir())]


def results_of(stored: bytes, authserv_id: str = HOSTNAME) -> str:
    """Our Authentication-Results header of a stored message, unfolded."""
    parsed = email.message_from_bytes(stored, policy=email.policy.compat32)
    ours = [
        " ".join(value.split())
        for value in parsed.get_all("Authentication-Results") or []
        if value.split(";")[0].strip() == authserv_id
    ]
    assert len(ours) == 1, parsed.get_all("Authentication-Results")
    return ours[0]


def client(port: int, helo: str = "mail.far.test") -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=10)
    smtp.ehlo(helo)
    return smtp


# -- in this process, on a real socket -------------------------------------------------------------------


@pytest.mark.backend_independent
def test_spf_reject_refuses_a_failing_sender_at_mail_with_550_5_7_23(tmp_path, dns):
    publish(dns, spf="v=spf1 ip4:192.0.2.0/24 -all")
    snapshot = lab_snapshot(tmp_path, spf_action="reject", dns_server=dns.address)

    with serving(snapshot, checks=InboundChecks(None)) as port, client(port) as smtp:
        code, text = smtp.mail("bob@far.test")
        assert smtp.mail("carol@elsewhere.test")[0] == 250  # no SPF record there: none, accepted

    assert f"{code} {text.decode()}" == replies.SPF_FAILED.format(
        address="bob@far.test", domain="far.test", client="127.0.0.1"
    )
    assert inbox(tmp_path) == []


@pytest.mark.backend_independent
def test_spf_tag_accepts_the_message_and_records_the_fail(tmp_path, dns):
    publish(dns, spf="v=spf1 ip4:192.0.2.0/24 -all")
    snapshot = lab_snapshot(tmp_path, spf_action="tag", dns_server=dns.address)

    with serving(snapshot, checks=InboundChecks(None)) as port, client(port) as smtp:
        assert smtp.sendmail("bob@far.test", [ALICE], message()) == {}

    results = results_of(inbox(tmp_path)[0])
    assert "spf=fail" in results and "smtp.mailfrom=bob@far.test" in results
    assert "dkim=none" in results and "dmarc=none header.from=far.test" in results


@pytest.mark.backend_independent
def test_with_both_checks_off_nothing_is_asked_and_no_header_is_added(tmp_path, dns):
    publish(dns, spf="v=spf1 -all", dmarc="v=DMARC1; p=reject")
    snapshot = lab_snapshot(tmp_path, dns_server=dns.address)

    with serving(snapshot, checks=InboundChecks(None)) as port, client(port) as smtp:
        assert smtp.sendmail("bob@far.test", [ALICE], message()) == {}

    assert dns.queries == []
    assert b"Authentication-Results" not in inbox(tmp_path)[0]


@pytest.mark.backend_independent
def test_the_null_sender_is_checked_by_its_helo_name(tmp_path, dns):
    dns.add_txt("bad-helo.far.test", "v=spf1 -all")
    dns.add_txt("good-helo.far.test", "v=spf1 ip4:127.0.0.1 -all")
    snapshot = lab_snapshot(tmp_path, spf_action="reject", dns_server=dns.address)

    with serving(snapshot, checks=InboundChecks(None)) as port:
        with client(port, helo="bad-helo.far.test") as smtp:
            code, text = smtp.mail("<>")
        with client(port, helo="good-helo.far.test") as smtp:
            assert smtp.sendmail("<>", [ALICE], message()) == {}

    assert (code, text.decode()[:10]) == (550, "5.7.23 <>:")
    assert "bad-helo.far.test does not permit [127.0.0.1]" in text.decode()
    assert "spf=pass (ip4:127.0.0.1) smtp.helo=good-helo.far.test;" in results_of(inbox(tmp_path)[0])


@pytest.mark.backend_independent
def test_a_signed_message_from_an_spf_host_passes_all_three(tmp_path, dns, signing_key):
    pem, record = signing_key
    publish(dns, spf="v=spf1 ip4:127.0.0.0/8 -all", dkim_record=record, dmarc="v=DMARC1; p=reject")
    snapshot = lab_snapshot(tmp_path, spf_action="reject", dmarc_action="honour", dns_server=dns.address)

    with serving(snapshot, checks=InboundChecks(None)) as port, client(port) as smtp:
        assert smtp.sendmail("bob@far.test", [ALICE], signed(message(), pem)) == {}

    [stored] = inbox(tmp_path)
    results = results_of(stored)
    assert results.startswith(f"{HOSTNAME}; spf=pass")
    assert "dkim=pass header.d=far.test header.s=sel" in results
    assert "dmarc=pass header.from=far.test policy.dmarc=reject" in results
    check = sender_check([results], HOSTNAME)
    assert check is not None and check.verified and check.domain == "far.test"


@pytest.mark.backend_independent
def test_dmarc_reject_refuses_an_unaligned_message_after_data_with_550_5_7_1(tmp_path, dns, signing_key):
    pem, record = signing_key
    publish(dns, spf="v=spf1 ip4:192.0.2.1 -all", dkim_record=record, dmarc="v=DMARC1; p=reject")
    dns.add_txt("sel._domainkey.other.test", record)
    snapshot = lab_snapshot(tmp_path, spf_action="tag", dmarc_action="honour", dns_server=dns.address)

    with serving(snapshot, checks=InboundChecks(None)) as port, client(port) as smtp:
        smtp.mail("bob@far.test")
        smtp.rcpt(ALICE)
        # Signed, but by another domain: DKIM passes without aligning with From: far.test.
        code, text = smtp.data(signed(message(), pem, domain="other.test"))

    assert f"{code} {text.decode()}" == replies.DMARC_REJECTED.format(domain="far.test")
    assert inbox(tmp_path) == []


@pytest.mark.backend_independent
def test_dmarc_quarantine_files_into_junk_made_if_missing_and_tags_it(tmp_path, dns):
    publish(dns, spf="v=spf1 -all", dmarc="v=DMARC1; p=quarantine")
    snapshot = lab_snapshot(tmp_path, dmarc_action="honour", dns_server=dns.address)
    alice = tmp_path / "lab.test" / "alice"

    with serving(snapshot, checks=InboundChecks(None)) as port, client(port) as smtp:
        # Before the first sign-in the mailbox has no Junk folder yet: delivery makes it.
        assert smtp.sendmail("bob@far.test", [ALICE], message(subject="first")) == {}
        assert smtp.sendmail("bob@far.test", [ALICE], message(subject="second")) == {}

    assert inbox(tmp_path) == []
    junk = sorted(path.read_bytes() for path in (alice / ".Junk" / "new").iterdir())
    assert len(junk) == 2
    for stored in junk:
        assert b"X-Spam-Flag: YES" in stored and "dmarc=fail" in results_of(stored)
    assert {b"Subject: first" in stored for stored in junk} == {True, False}


@pytest.mark.backend_independent
def test_forged_results_naming_our_host_are_removed_and_others_kept(tmp_path, dns):
    snapshot = lab_snapshot(tmp_path, spf_action="tag", dns_server=dns.address)
    forged = (
        f"Authentication-Results: {HOSTNAME};\r\n\tspf=pass smtp.mailfrom=ceo@lab.test;\r\n\tdmarc=pass\r\n"
        "Authentication-Results: relay.far.test; spf=fail\r\n"
    ).encode()

    with serving(snapshot, checks=InboundChecks(None)) as port, client(port) as smtp:
        assert smtp.sendmail("bob@far.test", [ALICE], message(extra=forged)) == {}

    [stored] = inbox(tmp_path)
    assert "spf=none" in results_of(stored)  # ours, and only ours
    assert b"ceo@lab.test" not in stored
    assert b"Authentication-Results: relay.far.test; spf=fail" in stored


@pytest.mark.backend_independent
def test_a_dead_dns_server_delays_a_message_by_the_two_time_boxes_only_and_mail_is_accepted(
    tmp_path, dns, monkeypatch, caplog
):
    monkeypatch.setattr(inbound_auth, "AUTH_TIMEOUT_S", 0.5)
    dns.silent.update({"far.test", "_dmarc.far.test", "sel._domainkey.far.test"})
    snapshot = lab_snapshot(tmp_path, spf_action="reject", dmarc_action="honour", dns_server=dns.address)
    signed_by_far = b"DKIM-Signature: v=1; a=rsa-sha256; d=far.test; s=sel; h=from; bh=x; b=y\r\n" + message()

    with serving(snapshot, checks=InboundChecks(None)) as port, client(port) as smtp:
        started = time.monotonic()
        assert smtp.sendmail("bob@far.test", [ALICE], signed_by_far) == {}
        first_s = time.monotonic() - started
        started = time.monotonic()
        assert smtp.sendmail("bob@far.test", [ALICE], signed_by_far) == {}
        second_s = time.monotonic() - started

    # One box at MAIL (SPF), one after DATA (DKIM key and DMARC record asked together), not one per lookup.
    assert 2 * 0.5 <= first_s < 2 * 0.5 + 0.5, first_s
    assert second_s < 0.3, second_s  # the failures are remembered for a while
    for stored in inbox(tmp_path):
        results = results_of(stored)
        assert "spf=temperror" in results and "dkim=temperror" in results and "dmarc=temperror" in results
    assert sum("DNS lookup" in record.message for record in caplog.records) == 1


@pytest.mark.backend_independent
def test_a_slow_spf_record_does_not_use_up_the_time_dmarc_has(tmp_path, dns, monkeypatch):
    monkeypatch.setattr(inbound_auth, "AUTH_TIMEOUT_S", 0.5)
    dns.silent.add("slow.test")  # the forger's own domain answers slowly...
    dns.add_txt("_dmarc.far.test", "v=DMARC1; p=reject")  # ...and forges a From: of a p=reject domain
    snapshot = lab_snapshot(tmp_path, spf_action="tag", dmarc_action="honour", dns_server=dns.address)

    with serving(snapshot, checks=InboundChecks(None)) as port, client(port) as smtp:
        smtp.mail("bob@slow.test")
        smtp.rcpt(ALICE)
        code, _ = smtp.data(message(author="ceo@far.test"))

    assert code == 550


@pytest.mark.backend_independent
def test_relay_list_clients_are_not_checked(tmp_path, dns):
    from servers.smtp_policy import ClientList

    publish(dns, spf="v=spf1 -all", dmarc="v=DMARC1; p=reject")
    snapshot = lab_snapshot(
        tmp_path,
        spf_action="reject",
        dmarc_action="honour",
        dns_server=dns.address,
        relay_list=ClientList.from_rules([("network", "127.0.0.0/8")]),
    )

    with serving(snapshot, checks=InboundChecks(None)) as port, client(port) as smtp:
        assert smtp.sendmail("bob@far.test", [ALICE], message()) == {}

    assert dns.queries == []
    assert results_of(inbox(tmp_path)[0]) == f"{HOSTNAME}; none"


# -- the supervised worker process ----------------------------------------------------------------------


@pytest.fixture
def server(supervised, dns) -> VirtualServer:
    """A running server for lab.test (mailbox alice) asking the loopback DNS server, both checks on."""
    srv = worker_running(make_server(domain="lab.test", start=True))
    srv.mailbox = make_mailbox(srv, "alice")
    update_delivery_settings(srv, dns_server=dns.address)
    from servers import services

    services.update_virtual_server(srv, spf_action="reject", dmarc_action="honour")
    return worker_running(srv)


def swaks(server: VirtualServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{server.port}", "--to", ALICE, "--helo", "mail.far.test", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_worker_refuses_an_spf_fail_at_mail_and_dmarc_reject_after_data(server, dns):
    publish(dns, spf="v=spf1 ip4:192.0.2.1 -all", dmarc="v=DMARC1; p=reject")
    dns.add_txt("other.test", "v=spf1 ip4:127.0.0.1 -all")

    spf_failed = swaks(server, "--from", "bob@far.test")
    # SPF passes for other.test, but From: says far.test, which nothing aligns with.
    dmarc_failed = swaks(server, "--from", "bob@other.test", "--header", "From: Bob <bob@far.test>")

    assert spf_failed.returncode != 0
    assert "<** 550 5.7.23 <bob@far.test>: SPF validation failed" in spf_failed.stdout
    assert dmarc_failed.returncode != 0
    assert "<-  354 " in dmarc_failed.stdout  # refused after the message was sent
    assert "<** 550 5.7.1 Message rejected: the DMARC policy of far.test" in dmarc_failed.stdout


def test_the_worker_exempts_a_signed_in_user_and_says_smtp_auth(server, dns):
    publish(dns, spf="v=spf1 -all", dmarc="v=DMARC1; p=reject")
    dns.add_txt("lab.test", "v=spf1 -all")
    dns.add_txt("_dmarc.lab.test", "v=DMARC1; p=reject")

    result = swaks(server, "--from", ALICE, "--auth", "PLAIN", "--auth-user", ALICE, "--auth-password", PASSWORD)

    assert result.returncode == 0, result.stdout + result.stderr
    [stored] = [path.read_bytes() for path in (server.mailbox.maildir / "new").iterdir()]
    assert results_of(stored) == f"{HOSTNAME}; auth=pass smtp.auth={ALICE}"
    assert not any(name.endswith("lab.test") for name, _ in dns.queries)


# -- the settings on every face, and what webmail shows ------------------------------------------------------


@pytest.mark.django_db
def test_the_checks_are_off_by_default_and_each_face_sets_them():
    from io import StringIO

    from django.core.management import call_command

    from servers import services
    from servers.snapshot import load_snapshot

    server = make_server()
    assert (server.spf_action, server.dmarc_action) == ("none", "none")

    call_command("smtpsvc", "set", str(server.pk), "spf_action=reject", "dmarc_action=honour", stdout=StringIO())
    policy = load_snapshot(server.pk).policy
    assert (policy.spf_action, policy.dmarc_action) == ("reject", "honour")

    with pytest.raises(services.RefusedError, match="none, tag or reject"):
        services.update_virtual_server(server, spf_action="quarantine")


def test_the_api_takes_the_actions_and_refuses_unknown_ones(admin):
    server = make_server()
    url = f"/api/v1/servers/{server.pk}/"

    response = admin.patch(url, {"spf_action": "tag", "dmarc_action": "honour"}, format="json")
    assert response.status_code == 200, response.content
    assert (response.json()["spf_action"], response.json()["dmarc_action"]) == ("tag", "honour")
    for body, field in [({"spf_action": "drop"}, "spf_action"), ({"dmarc_action": "reject"}, "dmarc_action")]:
        response = admin.patch(url, body, format="json")
        assert response.status_code == 400 and field in response.json(), (body, response.content)


@pytest.mark.django_db
def test_the_anti_spam_tab_shows_and_saves_the_actions(fast_hashing):
    from django.test import Client
    from django.urls import reverse

    from tests.panel_helpers import make_cast

    cast = make_cast()
    client = Client()
    client.force_login(cast.alice)
    url = reverse("console:server", args=[cast.server.pk]) + "?tab=antispam"
    page = client.get(url).content.decode()
    assert 'name="spf_action"' in page and 'name="dmarc_action"' in page

    data = {"form": "server", "dnsbl_action": "tag", "greylisting_delay_s": "300", "dnsbl_zones": ""}
    client.post(url, {**data, "spf_action": "reject", "dmarc_action": "honour"})
    cast.server.refresh_from_db()
    assert (cast.server.spf_action, cast.server.dmarc_action) == ("reject", "honour")


@pytest.mark.django_db
def test_webmail_says_in_plain_words_whether_the_sender_was_verified(fast_hashing, settings):
    from django.urls import reverse

    from frontend.webmail.models import MessageIndex
    from servers.message_auth import DkimResult, authentication_results, dmarc_outcome, parse_dmarc_record
    from servers.spf import SpfResult
    from tests.webmail_helpers import make_lab, signed_in_client, store, text_message

    lab = make_lab()
    record = parse_dmarc_record(["v=DMARC1; p=none"])
    passed = authentication_results(
        settings.MAIL_HOSTNAME,
        spf=SpfResult("pass", "outside.test"),
        dkim=[DkimResult("pass", "outside.test", "sel")],
        dmarc=dmarc_outcome(
            "outside.test", record, record_at_org=False, spf=SpfResult("pass", "outside.test"), dkim=[]
        ),
    )
    failed = authentication_results(
        settings.MAIL_HOSTNAME,
        spf=SpfResult("fail", "outside.test"),
        dmarc=dmarc_outcome(
            "outside.test", record, record_at_org=False, spf=SpfResult("fail", "outside.test"), dkim=[]
        ),
    )
    forged = b"Authentication-Results: elsewhere.test; spf=pass smtp.mailfrom=carol@outside.test\r\n"
    uids = {
        name: store(lab.helena, header + text_message(subject=name).as_bytes().replace(b"\n", b"\r\n"))
        for name, header in (("passed", passed), ("failed", failed), ("other", forged))
    }
    client = signed_in_client(lab.helena)
    client.get(reverse("webmail:folder", args=["inbox"]))

    def verdict(name: str) -> str:
        pk = MessageIndex.objects.get(mailbox=lab.helena, uid=uids[name]).pk
        page = client.get(reverse("webmail:read", args=[pk])).content.decode()
        start = page.find('data-testid="sender-verdict">')
        return "" if start < 0 else page[start:].split(">", 1)[1].split("<", 1)[0]

    assert verdict("passed") == "Sender verified: outside.test (SPF pass, DKIM pass, DMARC pass)"
    assert verdict("failed").startswith("Warning: the sender could not be verified as outside.test (SPF fail")
    assert verdict("other") == ""


def test_the_worker_files_a_dmarc_quarantined_message_into_the_junk_folder(server, dns):
    from frontend.webmail.folders import account_for

    account_for(server.mailbox)  # the first sign-in (IMAP or webmail) makes Junk
    publish(dns, spf="v=spf1 ?all", dmarc="v=DMARC1; p=quarantine")  # SPF neutral: passes MAIL, not DMARC

    result = swaks(server, "--from", "bob@far.test", "--header", "Subject: quarantined")

    assert result.returncode == 0, result.stdout + result.stderr
    assert list((server.mailbox.maildir / "new").iterdir()) == []
    [junk] = [path.read_bytes() for path in (server.mailbox.maildir / ".Junk" / "new").iterdir()]
    assert b"Subject: quarantined" in junk and b"X-Spam-Flag: YES" in junk
    assert "dmarc=fail header.from=far.test policy.dmarc=quarantine" in results_of(junk)
