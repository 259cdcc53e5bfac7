"""The General, Access and Messages tabs on a real SMTP worker: one real-socket test per path.

Each rule is tested at its boundary without sockets in tests/test_smtp_policy.py; here the supervised
worker shows the paths end to end (connect refusal, relay refusal and relaying, AUTH, local
delivery, TLS) and what only the adapter does (timeouts, size limits while reading DATA, logging).
"""

from __future__ import annotations

import base64
import poplib
import re
import smtplib
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from servers import replies, services
from servers.delivery.models import DeliverySettings
from servers.delivery.services import update_delivery_settings
from servers.inbound_checks import greylist_keys
from servers.livestate import pop_login_key, redis_client
from servers.models import ObservedState, VirtualServer
from servers.smtp_policy import greylist_triplet
from servers.tls import ensure_self_signed_certificate
from tests.factories import PASSWORD, make_mailbox, make_pop3_service, make_server
from tests.helpers import free_port, read_greeting, wait_until, worker_running

pytestmark = pytest.mark.usefixtures("supervised")
MESSAGE = b"Subject: policy\r\n\r\nbody\r\n"


def unverified_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def configure(server: VirtualServer, **changes) -> VirtualServer:
    services.update_virtual_server(server, **changes)
    return worker_running(server)


@pytest.fixture
def server():
    """A running server for lab.test with the mailbox alice, anonymous mail allowed."""
    srv = worker_running(make_server(domain="lab.test", start=True))
    make_mailbox(srv, "alice")
    return worker_running(srv)


def connect(server: VirtualServer, **kwargs) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", server.port, timeout=10, **kwargs)
    client.ehlo("client.test")
    return client


def reply_text(template: str, **values) -> str:
    return template.format(hostname="mx.test.invalid", **values)[4:]


def test_the_connection_after_the_limit_gets_421_and_open_sessions_carry_on(server):
    configure(server, max_connections=2)
    first, second = connect(server), connect(server)

    refused = read_greeting(server.port).decode().rstrip()

    assert refused == replies.TOO_MANY_CONNECTIONS.format(hostname="mx.test.invalid")
    assert first.noop()[0] == 250 and second.noop()[0] == 250
    first.quit()
    assert wait_until(lambda: read_greeting(server.port).startswith(b"220"), message="a free slot")
    second.quit()


def test_an_idle_session_is_closed_with_421(server):
    configure(server, idle_timeout_s=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.recv(512)
        goodbye = sock.recv(512).decode()  # blocks (10 s at most) until the 1 s idle limit closes it
    assert goodbye.startswith(replies.IDLE_TIMEOUT.format(hostname="mx.test.invalid"))


def test_message_size_is_advertised_and_enforced_at_mail_and_after_data(server):
    configure(server, max_message_size_kb=1)
    client = connect(server)
    assert client.esmtp_features["size"] == "1024"

    code, text = client.mail("a@outside.test", ["SIZE=5000"])
    assert (code, text.decode()) == (552, replies.MESSAGE_TOO_BIG[4:])
    client.rset()
    client.mail("a@outside.test")
    client.rcpt("alice@lab.test")
    code, text = client.data(b"Subject: big\r\n\r\n" + (b"x" * 76 + b"\r\n") * 20)
    assert (code, text.decode()) == (552, replies.MESSAGE_TOO_BIG[4:])
    assert client.sendmail("a@outside.test", ["alice@lab.test"], MESSAGE) == {}
    client.quit()


def test_unauthenticated_mail_to_other_domains_is_refused_as_relaying(server):
    with connect(server) as client:
        client.mail("a@outside.test")

        code, text = client.rcpt("victim@elsewhere.test")

    assert (code, text.decode()) == (554, replies.RELAY_DENIED.format(address="victim@elsewhere.test")[4:])


def test_auth_plain_and_login_sign_in_and_a_signed_in_user_may_relay(server):
    for mechanism in ("PLAIN", "LOGIN"):
        client = connect(server)
        assert mechanism in client.esmtp_features["auth"]
        client.user, client.password = "alice@lab.test", PASSWORD
        code, _ = client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))
        assert code == 235
        client.mail("alice@lab.test")
        assert client.rcpt("friend@elsewhere.test")[0] == 250
        client.quit()


def test_mail_from_a_signed_in_user_to_another_domain_is_relayed_to_its_mail_server(server, dns, port, remotes):
    DeliverySettings.objects.filter(pk=DeliverySettings.for_server(server).pk).update(
        dns_server=dns.address, outbound_port=port, first_retry_interval_s=1, outbound_timeout_s=30
    )
    dns.add_a("far.test", "127.0.0.4")
    remote = remotes("127.0.0.4")
    client = connect(server)
    client.login("alice@lab.test", PASSWORD)

    assert client.sendmail("alice@lab.test", ["bob@far.test"], MESSAGE) == {}
    client.quit()

    wait_until(lambda: remote.recipients() == ["bob@far.test"], timeout_s=30, message="the message at far.test")
    assert remote.received[0].content.endswith(MESSAGE)


def test_wrong_passwords_are_refused_and_repeated_failures_end_the_session(server):
    client = connect(server)
    wrong = base64.b64encode(b"\0alice@lab.test\0Wrong-pass1").decode()
    for _ in range(2):
        code, text = client.docmd("AUTH", f"PLAIN {wrong}")
        assert (code, text.decode()) == (535, replies.AUTH_FAILED[4:])
    code, text = client.docmd("AUTH", f"PLAIN {wrong}")
    assert (code, text.decode()) == (421, reply_text(replies.TOO_MANY_AUTH_FAILURES))
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()


def test_require_tls_refuses_auth_and_mail_before_starttls(server):
    configure(server, require_tls=True)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.recv(512)
        sock.sendall(b"EHLO c.test\r\n")
        ehlo = ""
        while not re.search(r"^250 ", ehlo, re.MULTILINE):  # read to the last line of the EHLO reply
            ehlo += sock.recv(4096).decode()
        auth_plain = base64.b64encode(f"\0alice@lab.test\0{PASSWORD}".encode()).decode()
        sock.sendall(f"AUTH PLAIN {auth_plain}\r\n".encode())
        auth_reply = sock.recv(512).decode()
        sock.sendall(b"MAIL FROM:<a@outside.test>\r\n")
        mail_reply = sock.recv(512).decode()
    assert "STARTTLS" in ehlo and "AUTH" not in ehlo
    assert auth_reply.startswith("538 5.7.11")
    assert mail_reply.rstrip() == replies.TLS_REQUIRED

    client = connect(server)
    client.starttls(context=unverified_tls())
    client.ehlo("client.test")
    client.login("alice@lab.test", PASSWORD)
    assert client.sendmail("alice@lab.test", ["alice@lab.test"], MESSAGE) == {}
    client.quit()


def test_the_implicit_tls_port_serves_smtp_over_tls(server):
    configure(server, tls_port=free_port())
    with smtplib.SMTP_SSL("127.0.0.1", server.tls_port, timeout=10, context=unverified_tls()) as client:
        client.ehlo("client.test")
        client.login("alice@lab.test", PASSWORD)
        assert client.sendmail("alice@lab.test", ["alice@lab.test"], MESSAGE) == {}


def test_swaks_with_starttls_auth_and_pipelining(server):
    result = subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.1:{server.port}",
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice@lab.test",
            "--auth-password",
            PASSWORD,
            "--pipeline",
            "--from",
            "alice@lab.test",
            "--to",
            "alice@lab.test",
            "--header",
            "Subject: swaks policy",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "235 2.7.0 Authentication successful" in result.stdout
    assert "250 2.0.0 OK" in result.stdout


def test_current_sessions_are_listed_and_can_be_terminated(server):
    client = connect(server)
    client.login("alice@lab.test", PASSWORD)

    # The worker publishes each second; wait for a listing made after the sign-in.
    sessions = wait_until(
        lambda: [s for s in services.list_sessions(server) if s["user"]],
        message="the signed-in session to be published",
    )
    assert [(s["client"], s["user"], s["protocol"]) for s in sessions] == [("127.0.0.1", "alice@lab.test", "SMTP")]

    services.terminate_session(server, sessions[0]["id"])
    wait_until(lambda: not services.list_sessions(server), message="the session to go")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()
        client.noop()


def test_bad_input_gets_a_5xx_and_the_session_stays_usable(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        answers = []
        for line in (b"NO\x00OP\r\n", b"\xff\xfe bad utf-8\r\n", b"X" * 3000 + b"\r\n", b"DATA\r\n", b"NOOP\r\n"):
            sock.sendall(line)
            answers.append(reader.readline().decode(errors="replace"))
    assert [a[0] for a in answers[:4]] == ["5", "5", "5", "5"]
    assert answers[4].startswith("250")


def test_protocol_logging_writes_replies_and_never_a_password(server):
    configure(server, protocol_logging=True)
    client = connect(server)
    client.login("alice@lab.test", PASSWORD)
    client.sendmail("alice@lab.test", ["alice@lab.test"], MESSAGE)
    client.quit()

    log_file = Path(server.home_dir, "Logs", "smtp.log")
    content = wait_until(lambda: log_file.exists() and log_file.read_text(), message="the protocol log")
    secret = base64.b64encode(f"\0alice@lab.test\0{PASSWORD}".encode()).decode()
    assert "'AUTH PLAIN ****' 235" in content
    assert "'DATA' 354" in content
    assert PASSWORD not in content and secret not in content


def test_bare_line_endings_in_commands_are_refused(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(b"NOOP\n")
        bare_lf = reader.readline().decode()
        sock.sendall(b"NOOP\rRSET\r\n")
        bare_cr = reader.readline().decode()
        sock.sendall(b"NOOP\r\n")
        noop = reader.readline().decode()
    assert bare_lf.startswith("500 5.5.2") and bare_cr.startswith("500 5.5.2")
    assert noop.startswith("250")


def test_a_client_that_just_read_its_pop3_mail_may_relay_when_pop_before_smtp_is_on(server):
    redis_client().delete(pop_login_key("127.0.0.1"))  # earlier tests' POP3 logins from loopback
    pop3 = make_pop3_service()
    configure(server, pop_before_smtp_minutes=10)
    wait_until(lambda: pop3.__class__.objects.get(pk=pop3.pk).state == ObservedState.RUNNING, message="POP3")
    anonymous = connect(server)
    anonymous.mail("a@outside.test")
    assert anonymous.rcpt("friend@elsewhere.test")[0] == 554
    anonymous.quit()

    reader = poplib.POP3("127.0.0.1", pop3.port, timeout=10)
    reader.user("alice@lab.test")
    reader.pass_(PASSWORD)
    reader.quit()

    after_pop = connect(server)
    after_pop.mail("a@outside.test")
    assert after_pop.rcpt("friend@elsewhere.test")[0] == 250
    after_pop.quit()


def test_an_uploaded_certificate_replaces_the_generated_one_without_a_restart(server, tmp_path):
    ensure_self_signed_certificate(tmp_path / "c.pem", tmp_path / "k.pem", "uploaded.lab.test")
    old_pid = server.pid
    with pytest.raises(services.RefusedError):
        services.set_server_certificate(server, b"not a certificate", b"nor a key")

    services.set_server_certificate(server, (tmp_path / "c.pem").read_bytes(), (tmp_path / "k.pem").read_bytes())
    worker_running(server)

    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.starttls(context=unverified_tls())
        der = client.sock.getpeercert(binary_form=True)
    assert b"uploaded.lab.test" in der
    assert server.pid == old_pid


def pipelined(server: VirtualServer, payload: bytes) -> list[str]:
    """Send everything at once after EHLO (as PIPELINING clients do); return the replies."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(b"EHLO pipe.test\r\n")
        while not reader.readline().startswith(b"250 "):
            pass
        sock.sendall(payload)
        replies_seen = []
        while True:
            line = reader.readline().decode()
            if not line:
                break
            replies_seen.append(line.rstrip())
            if line.startswith("221"):
                break
    return replies_seen


def test_a_message_of_exactly_the_size_limit_is_accepted_and_one_octet_more_is_not(server):
    configure(server, max_message_size_kb=1)
    head = b"Subject: edge\r\n\r\n"
    exactly = head + b"y" * (1024 - len(head) - 2) + b"\r\n"
    client = connect(server)
    assert client.sendmail("a@outside.test", ["alice@lab.test"], exactly) == {}
    client.mail("a@outside.test")
    client.rcpt("alice@lab.test")
    code, _ = client.data(head + b"y" * (1024 - len(head) - 1) + b"\r\n")
    assert code == 552
    client.quit()


def test_only_crlf_dot_crlf_ends_data_so_one_data_never_becomes_two_messages(server):
    smuggled = (
        b"MAIL FROM:<a@outside.test>\r\nRCPT TO:<alice@lab.test>\r\nDATA\r\n"
        b"Subject: smuggle\r\n\r\nhi\n.\nMAIL FROM:<evil@outside.test>\r\nstill data\r\n.\r\nNOOP\r\nQUIT\r\n"
    )

    answers = pipelined(server, smuggled)

    assert [a[:3] for a in answers] == ["250", "250", "354", "250", "250", "221"]
    mailbox = server.domains.get().mailboxes.get()
    [stored] = list((mailbox.maildir / "new").iterdir())
    assert b"hi\n.\nMAIL FROM:<evil@outside.test>\r\nstill data\r\n" in stored.read_bytes()


def test_an_empty_message_and_dot_stuffing_survive_the_block_reader(server):
    payload = (
        b"MAIL FROM:<a@outside.test>\r\nRCPT TO:<alice@lab.test>\r\nDATA\r\n.\r\n"
        b"MAIL FROM:<a@outside.test>\r\nRCPT TO:<alice@lab.test>\r\nDATA\r\n..one\r\n...two\r\n.\r\nQUIT\r\n"
    )

    answers = pipelined(server, payload)

    assert [a[:3] for a in answers] == ["250", "250", "354", "250", "250", "250", "354", "250", "221"]
    mailbox = server.domains.get().mailboxes.get()
    # Each file: Return-Path, the three lines of our Received: header, then what the client sent.
    bodies = sorted(p.read_bytes().split(b"\r\n", 4)[4] for p in (mailbox.maildir / "new").iterdir())
    assert bodies == [b"", b".one\r\n..two\r\n"]


def test_a_client_a_dnsbl_lists_is_refused_by_the_worker_through_the_servers_resolver(server, dns):
    dns.add_a("1.0.0.127.bl.test", "127.0.0.2")  # the zone lists 127.0.0.1, the test client
    update_delivery_settings(server, dns_server=dns.address)
    configure(server, dnsbl_zones="bl.test", dnsbl_action="reject")

    with connect(server) as client:
        code, text = client.mail("spammer@far.test")

    assert (code, text.decode()) == (554, replies.DNSBL_LISTED.format(address="127.0.0.1", zone="bl.test")[4:])


def test_greylisting_in_the_worker_defers_a_new_triplet_and_accepts_it_once_its_delay_has_passed(server):
    configure(server, greylisting=True)
    sender = f"bob-{uuid.uuid4().hex[:8]}@far.test"
    with connect(server) as client:
        client.mail(sender)
        assert client.rcpt("alice@lab.test")[0] == 451
    # The clock moved on: the first attempt is now more than the delay (300 s) ago.
    seen_key, _ = greylist_keys(server.pk, greylist_triplet("127.0.0.1", sender, "alice@lab.test"))
    redis_client().set(seen_key, repr(time.time() - 301), ex=3600)

    with connect(server) as client:
        assert client.sendmail(sender, ["alice@lab.test"], MESSAGE) == {}
