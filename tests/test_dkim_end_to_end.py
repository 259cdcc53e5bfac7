"""DKIM through the wire: submitted by a signed-in user on our SMTP port, relayed by the delivery engine
to a "remote MX" on loopback, and verified there by OpenDKIM (another implementation than the signer)
and by dkimpy, both asking the loopback DNS server for the published TXT record.

OpenDKIM's `opendkim-testmsg` always uses the system resolver, so the verifier is the `opendkim`
filter itself in its test mode (`opendkim -t FILE`): it is built on libunbound, whose `Nameservers`
setting takes `127.0.0.1@PORT`, and prints the Authentication-Results field it would add.
"""

from __future__ import annotations

import shutil
import smtplib
import subprocess
from pathlib import Path

import dkim
import pytest

from servers import services, tls
from servers.delivery import engine
from servers.models import DkimKey
from servers.services import dkim as dkim_keys
from servers.snapshot import load_snapshot
from tests.delivery_helpers import TestDNS, run_until_empty, send
from tests.factories import PASSWORD, default_domain_of
from tests.smtp_inprocess import serving

# Signatures checked by OpenDKIM and dkimpy: nothing here depends on the database backend (SQLite only).
pytestmark = pytest.mark.backend_independent

pytest_plugins = ["tests.delivery_helpers"]

OPENDKIM = "/usr/sbin/opendkim"


def publish(dns: TestDNS, domain) -> str:
    """Put the domain's DKIM record into the loopback DNS; return its name."""
    record = dkim_keys.dkim_record(domain)
    assert record is not None
    dns.add_txt(record.txt_name, record.txt_value)
    return record.txt_name


def opendkim_results(message: bytes, dns: TestDNS, tmp_path: Path) -> str:
    """What OpenDKIM says of `message`, looking keys up in `dns`: with -vvv its test mode prints the
    Authentication-Results field it would insert ("### INSHEADER: ... dkim=pass ...")."""
    assert shutil.which(OPENDKIM), "OpenDKIM is missing: scripts/install-test-packages.sh installs it"
    # Unbound answers the special-use name test. itself (RFC 6761) unless told not to.
    unbound = tmp_path / "unbound.conf"
    unbound.write_text('server:\n  local-zone: "test." nodefault\n')
    config = tmp_path / "opendkim.conf"
    config.write_text(
        f"Mode v\nNameservers 127.0.0.1@{dns.port}\nResolverConfiguration {unbound}\nSyslog no\nAlwaysAddARHeader yes\n"
    )
    path = tmp_path / "received.eml"
    path.write_bytes(message)
    done = subprocess.run(
        [OPENDKIM, "-x", str(config), "-vvv", "-t", str(path)], capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def dkimpy_verifies(message: bytes, dns: TestDNS) -> bool:
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        values = [value for rtype, value in dns.records.get(name.decode().rstrip("."), []) if rtype == "TXT"]
        return values[0].encode() if values else None

    return dkim.verify(message, dnsfunc=dnsfunc)


def signature_of(message: bytes) -> dict[bytes, bytes]:
    headers, _ = dkim.rfc822_parse(message)
    fields = [value for name, value in headers if name.lower() == b"dkim-signature"]
    assert len(fields) == 1, headers
    return dkim.util.parse_tag_value(fields[0])


@pytest.fixture
def far(dns, remotes):
    """far.test and other.test: their MX is one "remote" host on 127.0.0.5."""
    for domain in ("far.test", "other.test"):
        dns.add_mx(domain, (10, "mx.far.test"))
    dns.add_a("mx.far.test", "127.0.0.5")
    return remotes("127.0.0.5")


def test_a_message_submitted_by_a_signed_in_user_reaches_the_remote_mx_with_a_signature_opendkim_passes(
    transactional_db, server, dns, far, tmp_path
):
    services.generate_dkim_key(default_domain_of(server))
    txt_name = publish(dns, default_domain_of(server))
    snapshot = load_snapshot(server.pk)
    assert snapshot.cert_path is not None and snapshot.key_path is not None
    tls.ensure_self_signed_certificate(snapshot.cert_path, snapshot.key_path, snapshot.hostname)

    with serving(snapshot) as port, smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.login("alice@lab.test", PASSWORD)
        refused = client.sendmail(
            "alice@lab.test",
            ["bob@far.test"],
            b"From: Alice <alice@lab.test>\r\nTo: bob@far.test\r\nSubject: signed\r\n"
            b"Message-ID: <e2e@lab.test>\r\n\r\nhello far away\r\n.dot line\r\n",
        )
    assert refused == {}
    engine.reconcile_queue(server)  # index what the session stored in Queue/
    run_until_empty(server)

    assert far.recipients() == ["bob@far.test"]
    received = far.received[0].content
    assert b"Received: from" in received  # our SMTP session's trace field is there, outside the signature
    assert signature_of(received)[b"d"] == b"lab.test"
    assert dkimpy_verifies(received, dns)
    results = opendkim_results(received, dns, tmp_path)
    assert "dkim=pass" in results and "header.d=lab.test" in results, results
    assert (txt_name, "TXT") in dns.queries


def test_opendkim_fails_a_signature_whose_message_was_changed_on_the_way(db, server, dns, far, tmp_path):
    services.generate_dkim_key(default_domain_of(server))
    publish(dns, default_domain_of(server))
    send(server, ["bob@far.test"])
    run_until_empty(server)

    tampered = far.received[0].content.replace(b"Quarterly report", b"Quarterly rep0rt")

    results = opendkim_results(tampered, dns, tmp_path)
    assert "dkim=fail" in results, results
    assert not dkimpy_verifies(tampered, dns)


def test_a_dsn_to_a_remote_sender_is_signed_with_the_default_domains_key(db, server, dns, far, tmp_path):
    services.generate_dkim_key(default_domain_of(server))
    publish(dns, default_domain_of(server))
    far.behaviour.rcpt_replies["nobody"] = "550 5.1.1 No such user"

    send(server, ["nobody@other.test"], mail_from="someone@far.test")
    run_until_empty(server)

    (report,) = far.received
    assert report.mail_from == "<>" and report.rcpt_tos == ["someone@far.test"]
    assert b"multipart/report" in report.content
    assert signature_of(report.content)[b"d"] == b"lab.test"
    assert dkimpy_verifies(report.content, dns)
    results = opendkim_results(report.content, dns, tmp_path)
    assert "dkim=pass" in results and "header.d=lab.test" in results, results


def test_an_ed25519_signature_passes_opendkim(db, server, dns, far, tmp_path):
    services.generate_dkim_key(default_domain_of(server), algorithm="ed25519-sha256")
    publish(dns, default_domain_of(server))
    send(server, ["bob@far.test"])
    run_until_empty(server)

    received = far.received[0].content
    assert signature_of(received)[b"a"] == b"ed25519-sha256"
    results = opendkim_results(received, dns, tmp_path)
    assert "dkim=pass" in results, results


def test_mail_still_goes_out_unsigned_when_the_key_cannot_be_decrypted(db, server, dns, far):
    key = services.generate_dkim_key(default_domain_of(server))
    DkimKey.objects.filter(pk=key.pk).update(private_key="fernet:lost-with-the-old-secrets-key")

    send(server, ["bob@far.test"])
    run_until_empty(server)

    assert far.recipients() == ["bob@far.test"]
    assert b"DKIM-Signature" not in far.received[0].content


def test_local_copies_stay_unsigned_and_remote_domains_without_a_key_go_out_unsigned(db, server, dns, far):
    send(server, ["bob@far.test", "alice@lab.test"])
    run_until_empty(server)

    assert far.recipients() == ["bob@far.test"]
    assert b"DKIM-Signature" not in far.received[0].content
