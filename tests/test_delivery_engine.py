"""Outbound delivery in-process: a real DNS server and real SMTP servers on loopback, no mocks.

The servers here live on a node of their own, so a Celery worker running for other tests never
delivers their mail behind the test's back; the tests drive `engine.process_message` themselves.
"""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from servers import mailstore, services, stored_secrets
from servers.delivery import engine
from servers.delivery import services as queue_services
from servers.delivery.models import DeliverySettings, QueuedMessage, RecipientState
from servers.models import AuditEntry, Domain, DomainType
from servers.services import RefusedError
from tests.delivery_helpers import (
    MESSAGE,
    Refuser,
    RemoteBehaviour,
    configure,
    delivery_status,
    mailbox_messages,
    original_headers_part,
    run_queue,
    run_until_empty,
    send,
)
from tests.factories import make_mailbox, make_server

# --- the Queue folder ---------------------------------------------------------------------------


def test_enqueue_writes_the_envelope_and_the_message_and_the_row_is_rebuilt_from_the_file(server):
    message_id = mailstore.enqueue(
        server.home_dir,
        "alice@lab.test",
        ["bob@far.test", "carol@far.test"],
        [b"Received: by us\r\n", b"Subject: hi\r\n\r\nbody\r\n"],
    )
    path = server.home_path / "Queue" / f"{message_id}.eml"
    assert path.read_bytes() == (
        b"x-sender: alice@lab.test\r\nx-receiver: bob@far.test\r\n"
        b"x-receiver: carol@far.test\r\nReceived: by us\r\nSubject: hi\r\n\r\nbody\r\n"
    )
    assert not list((server.home_path / ".tmp").glob(f"{message_id}*"))

    engine.reconcile_queue(server)
    row = QueuedMessage.objects.get(name=path.name)
    assert row.mail_from == "alice@lab.test"
    assert row.size_octets == len(b"Received: by us\r\nSubject: hi\r\n\r\nbody\r\n")
    assert sorted(row.recipients.values_list("address", "state")) == [
        ("bob@far.test", "pending"),
        ("carol@far.test", "pending"),
    ]

    row.delete()  # the database lost it: the folder is the truth
    engine.reconcile_queue(server)
    assert QueuedMessage.objects.get(name=path.name).recipients.count() == 2


def test_a_row_whose_file_is_gone_is_dropped_and_a_file_without_envelope_goes_to_badmail(server):
    row = send(server, ["bob@far.test"])
    (server.home_path / "Queue" / row.name).unlink()
    (server.home_path / "Queue" / "junk.eml").write_bytes(b"Subject: no envelope\r\n\r\nhi\r\n")
    engine.reconcile_queue(server)
    assert not QueuedMessage.objects.filter(server=server).exists()
    assert (server.home_path / "BadMail" / "junk.eml").exists()
    assert "no x-sender/x-receiver" in (server.home_path / "BadMail" / "junk.bdr").read_text()


# --- routing --------------------------------------------------------------------------------------


def test_it_tries_mx_hosts_in_preference_order_and_sends_crlf_dot_stuffed_data(server, dns, remotes):
    dns.add_mx("far.test", (20, "mx2.far.test"), (10, "mx1.far.test"))
    dns.add_a("mx1.far.test", "127.0.0.2")
    dns.add_a("mx2.far.test", "127.0.0.3")
    busy = remotes("127.0.0.2", kind=Refuser)
    good = remotes("127.0.0.3")
    send(server, ["bob@far.test"])
    run_queue(server)
    assert busy.connections == 1
    [received] = good.received
    assert received.rcpt_tos == ["bob@far.test"]
    assert received.tls  # opportunistic STARTTLS
    # aiosmtpd undoes the dot-stuffing; every line ending arrived as CRLF
    assert received.content == MESSAGE.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n") + b"\r\n"
    assert not QueuedMessage.objects.filter(server=server).exists()
    assert not any((server.home_path / "Queue").iterdir())


def test_a_domain_without_mx_gets_its_mail_at_its_address_record(server, dns, remotes):
    dns.add_a("plain.test", "127.0.0.4")
    remote = remotes("127.0.0.4")
    send(server, ["bob@plain.test"])
    run_queue(server)
    assert remote.recipients() == ["bob@plain.test"]


def test_null_mx_bounces_at_once_with_a_dsn_a_copy_to_the_ndr_address_and_badmail(server, dns):
    make_mailbox(server, "postmaster-copy")
    configure(server, ndr_copy_address="postmaster-copy@lab.test")
    dns.add_mx("nomail.test", (0, "."))
    row = send(server, ["bob@nomail.test"])
    run_until_empty(server)

    [report] = mailbox_messages(server, "alice")
    assert report["Subject"] == "Undeliverable: Quarterly report"
    status = delivery_status(report)
    assert "Reporting-MTA: dns; mx.test.invalid" in status
    assert "Final-Recipient: rfc822; bob@nomail.test" in status
    assert "Action: failed" in status
    assert "Status: 5.1.10" in status
    assert "Subject: Quarterly report" in original_headers_part(report)
    assert report["Return-Path"] == "<>"
    [copy] = mailbox_messages(server, "postmaster-copy")
    assert copy["Subject"] == report["Subject"]

    badmail = server.home_path / "BadMail"
    assert (badmail / row.name).read_bytes().endswith(MESSAGE)
    assert "bob@nomail.test" in (badmail / row.name.replace(".eml", ".bdr")).read_text()
    assert "5.1.10" in (badmail / row.name.replace(".eml", ".bdr")).read_text()


def test_a_report_to_a_russian_language_domain_explains_in_russian_and_keeps_the_machine_part(server, dns):
    Domain.objects.filter(name="lab.test").update(language="ru")
    dns.add_mx("nomail.test", (0, "."))
    russian_subject = "=?utf-8?b?" + base64.b64encode("Отчёт за квартал".encode()).decode() + "?="
    send(
        server,
        ["bob@nomail.test"],
        message=MESSAGE.replace(b"Subject: Quarterly report", f"Subject: {russian_subject}".encode()),
    )
    run_until_empty(server)

    [report] = mailbox_messages(server, "alice")
    assert report["Subject"] == "Недоставлено: Отчёт за квартал"
    human = list(report.iter_parts())[0]
    assert human["Content-Transfer-Encoding"] == "quoted-printable"
    text = human.get_content()
    assert "Не удалось доставить ваше сообщение получателям, указанным ниже." in text
    assert "Тема вашего сообщения: Отчёт за квартал" in text
    status = delivery_status(report)  # the machine-readable part is the same in every language
    assert "Action: failed" in status and "Status: 5.1.10" in status
    assert "Final-Recipient: rfc822; bob@nomail.test" in status


def test_a_report_to_a_domain_without_a_language_is_in_the_installations(server, dns, settings):
    settings.MAIL_LANGUAGE = "ru"
    dns.add_mx("nomail.test", (0, "."))
    send(server, ["bob@nomail.test"])
    run_until_empty(server)
    [report] = mailbox_messages(server, "alice")
    assert report["Subject"] == "Недоставлено: Quarterly report"


def test_nxdomain_is_permanent_and_servfail_is_temporary(server, dns):
    dns.servfail.add("flaky.test")
    row = send(server, ["bob@nowhere.test", "carol@flaky.test"])
    run_queue(server)
    states = dict(row.recipients.values_list("address", "status"))
    assert states == {"bob@nowhere.test": "5.1.2", "carol@flaky.test": "4.4.3"}
    assert row.recipients.get(address="carol@flaky.test").state == RecipientState.PENDING
    run_queue(server)
    assert "Status: 5.1.2" in delivery_status(mailbox_messages(server, "alice")[0])


def test_an_mx_that_points_back_to_this_server_is_a_loop(server, dns):
    dns.add_mx("loop.test", (10, settings.MAIL_HOSTNAME))
    dns.add_a(settings.MAIL_HOSTNAME, "127.0.0.1")
    send(server, ["bob@loop.test"])
    run_until_empty(server)
    assert "Status: 5.4.6" in delivery_status(mailbox_messages(server, "alice")[0])


# --- per-recipient results and retries ----------------------------------------------------------


def test_one_transaction_per_host_carries_all_recipients_with_per_recipient_results(server, dns, remotes):
    for domain in ("a.test", "b.test"):
        dns.add_mx(domain, (10, "mx.shared.test"))
    dns.add_a("mx.shared.test", "127.0.0.5")
    remote = remotes(
        "127.0.0.5",
        behaviour=RemoteBehaviour(rcpt_replies={"gone": "550 5.1.1 No such user", "later": "451 4.2.1 Mailbox busy"}),
    )
    row = send(server, ["ok1@a.test", "ok2@b.test", "gone@a.test", "later@a.test"])
    run_queue(server, rounds=2)  # the message, then the DSN it made
    [first] = remote.received
    assert sorted(first.rcpt_tos) == ["ok1@a.test", "ok2@b.test"]
    assert dict(row.recipients.values_list("address", "state")) == {
        "ok1@a.test": "delivered",
        "ok2@b.test": "delivered",
        "gone@a.test": "failed",
        "later@a.test": "pending",
    }
    status = delivery_status(mailbox_messages(server, "alice")[0])
    assert "gone@a.test" in status and "later@a.test" not in status
    assert "Diagnostic-Code: smtp; 550 5.1.1 No such user" in status

    remote.behaviour.rcpt_replies.pop("later")
    run_until_empty(server, later_s=1.1)
    assert [m.rcpt_tos for m in remote.received] == [first.rcpt_tos, ["later@a.test"]]
    assert len(mailbox_messages(server, "alice")) == 1


def test_a_deferring_host_is_retried_on_schedule_until_it_accepts(server, dns, remotes):
    configure(server, first_retry_interval_s=1, second_retry_interval_s=2)
    dns.add_a("slow.test", "127.0.0.6")
    remote = remotes("127.0.0.6", behaviour=RemoteBehaviour(defer_data_times=2))
    row = send(server, ["bob@slow.test"])
    run_queue(server)
    row.refresh_from_db()
    assert row.attempts == 1 and "451 4.3.0 Try again later" in row.last_reply
    assert timedelta(seconds=0.5) < row.next_attempt_at - row.last_attempt_at <= timedelta(seconds=1)
    run_queue(server)  # not due yet: nothing happens
    assert QueuedMessage.objects.get(pk=row.pk).attempts == 1
    run_queue(server, later_s=1.1)
    row.refresh_from_db()
    assert row.attempts == 2
    assert timedelta(seconds=1.5) < row.next_attempt_at - row.last_attempt_at <= timedelta(seconds=2)
    run_queue(server, later_s=1.1 + 2.1)
    assert remote.recipients() == ["bob@slow.test"]
    assert remote.data_commands == 3
    assert not QueuedMessage.objects.filter(pk=row.pk).exists()
    assert mailbox_messages(server, "alice") == []


def test_the_sender_is_told_of_a_delay_and_of_the_expiry(server, dns, remotes):
    configure(server, delay_notification_s=1, expiration_timeout_s=3)
    dns.add_a("down.test", "127.0.0.6")
    remotes("127.0.0.6", behaviour=RemoteBehaviour(defer_data_times=100))
    row = send(server, ["bob@down.test"])
    run_queue(server)
    run_queue(server, rounds=2, later_s=1.1)
    [delayed] = mailbox_messages(server, "alice")
    status = delivery_status(delayed)
    assert "Action: delayed" in status and "Will-Retry-Until:" in status
    assert delayed["Subject"].startswith("Delivery delayed")
    assert QueuedMessage.objects.filter(pk=row.pk).exists()

    run_queue(server, later_s=1.1 + 2)  # the message expires; its report is new, so it is delivered now
    run_until_empty(server)
    expired = mailbox_messages(server, "alice")[1]
    status = delivery_status(expired)
    assert "Action: failed" in status and "Status: 4.4.7" in status
    assert (server.home_path / "BadMail" / row.name).exists()


def test_a_permanent_failure_of_a_message_from_the_null_sender_goes_only_to_badmail(server, dns, remotes):
    dns.add_a("strict.test", "127.0.0.6")
    remotes("127.0.0.6", behaviour=RemoteBehaviour(reject_data="554 5.7.1 Rejected"))
    row = send(server, ["bob@strict.test"], mail_from="")
    run_until_empty(server)
    assert mailbox_messages(server, "alice") == []
    assert "554 5.7.1 Rejected" in (server.home_path / "BadMail" / row.name.replace(".eml", ".bdr")).read_text()


def test_a_message_past_the_max_hop_count_bounces_as_a_loop(server):
    looping = b"".join(b"Received: from hop%d\r\n" % n for n in range(16)) + b"Subject: x\r\n\r\nbody\r\n"
    send(server, ["bob@far.test"], message=looping)
    run_until_empty(server)
    assert "Status: 5.4.6" in delivery_status(mailbox_messages(server, "alice")[0])


# --- smart hosts ----------------------------------------------------------------------------------


def test_a_smart_host_gets_everything_with_auth_over_starttls(server, dns, remotes, port):
    dns.add_a("relay.test", "127.0.0.7")
    dns.add_mx("far.test", (10, "mx.far.test"))
    relay = remotes("127.0.0.7", users={"relay-user": "relay-pass"})
    queue_services.update_delivery_settings(
        server,
        smart_host="relay.test",
        smart_host_port=port,
        smart_host_username="relay-user",
        smart_host_password="relay-pass",
        actor="admin",
    )
    send(server, ["bob@far.test", "carol@unknown-anywhere.test"])
    run_queue(server)
    [received] = relay.received
    assert sorted(received.rcpt_tos) == ["bob@far.test", "carol@unknown-anywhere.test"]
    assert received.auth_user == "relay-user" and received.tls


def test_a_wrong_smart_host_password_keeps_the_mail_queued(server, dns, remotes, port):
    remotes("127.0.0.7", users={"relay-user": "relay-pass"})
    configure(
        server,
        smart_host="[127.0.0.7]",
        smart_host_port=port,
        smart_host_username="relay-user",
        smart_host_password=stored_secrets.conceal("wrong"),
    )
    row = send(server, ["bob@far.test"])
    run_queue(server)
    recipient = row.recipients.get()
    assert recipient.state == RecipientState.PENDING and recipient.status == "4.7.0"


def test_a_remote_domain_route_wins_over_dns(server, dns, remotes, port):
    domain = services.add_domain(server, "partner.test", type=DomainType.REMOTE)
    queue_services.set_remote_domain_route(domain, smart_host="[127.0.0.8]", port=port, actor="admin")
    dns.add_a("partner.test", "127.0.0.9")
    routed = remotes("127.0.0.8")
    send(server, ["bob@partner.test"])
    run_queue(server)
    assert routed.recipients() == ["bob@partner.test"]


def test_direct_delivery_is_tried_before_the_smart_host_when_asked(server, dns, remotes, port):
    dns.add_a("direct.test", "127.0.0.4")
    direct = remotes("127.0.0.4", behaviour=RemoteBehaviour(defer_data_times=0))
    relay = remotes("127.0.0.7")
    dns.add_a("dead.test", "127.0.0.3")  # nothing listens there
    configure(server, smart_host="127.0.0.7", smart_host_port=port, attempt_direct_before_smart_host=True)
    send(server, ["bob@direct.test", "carol@dead.test"])
    run_queue(server)
    assert direct.recipients() == ["bob@direct.test"]
    assert relay.recipients() == ["carol@dead.test"]


# --- local recipients, and a stopped server ------------------------------------------------------


def test_local_recipients_of_a_queued_message_go_to_their_maildir(server):
    row = send(server, ["alice@lab.test", "nobody@lab.test"], mail_from="")
    run_queue(server)
    assert [m["Subject"] for m in mailbox_messages(server, "alice")] == ["Quarterly report"]
    assert mailbox_messages(server, "alice")[0]["Return-Path"] == "<>"
    assert not QueuedMessage.objects.filter(pk=row.pk).exists()
    report = (server.home_path / "BadMail" / row.name.replace(".eml", ".bdr")).read_text()
    assert "<nobody@lab.test>: 550 5.1.1" in report


def test_a_stopped_server_keeps_its_queue_and_resumes_where_it_left_off(server, dns, remotes):
    dns.add_a("far.test", "127.0.0.4")
    remote = remotes("127.0.0.4")
    row = send(server, ["bob@far.test"])
    services.stop_server(server)
    assert server not in engine.active_servers(server.node.name)
    assert engine.process_message(row.pk) == "server stopped"
    assert remote.received == [] and QueuedMessage.objects.filter(pk=row.pk).exists()
    services.pause_server(server)
    run_queue(server)
    assert remote.recipients() == ["bob@far.test"]


# --- claims ------------------------------------------------------------------------------------------


def test_a_claim_of_a_dead_process_is_void_and_a_live_one_holds(server):
    row = send(server, ["bob@far.test"])
    QueuedMessage.objects.filter(pk=row.pk).update(claimed_by=engine.claimant(), claimed_at=timezone.now())
    assert engine.claim(row.pk) is None
    dead = engine.claimant().rsplit(":", 1)[0] + ":1"  # our pid with another start time: a reused pid
    QueuedMessage.objects.filter(pk=row.pk).update(claimed_by=dead)
    assert engine.release_dead_claims([server.pk]) == 1
    assert engine.claim(row.pk) is not None


def test_audit_entries_are_written_for_queue_actions(server):
    row = send(server, ["bob@far.test"])
    queue_services.freeze(row, actor="alice")
    queue_services.unfreeze(row, actor="alice")
    assert list(AuditEntry.objects.filter(object_type="queuedmessage").values_list("action", flat=True)) == [
        "unfreeze_queued_message",
        "freeze_queued_message",
    ]


# --- the Delivery tab -------------------------------------------------------------------------------


def test_the_delivery_tab_starts_with_the_iis_defaults(server):
    config = DeliverySettings.for_server(make_server())
    assert [config.retry_interval_s(n) for n in (1, 2, 3, 4, 9)] == [600, 600, 600, 900, 900]
    assert (config.delay_notification_s, config.expiration_timeout_s) == (12 * 3600, 2 * 24 * 3600)
    assert (config.outbound_port, config.max_outbound_connections, config.smart_host) == (25, 1000, "")


def test_delivery_settings_are_checked_and_audited_without_the_password(server):
    for field, value in [
        ("first_retry_interval_s", 0),
        ("outbound_port", 70000),
        ("smart_host", "not a host"),
        ("dns_server", "dns.example"),
        ("ndr_copy_address", "nobody"),
    ]:
        with pytest.raises(RefusedError) as error:
            queue_services.update_delivery_settings(server, actor="admin", **{field: value})
        assert error.value.field == field
    with pytest.raises(RefusedError, match="smart host"):
        queue_services.update_delivery_settings(server, smart_host_username="u", actor="admin")
    queue_services.update_delivery_settings(
        server, smart_host="[10.0.0.5]", smart_host_username="u", smart_host_password="secret", actor="admin"
    )
    entry = AuditEntry.objects.get(action="update_delivery_settings")
    assert entry.actor == "admin" and entry.after["smart_host_password"] == "********"
    assert "secret" not in str(entry.before) + str(entry.after)


def test_only_a_remote_domain_gets_a_route(server):
    with pytest.raises(RefusedError, match="remote domain"):
        queue_services.set_remote_domain_route(server.default_domain, smart_host="relay.test", actor="admin")


def test_an_unexpected_error_in_an_attempt_defers_the_message_instead_of_looping(server):
    configure(server, dns_server="not-an-address", first_retry_interval_s=60)
    row = send(server, ["bob@far.test"])
    run_queue(server)
    row.refresh_from_db()
    assert row.recipients.get().status == "4.3.0" and row.attempts == 1
    assert row.next_attempt_at > timezone.now() + timedelta(seconds=30)


def test_the_scan_hands_out_due_messages_oldest_first_and_never_floods_the_node_queue(server):
    rows = [send(server, [f"bob{n}@far.test"]) for n in range(5)]
    first = engine.due_messages([server.pk], redispatch_after_s=60, max_in_flight=3)
    assert first == [row.pk for row in rows[:3]]
    assert engine.due_messages([server.pk], redispatch_after_s=60, max_in_flight=3) == []
    engine.release(
        QueuedMessage.objects.get(pk=first[0]),
        dispatched_at=None,  # one attempt finished
        next_attempt_at=timezone.now() + timedelta(hours=1),
    )
    assert engine.due_messages([server.pk], redispatch_after_s=60, max_in_flight=3) == [rows[3].pk]


def test_non_ascii_addresses_go_only_to_hosts_that_offer_smtputf8(server, dns, remotes):
    dns.add_a("modern.test", "127.0.0.4")
    dns.add_a("old.test", "127.0.0.5")
    modern = remotes("127.0.0.4", enable_SMTPUTF8=True)
    remotes("127.0.0.5", enable_SMTPUTF8=False)
    greeting = MESSAGE.replace(b"Line one", "Grüße".encode())
    row = send(server, ["jürgen@modern.test", "jürgen@old.test"], message=greeting)
    run_queue(server)
    assert modern.recipients() == ["jürgen@modern.test"]
    assert "Grüße".encode() in modern.received[0].content
    report = (server.home_path / "BadMail" / row.name.replace(".eml", ".bdr")).read_text()
    assert "<jürgen@old.test>: 553 5.6.7" in report and "modern" not in report
