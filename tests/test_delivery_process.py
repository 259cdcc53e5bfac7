"""Delivery through the real thing: Celery beat's scan, a Celery worker, and a SIGKILL mid-delivery."""

from __future__ import annotations

import os
import signal

from servers import mailstore
from servers.delivery.models import DeliverySettings, QueuedMessage
from tests.delivery_helpers import MESSAGE, RemoteBehaviour
from tests.factories import make_server
from tests.helpers import wait_until


def running_server(dns, port):
    """A running server on this test session's node, which the real Celery worker serves."""
    vs = make_server(domain="lab.test", start=True)
    DeliverySettings.objects.filter(pk=DeliverySettings.for_server(vs).pk).update(
        dns_server=dns.address, outbound_port=port, first_retry_interval_s=1, outbound_timeout_s=30
    )
    return vs


def test_the_worker_delivers_queued_and_picked_up_mail_within_seconds(supervised, dns, port, remotes):
    vs = running_server(dns, port)
    dns.add_a("far.test", "127.0.0.4")
    remote = remotes("127.0.0.4")
    mailstore.enqueue(vs.home_dir, "alice@lab.test", ["bob@far.test"], [MESSAGE])
    (vs.home_path / "Pickup" / "note.eml").write_bytes(
        b"x-sender: alice@lab.test\r\nx-receiver: carol@far.test\r\nSubject: picked up\r\n\r\nhi\r\n"
    )
    wait_until(
        lambda: sorted(remote.recipients()) == ["bob@far.test", "carol@far.test"],
        timeout_s=30,
        message="both messages at the remote server",
    )
    wait_until(lambda: not QueuedMessage.objects.filter(server=vs).exists(), message="an empty queue")
    assert mailstore.list_queue(vs.home_path) == [] and not (vs.home_path / "Pickup" / "note.eml").exists()


def test_killing_the_worker_in_the_middle_of_a_delivery_loses_nothing(supervised, celery_stack, dns, port, remotes):
    vs = running_server(dns, port)
    dns.add_a("far.test", "127.0.0.4")
    remote = remotes("127.0.0.4", behaviour=RemoteBehaviour(hold_first_data=True))
    message_id = mailstore.enqueue(vs.home_dir, "alice@lab.test", ["bob@far.test"], [MESSAGE])
    assert remote.holding.wait(30), "the worker never reached DATA"

    os.killpg(celery_stack.worker.pid, signal.SIGKILL)  # the worker and its pool, mid-transaction
    celery_stack.worker.wait()
    remote.release.set()  # the held transaction ends without delivery
    assert (vs.home_path / "Queue" / f"{message_id}.eml").exists()

    celery_stack.restart()
    wait_until(lambda: remote.recipients() == ["bob@far.test"], timeout_s=40, message="delivery after the restart")
    wait_until(lambda: not QueuedMessage.objects.filter(server=vs).exists(), message="an empty queue")
    assert not (vs.home_path / "Queue" / f"{message_id}.eml").exists()
    assert remote.received[0].content.endswith(b"last line without newline\r\n")
