"""A signed-in user's mail to another domain: our SMTP port, Queue/, the Celery worker, the remote MX."""

from __future__ import annotations

import smtplib

import dkim

from servers import dkim_signing, services
from servers.delivery.models import DeliverySettings, QueuedMessage
from servers.models import ObservedState
from tests.factories import PASSWORD, default_domain_of, make_mailbox, make_server
from tests.helpers import wait_until


def test_a_signed_in_user_relays_through_the_queue_to_the_remote_mx(supervised, dns, port, remotes):
    server = make_server(domain="lab.test", start=True)
    make_mailbox(server, "alice")
    # The Celery worker signs with a key it decrypts itself (the secrets key is the node's, in var/).
    record = services.rotate_dkim_key(default_domain_of(server))
    DeliverySettings.objects.filter(pk=DeliverySettings.for_server(server).pk).update(
        dns_server=dns.address, outbound_port=port, outbound_timeout_s=30
    )
    dns.add_mx("far.test", (10, "mx.far.test"))
    dns.add_a("mx.far.test", "127.0.0.5")
    remote = remotes("127.0.0.5")

    def running():
        server.refresh_from_db()
        return server.state == ObservedState.RUNNING

    wait_until(running, message="the server to run")
    wait_until(lambda: _login_works(server.port), message="the worker to know alice")

    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.login("alice@lab.test", PASSWORD)
        refused = client.sendmail(
            "alice@lab.test",
            ["bob@far.test", "alice@lab.test"],
            b"From: alice@lab.test\r\nSubject: out and in\r\n\r\nhello far away\r\n",
        )

    assert refused == {}
    wait_until(lambda: remote.recipients() == ["bob@far.test"], timeout_s=30, message="the remote delivery")
    wait_until(lambda: not QueuedMessage.objects.filter(server=server).exists(), message="an empty queue")
    assert b"hello far away" in remote.received[0].content
    assert b"Received: from" in remote.received[0].content
    txt = dkim_signing.txt_value(record.algorithm, record.public_key).encode()
    assert dkim.verify(remote.received[0].content, dnsfunc=lambda name, timeout=5: txt)


def _login_works(port: int) -> bool:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.login("alice@lab.test", PASSWORD)
        return True
    except smtplib.SMTPException:
        return False
