"""The durability promise under crashes: a message that got its 250 is on disk, whatever happens next.

Clients keep sending while the SMTP worker is SIGKILLed again and again at random moments; the
supervisor (a real Celery worker and beat) restarts it each time. Afterwards every acknowledged
message is in each of its recipients' Maildirs (or Drop/) at least once, and every file there is
complete. Nothing here measures time: the test waits for events, never for durations.
"""

from __future__ import annotations

import hashlib
import os
import random
import secrets
import signal
import smtplib
import threading
from collections import Counter
from email.parser import BytesParser
from pathlib import Path

import psutil
import pytest

from servers import services
from servers.models import VirtualServer
from servers.supervision import worker_alive
from tests.factories import make_mailbox, make_server
from tests.helpers import read_greeting, wait_until

# What is on disk after a SIGKILL does not depend on the database backend.
pytestmark = pytest.mark.backend_independent

KILL_COUNT = 10
CLIENT_THREADS = 6
MESSAGES_PER_CONNECTION = 5
# Acknowledged messages to wait for after each restart before the next kill: crashes happen under load.
ACKS_BETWEEN_KILLS = 4
# Generous bounds, not measurements: a busy disk (another job's fsyncs) can stall one fsync for seconds.
CLIENT_TIMEOUT_S = 60
PROGRESS_TIMEOUT_S = 120


def message_bytes(token: str, recipients: list[str], body_octets: int) -> bytes:
    """A message whose completeness can be checked from its own bytes: the body's digest is in a header."""
    rng = random.Random(token)
    lines = []
    size = 0
    while size < body_octets:
        line = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789 ", k=76))
        lines.append(line)
        size += len(line) + 2
    body = ("\r\n".join(lines) + f"\r\nend of {token}\r\n").encode("ascii")
    head = (
        f"From: loader@client.test\r\nTo: {', '.join(recipients)}\r\nSubject: durability {token}\r\n"
        f"X-Token: {token}\r\nX-Body-SHA256: {hashlib.sha256(body).hexdigest()}\r\n\r\n"
    ).encode("ascii")
    return head + body


def stored_token(path: Path) -> str:
    """The token of a stored message file; fail if the file is not the complete message we sent."""
    raw = path.read_bytes()
    header_end = raw.index(b"\r\n\r\n") + 4
    message = BytesParser().parsebytes(raw[:header_end], headersonly=True)
    token = message["X-Token"]
    assert token, f"{path} has no X-Token header"
    # A Drop/ file starts with x-sender/x-receiver lines; our headers and body follow the Received: one.
    body = raw[raw.index(b"\r\n\r\n", raw.index(b"X-Token:")) + 4 :]
    assert hashlib.sha256(body).hexdigest() == message["X-Body-SHA256"], f"{path} is incomplete or damaged"
    return token


class LoadClient:
    """Threads that send continuously and remember every message the server acknowledged with 250."""

    def __init__(self, port: int, recipient_sets: list[list[str]], *, spread_addresses: bool = False) -> None:
        self.port = port
        # Thread n connects from 127.0.0.(n+1): clients for every session process.
        self.spread_addresses = spread_addresses
        self.recipient_sets = recipient_sets
        self.acknowledged: dict[str, list[str]] = {}
        self.lock = threading.Lock()
        self.acked_event = threading.Condition(self.lock)
        self.stopping = threading.Event()
        self.errors: Counter[str] = Counter()
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(CLIENT_THREADS)]

    @property
    def ack_count(self) -> int:
        with self.lock:
            return len(self.acknowledged)

    def wait_for_more_acks(self, count: int) -> bool:
        """Wait until `count` more messages are acknowledged than now; False if mail stopped flowing."""
        with self.acked_event:
            target = len(self.acknowledged) + count
            return self.acked_event.wait_for(lambda: len(self.acknowledged) >= target, timeout=PROGRESS_TIMEOUT_S)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in self.threads), "a client thread did not stop"

    def _run(self, number: int) -> None:
        rng = random.Random(number)
        while not self.stopping.is_set():
            try:
                source = (f"127.0.0.{number + 1}", 0) if self.spread_addresses else None
                with smtplib.SMTP("127.0.0.1", self.port, timeout=CLIENT_TIMEOUT_S, source_address=source) as client:
                    for _ in range(MESSAGES_PER_CONNECTION):
                        if self.stopping.is_set():
                            break
                        self._send_one(client, rng)
            except (OSError, smtplib.SMTPException) as error:
                # The worker died under us: whatever was not acknowledged may or may not be stored.
                self.errors[f"{type(error).__name__}: {str(error)[:80]}"] += 1
                self.stopping.wait(0.05)

    def _send_one(self, client: smtplib.SMTP, rng: random.Random) -> None:
        token = secrets.token_hex(8)
        recipients = rng.choice(self.recipient_sets)
        body_octets = rng.choice((200, 4_000, 40_000, 200_000))
        refused = client.sendmail("loader@client.test", recipients, message_bytes(token, recipients, body_octets))
        # sendmail returns only after the 250 to DATA; every recipient was accepted at RCPT.
        assert not refused, refused
        with self.lock:
            self.acknowledged[token] = recipients
            self.acked_event.notify_all()


def live_worker_pid(server: VirtualServer, not_pid: int | None) -> int | None:
    """The pid of the server's worker once a new one (not `not_pid`) is up and answering SMTP."""
    server.refresh_from_db()
    if not server.pid or server.pid == not_pid or not worker_alive(server.pid, "smtp", server.pk):
        return None
    try:
        greeting = read_greeting(server.port)
    except OSError:
        return None
    return server.pid if greeting.startswith(b"220") else None


def allow_immediate_restart(server: VirtualServer) -> None:
    """Forget earlier crashes, as 60 s of good health would: the back-off policy is tested elsewhere.

    Without this the supervisor waits 5 s, 10 s, 20 s ... between restarts, and ten kills take minutes.
    """
    VirtualServer.objects.filter(pk=server.pk).update(consecutive_failures=0, next_start_at=None)


def files_in(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")]


@pytest.mark.timeout(600)
def test_every_acknowledged_message_survives_repeated_sigkill_of_the_worker(supervised):
    server = make_server(start=False)
    alice = make_mailbox(server, "alice")
    bob = make_mailbox(server, "bob")
    domain = server.default_domain.name
    postmaster = f"postmaster@{domain}"  # a group without members: its mail goes to Drop/
    services.start_server(server)
    pid = wait_until(lambda: live_worker_pid(server, None), timeout_s=60, message="the SMTP worker to start")
    recipient_sets = [
        [alice.address],
        [bob.address],
        [alice.address, bob.address],
        [postmaster],
        [alice.address, postmaster],
    ]
    client = LoadClient(server.port, recipient_sets)
    client.start()
    rng = random.Random()
    killed_pids = []
    try:
        for _ in range(KILL_COUNT):
            assert client.wait_for_more_acks(ACKS_BETWEEN_KILLS), f"no mail flowed: {client.errors}"
            # A random moment inside the stream of writes: before, during or after a fsync or a rename.
            client.stopping.wait(rng.uniform(0, 0.3))
            allow_immediate_restart(server)
            os.kill(pid, signal.SIGKILL)
            killed_pids.append(pid)
            pid = wait_until(
                lambda old=pid: live_worker_pid(server, old),
                timeout_s=60,
                message="the supervisor to restart the killed SMTP worker",
            )
    finally:
        client.stop()

    # The server is back; a last message proves it accepts and that no kill is still in flight.
    wait_until(lambda: live_worker_pid(server, None), timeout_s=30, message="the SMTP worker to be up")
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as last:
        last_token = secrets.token_hex(8)
        last.sendmail("loader@client.test", [alice.address], message_bytes(last_token, [alice.address], 100))
    client.acknowledged[last_token] = [alice.address]

    server.refresh_from_db()
    assert len(set(killed_pids)) == KILL_COUNT
    assert server.restart_count >= KILL_COUNT
    assert_every_acknowledged_message_is_stored_whole(client, server, alice, bob, postmaster)


def assert_every_acknowledged_message_is_stored_whole(
    client: LoadClient, server: VirtualServer, alice, bob, postmaster: str
) -> None:
    stores = {
        alice.address: Path(alice.maildir) / "new",
        bob.address: Path(bob.maildir) / "new",
        postmaster: server.home_path / "Drop",
    }
    for maildir in (alice.maildir, bob.maildir):
        assert not files_in(Path(maildir) / "cur")
    found: dict[str, Counter[str]] = {}
    for address, directory in stores.items():
        # stored_token fails on any partial or damaged file: none may be visible in new/ or Drop/.
        found[address] = Counter(stored_token(path) for path in files_in(directory))
    missing = [
        (token, address)
        for token, recipients in client.acknowledged.items()
        for address in recipients
        if found[address][token] == 0
    ]
    assert not missing, f"{len(missing)} acknowledged deliveries are missing, e.g. {missing[:5]}"
    duplicated = sum(count - 1 for counter in found.values() for count in counter.values() if count > 1)
    print(
        f"{len(client.acknowledged)} acknowledged messages, "
        f"{duplicated} duplicated copies, {sum(sum(c.values()) for c in found.values())} files"
    )


SESSION_PROCESS_KILLS = 6


@pytest.mark.timeout(600)
def test_every_acknowledged_message_survives_sigkill_of_session_processes_and_of_their_worker(supervised):
    """With two session processes: kill one of them (its sessions die mid-write), and now and then
    the accepting worker itself, which takes both along."""
    server = make_server(start=False)
    services.update_virtual_server(server, worker_processes=2)
    alice = make_mailbox(server, "alice")
    bob = make_mailbox(server, "bob")
    postmaster = f"postmaster@{server.default_domain.name}"
    services.start_server(server)
    wait_until(lambda: live_worker_pid(server, None), timeout_s=60, message="the SMTP worker to start")
    client = LoadClient(
        server.port, [[alice.address], [bob.address], [alice.address, bob.address, postmaster]], spread_addresses=True
    )
    client.start()
    rng = random.Random()
    try:
        for kill in range(SESSION_PROCESS_KILLS):
            assert client.wait_for_more_acks(ACKS_BETWEEN_KILLS), f"no mail flowed: {client.errors}"
            client.stopping.wait(rng.uniform(0, 0.3))
            worker_pid = live_worker_pid(server, None)
            children = [p for p in psutil.Process(worker_pid).children() if "--session-process" in p.cmdline()]
            if kill % 3 == 2 or not children:
                allow_immediate_restart(server)
                os.kill(worker_pid, signal.SIGKILL)
                wait_until(
                    lambda old=worker_pid: live_worker_pid(server, old),
                    timeout_s=60,
                    message="the supervisor to restart the killed SMTP worker",
                )
            else:
                victim = rng.choice(children)
                victim.kill()
                parent = psutil.Process(worker_pid)
                wait_until(
                    lambda gone=victim.pid, parent=parent: (
                        gone not in [p.pid for p in parent.children()] and len(parent.children()) == 2
                    ),
                    timeout_s=30,
                    message="the worker to replace its session process",
                )
    finally:
        client.stop()

    wait_until(lambda: live_worker_pid(server, None), timeout_s=30, message="the SMTP worker to be up")
    assert_every_acknowledged_message_is_stored_whole(client, server, alice, bob, postmaster)
