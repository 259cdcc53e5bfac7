"""The IMAP worker's asyncio adapter on real loopback sockets, around a scripted session.

What is proven here belongs to the adapter, whatever the protocol core does: STARTTLS never runs what
was pipelined before the handshake, IDLE clients hear of changes to their folder within a second,
silent clients are logged out, a paused worker refuses with BYE, and Current Sessions shows and
terminates IMAP sessions.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid

import pytest

from servers.livestate import redis_client, sessions_key, terminate_key
from servers.workers.imapd import PAUSED_BYE, SERVER_BUG_BYE, TERMINATED_BYE, ImapConnection, pieces_for_starttls
from tests.helpers import wait_until
from tests.imap_inprocess import HOSTNAME, LineClient, ScriptedSession, serving_imap

# Sockets in one process: a second database backend proves nothing new here.
pytestmark = pytest.mark.backend_independent


@pytest.fixture(autouse=True)
def fresh_sessions(tmp_path):
    ScriptedSession.made = []
    ScriptedSession.watch_dir = tmp_path / "INBOX-new"
    ScriptedSession.watch_dir.mkdir()
    yield
    ScriptedSession.watch_dir = None


def test_the_greeting_is_the_sessions_and_commands_get_its_replies(tmp_path):
    with serving_imap(tmp_path) as served:
        client = LineClient(served.port)
        assert client.line() == b"* OK [CAPABILITY IMAP4rev2 STARTTLS IDLE] scripted ready"
        assert client.command("a NOOP") == [b"a OK NOOP completed"]
        assert client.command("b LOGOUT") == [b"* BYE bye", b"b OK LOGOUT completed"]
        assert client.at_eof()
        client.close()
        wait_until(lambda: ScriptedSession.made[0].lost, timeout_s=5, message="connection_lost")


def test_a_command_pipelined_after_starttls_is_never_executed_and_is_logged(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="mailconsole.imapd")
    with serving_imap(tmp_path) as served:
        client = LineClient(served.port)
        client.line()
        client.send(b"a STARTTLS\r\nb LOGIN u p\r\n")  # one packet: the injection of CVE-2011-0411
        assert client.line() == b"a OK Begin TLS negotiation now"
        client.starttls()

        assert client.nothing_arrives_within(0.5)  # LOGIN was not answered inside TLS
        assert client.command("c NOOP") == [b"c OK NOOP completed"]
        client.close()

    [session] = ScriptedSession.made
    assert session.executed == ["STARTTLS", "NOOP"] and session.tls_active
    [record] = [r for r in caplog.records if "plaintext after STARTTLS" in r.getMessage()]
    assert "discarded 13 bytes" in record.getMessage()


def test_a_starttls_alone_upgrades_and_discards_nothing(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="mailconsole.imapd")
    with serving_imap(tmp_path) as served:
        client = LineClient(served.port)
        client.line()
        assert client.command("a STARTTLS") == [b"a OK Begin TLS negotiation now"]
        client.starttls()
        assert client.command("b NOOP") == [b"b OK NOOP completed"]
        client.close()
    assert not [r for r in caplog.records if "plaintext after STARTTLS" in r.getMessage()]


def test_only_chunks_that_may_hold_starttls_are_cut_into_lines():
    assert pieces_for_starttls(b"a NOOP\r\nb NOOP\r\n") == [b"a NOOP\r\nb NOOP\r\n"]
    assert pieces_for_starttls(b"a starttls\r\nb LOGIN u p\r\n") == [b"a starttls\r\n", b"b LOGIN u p\r\n"]


def test_an_idling_client_hears_of_a_delivery_within_a_second(tmp_path):
    with serving_imap(tmp_path) as served:
        client = LineClient(served.port)
        client.line()
        client.command("a SELECT INBOX")
        client.send(b"b IDLE\r\n")
        assert client.line() == b"+ idling"
        assert ScriptedSession.watch_dir is not None
        delivered_at = time.monotonic()
        (ScriptedSession.watch_dir / "1.msg").write_bytes(b"Subject: hi\r\n\r\nhi\r\n")
        client.sock.settimeout(1.0)
        assert client.line() == b"* 1 EXISTS"
        assert time.monotonic() - delivered_at < 1.0

        client.send(b"DONE\r\n")
        assert client.line() == b"b OK IDLE done"
        client.close()


def test_a_session_that_is_not_idling_gets_no_unsolicited_updates(tmp_path):
    with serving_imap(tmp_path) as served:
        client = LineClient(served.port)
        client.line()
        client.command("a SELECT INBOX")
        assert ScriptedSession.watch_dir is not None
        (ScriptedSession.watch_dir / "1.msg").write_bytes(b"x")
        assert client.nothing_arrives_within(0.8)  # the watcher looked at least once meanwhile
        client.close()


def test_a_silent_client_is_logged_out(tmp_path):
    with serving_imap(tmp_path) as served:
        served.worker.autologout_s = 0.3
        client = LineClient(served.port)
        client.line()
        client.command("a SELECT INBOX")
        client.send(b"b IDLE\r\n")
        client.line()
        assert client.line() == b"* BYE Autologout; idle for too long"
        assert client.at_eof()
        client.close()


def test_a_paused_worker_greets_new_clients_with_bye(tmp_path):
    with serving_imap(tmp_path) as served:
        served.worker.control.paused = True
        client = LineClient(served.port)
        assert client.line() + b"\r\n" == PAUSED_BYE.format(hostname=HOSTNAME).encode()
        assert client.at_eof()
        client.close()
    assert ScriptedSession.made == []


def test_current_sessions_show_the_client_and_folder_and_terminate_closes_one(tmp_path):
    unit_id = 900_000 + os.getpid() % 10_000
    with serving_imap(tmp_path, unit_id=unit_id) as served:
        client = LineClient(served.port)
        client.line()
        client.command("a SELECT Archive")
        served.run(served.worker.publish_sessions_and_take_orders())

        published = redis_client().hgetall(sessions_key("imap", unit_id))
        [info] = [json.loads(value) for value in published.values()]
        assert (info["protocol"], info["client"], info["folder"], info["state"]) == (
            "IMAP",
            "127.0.0.1",
            "Archive",
            "SELECTED",
        )
        assert info["connected_at"] <= time.time() and not info["tls"]
        greeting = ScriptedSession.made[0].greeting()
        assert info["bytes"] == len(greeting + b"* 0 EXISTS\r\na OK [READ-WRITE] SELECT completed\r\n")

        redis_client().sadd(terminate_key("imap", unit_id), info["id"], uuid.uuid4().hex[:12])
        served.run(served.worker.publish_sessions_and_take_orders())
        assert client.line() + b"\r\n" == TERMINATED_BYE.encode()
        assert client.at_eof()
        client.close()


def test_a_failing_session_costs_its_client_a_bye_and_nobody_else_anything(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="mailconsole.imapd")
    with serving_imap(tmp_path) as served:
        other = LineClient(served.port)
        other.line()
        client = LineClient(served.port)
        client.line()
        client.send(b"a CRASH\r\n")
        assert client.line() + b"\r\n" == SERVER_BUG_BYE.encode()
        assert client.at_eof()
        client.close()
        assert other.command("b NOOP") == [b"b OK NOOP completed"]
        other.close()
    assert [r for r in caplog.records if "IMAP session failed" in r.getMessage()]
    wait_until(lambda: ScriptedSession.made[1].lost, timeout_s=5, message="connection_lost")


def test_only_calls_that_may_leave_the_session_idling_stamp_the_watched_folders():
    connection = ImapConnection(writer=None, client="127.0.0.1", tls=False)
    connection.watch_paths = ("/nonexistent/new",)

    assert not connection._may_idle_after((b"a1 FETCH 7 BODY.PEEK[]\r\n",))
    assert connection._may_idle_after((b"a2 idle\r\n",))
    assert connection._may_idle_after((b"x" * (64 * 1024 + 1),))  # too big to look through: stamped
    connection.idling = True
    assert connection._may_idle_after((b"DONE\r\n",))
