"""Mailboxes over real sockets: SMTP into Maildirs, the POP3 service with poplib, curl and fetchmail."""

from __future__ import annotations

import os
import poplib
import signal
import smtplib
import socket
import ssl
import subprocess
from contextlib import closing
from email import message_from_bytes
from email.message import EmailMessage

import pytest

from servers import pop3_replies, replies, services
from servers.models import Logon, ObservedState, Pop3Service
from tests.factories import PASSWORD, make_mailbox, make_pop3_service, make_server
from tests.helpers import port_is_closed, wait_for_state, wait_until

pytestmark = pytest.mark.usefixtures("supervised")


@pytest.fixture
def lab():
    """The seed lab: one server with domain study003.local, mailboxes helena and bob, POP3 running."""
    server = wait_for_state(make_server(domain="study003.local", start=True), ObservedState.RUNNING)
    helena = make_mailbox(server, "helena")
    bob = make_mailbox(server, "bob")
    pop3 = wait_for_state(make_pop3_service(default_domain="study003.local"), ObservedState.RUNNING)
    wait_until(lambda: rcpt_code(server.port, "bob@study003.local") == 250, message="the SMTP worker to reload")
    return server, pop3, helena, bob


def rcpt_code(port: int, address: str) -> int:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()
        client.mail("probe@outside.test")
        code, _ = client.rcpt(address)
        client.rset()
        return code


def send(port: int, sender: str, recipients: list[str], subject: str, body: str = "Hello\n") -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, ", ".join(recipients), subject
    message.set_content(body)
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.send_message(message, from_addr=sender, to_addrs=recipients)


class POP3(poplib.POP3):
    """poplib's client, which closes its socket when the greeting is a refusal (poplib's leaves it open)."""

    def __init__(self, host: str, port: int, timeout: float = 10) -> None:
        try:
            super().__init__(host, port, timeout)
        except poplib.error_proto:
            self.close()
            raise


def pop3_login(service: Pop3Service, user: str, password: str = PASSWORD) -> poplib.POP3:
    """A signed-in client; a refused sign-in raises error_proto with the connection closed."""
    client = POP3("127.0.0.1", service.port)
    try:
        client.user(user)
        client.pass_(password)
    except BaseException:
        client.close()
        raise
    return client


def try_login(service: Pop3Service, user: str) -> poplib.POP3 | None:
    try:
        return pop3_login(service, user)
    except poplib.error_proto:
        return None


def subjects(client: poplib.POP3) -> list[str]:
    count, _ = client.stat()
    return [message_from_bytes(b"\r\n".join(client.retr(n)[1]))["Subject"] for n in range(1, count + 1)]


def test_the_lab_scenario_two_mailboxes_exchange_mail_through_smtp_and_pop3(lab):
    server, pop3, helena, bob = lab

    send(server.port, "helena@study003.local", ["bob@study003.local"], "Lab question")
    bob_client = pop3_login(pop3, "bob@study003.local")
    assert subjects(bob_client) == ["Lab question"]
    bob_client.quit()

    send(server.port, "bob@study003.local", ["helena@study003.local"], "Re: Lab question")
    helena_client = pop3_login(pop3, "helena")  # a bare name gets the default domain
    count, octets = helena_client.stat()
    listed = [int(line.split()[1]) for line in helena_client.list()[1]]
    raw = b"\r\n".join(helena_client.retr(1)[1]) + b"\r\n"
    assert (count, octets, listed) == (1, len(raw), [len(raw)])
    assert message_from_bytes(raw)["Return-Path"] == "<bob@study003.local>"
    helena_client.quit()

    helena.refresh_from_db()
    assert helena.last_logon_from == "127.0.0.1"
    assert Logon.objects.filter(mailbox=helena, protocol="POP3").count() == 1


def test_unknown_recipients_are_refused_at_rcpt_unless_the_domain_has_a_catch_all(lab):
    server, _, _, bob = lab

    assert rcpt_code(server.port, "nobody@study003.local") == 550

    services.set_catch_all(bob)
    wait_until(lambda: rcpt_code(server.port, "nobody@study003.local") == 250, message="the catch-all")
    send(server.port, "x@outside.test", ["nobody@study003.local"], "For anyone")
    client = pop3_login(lab[1], "bob@study003.local")
    assert subjects(client) == ["For anyone"]
    client.quit()


def test_a_group_address_and_an_alias_domain_deliver_to_the_mailboxes(lab):
    server, pop3, helena, bob = lab
    services.add_group(server.default_domain, "info", [helena, bob])
    services.add_domain(server, "alias.test", type="alias", alias_of="study003.local")
    wait_until(lambda: rcpt_code(server.port, "info@alias.test") == 250, message="the group and alias")

    send(server.port, "x@outside.test", ["info@study003.local"], "To the group")
    send(server.port, "x@outside.test", ["helena@alias.test"], "Via the alias")

    for user, expected in (("helena", ["To the group", "Via the alias"]), ("bob", ["To the group"])):
        client = pop3_login(pop3, f"{user}@study003.local")
        assert subjects(client) == expected
        client.quit()


def test_a_full_mailbox_refuses_with_552_at_rcpt_and_a_too_big_message_is_refused_whole(lab):
    server, _, helena, bob = lab
    services.update_mailbox(bob, quota_messages=1)
    services.update_mailbox(helena, quota_bytes=2000)
    wait_until(lambda: rcpt_code(server.port, "bob@study003.local") == 250, message="reload")
    send(server.port, "x@outside.test", ["bob@study003.local"], "Fills bob")

    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.ehlo()
        client.mail("x@outside.test")
        code, text = client.rcpt("bob@study003.local")
        assert (code, text.decode()) == (552, replies.MAILBOX_FULL.format(address="bob@study003.local")[4:])
        client.rset()
        big_message = b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 60
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("x@outside.test", ["helena@study003.local"], big_message)
    assert refused.value.smtp_code == 552
    assert services.mailbox_usage(helena).message_count == 0


def test_a_locked_mailbox_still_receives_but_cannot_log_in(lab):
    server, pop3, helena, _ = lab
    services.set_mailbox_lock(helena, True)

    send(server.port, "x@outside.test", ["helena@study003.local"], "While locked")

    with pytest.raises(poplib.error_proto) as refused:
        pop3_login(pop3, "helena@study003.local")
    assert refused.value.args[0].decode() == pop3_replies.MAILBOX_LOCKED
    assert services.mailbox_usage(helena).message_count == 1


def test_uidls_are_stable_and_deletions_happen_only_at_quit(lab):
    server, pop3, _, bob = lab
    for n in range(3):
        send(server.port, "x@outside.test", ["bob@study003.local"], f"Message {n}")

    first = pop3_login(pop3, "bob@study003.local")
    uidls = first.uidl()[1]
    first.dele(1)
    first.sock.shutdown(socket.SHUT_RDWR)  # dropped connection: nothing deleted
    first.close()

    # The server notices the drop a moment later and only then unlocks the mailbox.
    second = wait_until(lambda: try_login(pop3, "bob@study003.local"), timeout_s=5, message="the unlock")
    assert second.uidl()[1] == uidls
    second.dele(1)
    second.quit()

    third = pop3_login(pop3, "bob@study003.local")
    remaining = [line.split()[1] for line in third.uidl()[1]]
    assert remaining == [line.split()[1] for line in uidls[1:]]
    assert third.stat()[0] == 2
    third.quit()


def test_a_mailbox_in_use_refuses_a_second_session(lab):
    _, pop3, _, _ = lab
    with closing(pop3_login(pop3, "bob@study003.local")) as first:
        with pytest.raises(poplib.error_proto) as refused:
            pop3_login(pop3, "bob@study003.local")

        assert refused.value.args[0].decode() == pop3_replies.MAILBOX_IN_USE
        first.quit()
    pop3_login(pop3, "bob@study003.local").quit()


def test_unknown_user_and_wrong_password_get_the_same_reply(lab):
    _, pop3, _, _ = lab
    answers = []
    for user, password in (("nobody@study003.local", PASSWORD), ("bob@study003.local", "Wrong-pass1")):
        with pytest.raises(poplib.error_proto) as refused:
            pop3_login(pop3, user, password)
        answers.append(refused.value.args[0])
    assert answers[0] == answers[1] == pop3_replies.AUTH_FAILED.encode()


def test_stls_and_implicit_tls_carry_a_login(lab):
    server, pop3, _, _ = lab
    send(server.port, "x@outside.test", ["bob@study003.local"], "Over TLS")
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE

    client = poplib.POP3("127.0.0.1", pop3.port, timeout=10)
    assert "STLS" in client.capa()
    client.stls(context=insecure)
    client.user("bob@study003.local")
    client.pass_(PASSWORD)
    assert subjects(client) == ["Over TLS"]
    client.quit()

    implicit = poplib.POP3_SSL("127.0.0.1", pop3.tls_port, timeout=10, context=insecure)
    implicit.user("bob@study003.local")
    implicit.pass_(PASSWORD)
    assert implicit.stat()[0] == 1
    implicit.quit()


def test_curl_lists_and_retrieves_over_pop3(lab):
    server, pop3, _, _ = lab
    send(server.port, "x@outside.test", ["bob@study003.local"], "Fetched by curl")
    url = f"pop3://127.0.0.1:{pop3.port}/"

    listing = subprocess.run(
        ["curl", "-s", "--user", f"bob@study003.local:{PASSWORD}", url], capture_output=True, text=True, timeout=30
    )
    message = subprocess.run(
        ["curl", "-s", "--user", f"bob@study003.local:{PASSWORD}", url + "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.startswith("1 ")
    assert "Subject: Fetched by curl" in message.stdout


def test_fetchmail_downloads_and_deletes_the_mail(lab, tmp_path):
    server, pop3, _, bob = lab
    send(server.port, "x@outside.test", ["bob@study003.local"], "Fetched by fetchmail")
    delivered = tmp_path / "delivered.mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll 127.0.0.1 service {pop3.port} protocol pop3 no uidl auth password\n"
        f'  user "bob@study003.local" password "{PASSWORD}" sslproto "" no sslcertck\n'
        f'  mda "cat >> {delivered}"\n'
    )
    rc.chmod(0o600)

    result = subprocess.run(
        ["fetchmail", "-f", str(rc), "--nodetach", "--nosyslog", "-v"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(tmp_path)},
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Subject: Fetched by fetchmail" in delivered.read_text()
    assert services.mailbox_usage(bob).message_count == 0


def test_the_pop3_service_pauses_stops_and_recovers_from_a_kill(lab):
    _, pop3, _, _ = lab

    services.set_pop3_state(pop3, "paused")
    wait_for_state(pop3, ObservedState.PAUSED)
    with pytest.raises(poplib.error_proto) as paused:
        POP3("127.0.0.1", pop3.port)
    assert b"[SYS/TEMP]" in paused.value.args[0]

    services.set_pop3_state(pop3, "running")
    wait_for_state(pop3, ObservedState.RUNNING)
    os.kill(pop3.pid, signal.SIGKILL)
    wait_until(
        lambda: wait_for_state(pop3, ObservedState.RUNNING).restart_count == 1,
        timeout_s=15,
        message="the POP3 worker to come back",
    )
    pop3_login(pop3, "bob@study003.local").quit()

    services.set_pop3_state(pop3, "stopped")
    wait_for_state(pop3, ObservedState.STOPPED)
    assert port_is_closed(pop3.port)
