"""The Pickup folder, the queue actions an administrator has, and the small pure pieces of delivery."""

from __future__ import annotations

import os
import random
import threading
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from servers.delivery import client, engine, pickup, routing
from servers.delivery import services as queue_services
from servers.delivery.models import QueuedMessage
from servers.models import AuditEntry, VirtualServer
from servers.services import RefusedError, local_node
from tests.delivery_helpers import (
    RemoteBehaviour,
    configure,
    delivery_status,
    mailbox_messages,
    run_queue,
    run_until_empty,
    send,
)


def drop_in_pickup(server, name: str, data: bytes) -> None:
    path = server.home_path / "Pickup" / name
    path.write_bytes(data)
    old = time.time() - 5
    os.utime(path, (old, old))  # settled: the writer is done with it


# --- Pickup ------------------------------------------------------------------------------------------


def test_a_pickup_file_with_an_envelope_is_sent_to_local_and_remote_recipients_and_removed(server, dns, remotes):
    dns.add_a("far.test", "127.0.0.4")
    remote = remotes("127.0.0.4")
    drop_in_pickup(
        server,
        "note.eml",
        b"x-sender: alice@lab.test\r\nx-receiver: bob@far.test\r\n"
        b"x-receiver: alice@lab.test\r\nSubject: from pickup\r\n\r\nhello\r\n",
    )
    assert pickup.scan_pickup(server) == 1
    assert not (server.home_path / "Pickup" / "note.eml").exists()
    run_until_empty(server)
    [received] = remote.received
    assert received.mail_from == "alice@lab.test" and received.rcpt_tos == ["bob@far.test"]
    assert b"via the Pickup folder" in received.content and b"Message-ID:" in received.content
    [local] = mailbox_messages(server, "alice")
    assert local["Subject"] == "from pickup"


def test_a_pickup_file_without_envelope_uses_its_headers_and_loses_its_bcc(server, dns, remotes):
    dns.add_a("far.test", "127.0.0.4")
    remote = remotes("127.0.0.4")
    drop_in_pickup(
        server,
        "plain.eml",
        b"From: Alice <alice@lab.test>\nTo: bob@far.test\nCc: alice@lab.test\n"
        b"Bcc: hidden@far.test\nSubject: plain\n\nhello\n",
    )
    pickup.scan_pickup(server)
    run_until_empty(server)
    [received] = remote.received
    assert sorted(received.rcpt_tos) == ["bob@far.test", "hidden@far.test"]
    assert b"hidden@far.test" not in received.content and b"Bcc" not in received.content
    assert mailbox_messages(server, "alice")[0]["Subject"] == "plain"


def test_an_unparseable_pickup_file_goes_to_badmail_with_the_reason(server):
    drop_in_pickup(server, "junk.eml", b"just some text without headers or addresses\n")
    pickup.scan_pickup(server)
    assert not (server.home_path / "Pickup" / "junk.eml").exists()
    assert (server.home_path / "BadMail" / "junk.eml").read_bytes().startswith(b"just some text")
    assert "no x-sender: line and no From: header" in (server.home_path / "BadMail" / "junk.bdr").read_text()
    assert not QueuedMessage.objects.filter(server=server).exists()


def test_a_file_still_being_written_is_left_alone(server):
    (server.home_path / "Pickup" / "fresh.eml").write_bytes(b"x-sender: a@lab.test\r\n")
    assert pickup.scan_pickup(server) == 0
    assert (server.home_path / "Pickup" / "fresh.eml").exists()


# --- queue actions -------------------------------------------------------------------------------


def test_the_queue_view_shows_sender_recipients_size_attempts_last_reply_and_next_retry(server, dns, remotes):
    dns.add_a("far.test", "127.0.0.4")
    remotes("127.0.0.4", behaviour=RemoteBehaviour(rcpt_replies={"bob": "451 4.2.1 Mailbox busy"}))
    row = send(server, ["bob@far.test", "carol@far.test"])
    run_queue(server)
    [entry] = queue_services.reconcile_and_list_queue(server)
    assert entry.sender == "alice@lab.test" and entry.size_octets == row.size_octets and entry.attempts == 1
    assert {(r.address, r.state) for r in entry.recipients} == {
        ("bob@far.test", "pending"),
        ("carol@far.test", "delivered"),
    }
    assert "451 4.2.1 Mailbox busy" in entry.last_reply
    assert entry.next_retry_at > entry.queued_at and not entry.frozen and not entry.in_delivery


def test_a_frozen_message_is_not_attempted_until_unfrozen_and_retry_now_makes_it_due(server, dns, remotes):
    dns.add_a("far.test", "127.0.0.4")
    remote = remotes("127.0.0.4", behaviour=RemoteBehaviour(defer_data_times=1))
    configure(server, first_retry_interval_s=3600)
    row = send(server, ["bob@far.test"])
    queue_services.freeze(row, actor="admin")
    run_queue(server)
    assert remote.data_commands == 0
    queue_services.unfreeze(row, actor="admin")
    run_queue(server)
    assert remote.data_commands == 1  # deferred; the next retry is an hour away
    run_queue(server)
    assert remote.data_commands == 1
    queue_services.retry_now(row, actor="admin")
    run_until_empty(server)
    assert remote.recipients() == ["bob@far.test"]
    assert list(AuditEntry.objects.filter(object_type="queuedmessage").values_list("action", "actor"))[:3] == [
        ("retry_queued_message", "admin"),
        ("unfreeze_queued_message", "admin"),
        ("freeze_queued_message", "admin"),
    ]


def test_deleting_silently_removes_the_file_and_tells_nobody(server):
    row = send(server, ["bob@far.test"])
    queue_services.delete_message(row, ndr=False, actor="admin")
    assert not (server.home_path / "Queue" / row.name).exists()
    assert not QueuedMessage.objects.filter(server=server).exists()
    assert mailbox_messages(server, "alice") == []
    assert AuditEntry.objects.filter(action="delete_queued_message", actor="admin").exists()


def test_deleting_with_ndr_tells_the_sender_about_the_pending_recipients(server):
    row = send(server, ["bob@far.test"])
    queue_services.delete_message(row, ndr=True, actor="admin")
    run_until_empty(server)
    status = delivery_status(mailbox_messages(server, "alice")[0])
    assert "Final-Recipient: rfc822; bob@far.test" in status and "Status: 5.3.0" in status
    assert (server.home_path / "BadMail" / row.name).exists()


def test_an_action_on_a_message_being_delivered_is_refused(server):
    row = send(server, ["bob@far.test"])
    QueuedMessage.objects.filter(pk=row.pk).update(claimed_by=engine.claimant())
    with pytest.raises(RefusedError, match="being delivered"):
        queue_services.delete_message(row, ndr=False, actor="admin")
    assert (server.home_path / "Queue" / row.name).exists()


# --- pure pieces ---------------------------------------------------------------------------------


def test_wire_data_makes_crlf_lines_and_doubles_leading_dots():
    assert client.wire_data(b"a\nb\r\n.c\r.\n..d") == b"a\r\nb\r\n..c\r\n..\r\n...d\r\n.\r\n"
    assert client.wire_data(b"done\r\n") == b"done\r\n.\r\n"


def test_mx_hosts_are_ordered_by_preference_and_shuffled_among_equals():
    records = [(20, "c"), (10, "a"), (10, "b"), (30, "d")]
    orders = {tuple(host for _, host in routing.order_mx(records, random.Random(seed))) for seed in range(30)}
    assert orders == {("a", "b", "c", "d"), ("b", "a", "c", "d")}


def test_the_dns_server_setting_takes_an_address_and_an_optional_port():
    assert routing.parse_dns_server("10.0.0.53") == ("10.0.0.53", 53)
    assert routing.parse_dns_server("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert routing.parse_dns_server("[::1]:5300") == ("::1", 5300)
    with pytest.raises(ValueError):
        routing.parse_dns_server("dns.example:53")


def test_a_dns_timeout_is_a_temporary_routing_failure(dns):
    dns.silent.add("slow.test")
    resolver = routing.make_resolver(dns.address, timeout_s=0.5)
    with pytest.raises(routing.RoutingError) as failure:
        routing.mx_route(resolver, "slow.test", 25, is_self=lambda *args: False)
    assert failure.value.status == "4.4.3" and not failure.value.permanent


def test_outbound_connections_never_exceed_the_servers_limit(tmp_path):
    slots = client.ConnectionSlots(tmp_path, 1, wait_s=0.3)
    held = threading.Event()
    done = threading.Event()

    def hold_one():
        with slots.hold():
            held.set()
            done.wait(5)

    thread = threading.Thread(target=hold_one)
    thread.start()
    held.wait(5)
    with pytest.raises(client.SessionError, match="4.4.5"), slots.hold():
        pass
    done.set()
    thread.join()
    with slots.hold():
        pass


# --- the smtpqueue command ----------------------------------------------------------------------------


def smtpqueue(*args) -> str:
    out = StringIO()
    call_command("smtpqueue", *args, stdout=out)
    return out.getvalue()


def test_the_smtpqueue_command_lists_acts_on_the_queue_and_changes_the_delivery_tab(server):
    # The command finds servers on this node (uncommitted here, so no Celery worker sees it).
    VirtualServer.objects.filter(pk=server.pk).update(node=local_node())
    row = send(server, ["bob@far.test"])
    listing = smtpqueue("list", str(server.pk))
    assert row.name in listing and "<alice@lab.test>" in listing and "bob@far.test  pending" in listing
    assert "frozen" in smtpqueue("freeze", str(server.pk), str(row.pk))
    assert "frozen" in smtpqueue("list", str(server.pk))
    smtpqueue("delete", str(server.pk), row.name, "--ndr")
    assert not QueuedMessage.objects.filter(pk=row.pk).exists()
    shown = smtpqueue(
        "delivery",
        str(server.pk),
        "smart_host=relay.test",
        "smart_host_password=s3cret",
        "attempt_direct_before_smart_host=yes",
    )
    assert "smart_host=relay.test" in shown and "smart_host_password=********" in shown
    assert "attempt_direct_before_smart_host=True" in shown
    with pytest.raises(CommandError, match="Enter a number"):
        smtpqueue("delivery", str(server.pk), "outbound_port=0")


def test_mail_is_sent_from_the_servers_address_only_where_that_address_can_reach():
    assert client.can_bind_source("192.0.2.10", "198.51.100.7")
    assert client.can_bind_source("127.0.0.1", "127.0.0.5")
    assert not client.can_bind_source("127.0.0.1", "198.51.100.7")  # loopback cannot reach the Internet
    assert not client.can_bind_source("192.0.2.10", "2001:db8::1")
    assert not client.can_bind_source(None, "198.51.100.7")


def test_pickup_recipients_are_taken_once_each_and_keep_the_case_of_their_local_part():
    _, recipients, _ = pickup.read_pickup_file(
        b"From: a@lab.test\r\nTo: Bob@Far.test, carol@x.test\r\nCc: bob@far.test\r\n\r\nhi\r\n"
    )
    assert recipients == ["Bob@Far.test", "carol@x.test"]
