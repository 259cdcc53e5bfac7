"""Sign-in limits that hold whatever the spelling, the protocol, the burst or the client address.

Regression tests for issue 13's findings 1 (POP3 STLS injection), 4 (lockouts per spelling),
5 (per-mailbox limits and the check-then-count race), 6 (throttling that holds threads) and 11
(one answer per overlong POP3 line), through real sockets and HTTP.
"""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.test import Client
from django.urls import reverse

from servers import pop3_replies, replies, services
from servers.models import Logon, ObservedState
from servers.services import signin_guard
from servers.services.names import canonical_client_address, canonical_domain_name
from tests.factories import PASSWORD, make_mailbox, make_pop3_service, make_server
from tests.helpers import wait_for_state, wait_until

# The counters live in Redis: a second database backend proves nothing new here.
pytestmark = pytest.mark.backend_independent


class LineClient:
    """A raw protocol client that can choose its loopback source address and pipeline lines."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        self.buffer = b""

    def line(self) -> str:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def rest_until_closed(self) -> bytes:
        data = self.buffer
        while True:
            try:
                chunk = self.sock.recv(4096)
            except (ConnectionError, TimeoutError):
                break
            if not chunk:
                break
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


def pop3_sign_in(port: int, user: str, password: str, source: str = "127.0.0.1") -> str:
    """USER and PASS on a fresh connection; the answer to PASS."""
    client = LineClient(port, source)
    try:
        client.line()
        client.send(f"USER {user}\r\nPASS {password}\r\n".encode())
        client.line()
        return client.line()
    finally:
        client.close()


def smtp_auth(port: int, user: str, password: str, source: str = "127.0.0.1") -> int:
    """One AUTH PLAIN on a fresh connection; the reply code."""
    client = LineClient(port, source)
    try:
        client.line()
        client.send(b"EHLO guard.test\r\n")
        while not client.line().startswith("250 "):
            pass
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        client.send(f"AUTH PLAIN {token}\r\n".encode())
        return int(client.line()[:3])
    finally:
        client.close()


@pytest.fixture
def pop3_lab(supervised):
    """The POP3 service alone, over a stopped server's mailboxes helena and bob (sign-in reads the database)."""
    server = make_server(domain="guard.test")
    helena = make_mailbox(server, "helena")
    bob = make_mailbox(server, "bob")
    pop3 = wait_for_state(make_pop3_service(default_domain="guard.test"), ObservedState.RUNNING)
    return server, pop3, helena, bob


@pytest.fixture
def lab(supervised):
    """One running server (plaintext AUTH allowed on loopback) with helena and bob, and the POP3 service."""
    server = make_server(domain="guard.test", start=True)
    helena = make_mailbox(server, "helena")
    bob = make_mailbox(server, "bob")
    pop3 = wait_for_state(make_pop3_service(default_domain="guard.test"), ObservedState.RUNNING)
    wait_for_state(server, ObservedState.RUNNING)
    wait_until(lambda: smtp_auth(server.port, "bob@guard.test", PASSWORD) == 235, message="the SMTP worker to know bob")
    return server, pop3, helena, bob


# -- canonical identities (fast) ------------------------------------------------------------------


def test_a_domain_has_one_spelling_and_more_than_one_trailing_dot_is_refused():
    assert canonical_domain_name("Guard.Test.") == "guard.test"
    assert canonical_domain_name("ПОЧТА.рф") == "xn--80a1acny.xn--p1ai"
    for bad in ("guard.test..", "guard..test", ".guard.test", "."):
        with pytest.raises(services.RefusedError):
            canonical_domain_name(bad)


def test_sign_in_identities_are_counted_in_their_canonical_form():
    same = {
        signin_guard.canonical_mailbox_identity(typed)
        for typed in ("helena@guard.test", "HELENA@Guard.Test.", " helena@GUARD.TEST ", "helena@guard.test。")
    }
    assert same == {"helena@guard.test"}
    assert signin_guard.canonical_mailbox_identity("helena@guard.test..") != "helena@guard.test"
    assert canonical_client_address("::ffff:127.0.0.1") == "127.0.0.1"
    assert canonical_client_address("2001:db8::1") == canonical_client_address("2001:db8::ffff")


def test_parallel_reservations_never_pass_the_limit_together():
    counters = [signin_guard.Counter("mailbox", "race@guard.test", 10, 60)]
    start = threading.Barrier(40)

    def attempt(_):
        start.wait()
        reserved = signin_guard.reserve(counters)
        reserved.failed()
        return reserved.allowed

    with ThreadPoolExecutor(40) as pool:
        allowed = list(pool.map(attempt, range(40)))
    assert allowed.count(True) == 10


# -- POP3 (real sockets) --------------------------------------------------------------------------


def test_pop3_stls_refuses_plaintext_pipelined_before_the_handshake(pop3_lab):
    _, pop3, helena, _ = pop3_lab
    client = LineClient(pop3.port)
    client.line()
    # The CVE-2011-0411 class: a man in the middle appends commands to the client's STLS.
    client.send(f"STLS\r\nUSER helena\r\nPASS {PASSWORD}\r\n".encode())
    assert client.line() == pop3_replies.TLS_BEGIN
    rest = client.rest_until_closed()
    client.close()
    assert pop3_replies.TLS_EXPECTED.encode() in rest
    assert b"+OK" not in rest
    assert not Logon.objects.filter(mailbox=helena).exists()


def test_pop3_stls_still_works_for_an_honest_client(pop3_lab):
    _, pop3, _, _ = pop3_lab
    client = LineClient(pop3.port)
    client.line()
    client.send(b"STLS\r\n")
    assert client.line().startswith("+OK")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    tls = context.wrap_socket(client.sock)
    tls.sendall(f"USER helena\r\nPASS {PASSWORD}\r\n".encode())
    answers = b""
    while answers.count(b"\r\n") < 2:
        answers += tls.recv(4096)
    tls.close()
    assert answers.splitlines()[1].startswith(b"+OK")


def test_pop3_answers_one_overlong_line_once(pop3_lab):
    _, pop3, _, _ = pop3_lab
    client = LineClient(pop3.port)
    client.line()
    client.send(b"X" * 300_000 + b"\r\nCAPA\r\n")  # arrives in several reads
    first, second = client.line(), client.line()
    client.close()
    assert first == pop3_replies.LINE_TOO_LONG
    assert second.startswith("+OK")


def test_pop3_lockout_holds_for_every_spelling_of_the_address(pop3_lab):
    _, pop3, _, _ = pop3_lab
    spellings = ["helena@guard.test.", "HELENA@Guard.Test", "helena@GUARD.test.", "Helena", "helena@guard.test。"]
    with ThreadPoolExecutor(10) as pool:
        answers = list(
            pool.map(
                lambda n: pop3_sign_in(
                    pop3.port, spellings[n % len(spellings)], "Wrong-pass1", source=f"127.0.0.{20 + n}"
                ),
                range(10),
            )
        )
    assert all(answer.startswith("-ERR") for answer in answers)
    for spelling in ("helena", "helena@guard.test", "helena@guard.test."):
        assert pop3_sign_in(pop3.port, spelling, PASSWORD).startswith("-ERR")
    # A spelling that is no address never signs in, so it opens no fresh counter either.
    assert pop3_sign_in(pop3.port, "helena@guard.test..", PASSWORD, source="127.0.0.9").startswith("-ERR")
    # Other mailboxes are not locked with her.
    assert pop3_sign_in(pop3.port, "bob", PASSWORD, source="127.0.0.8").startswith("+OK")


def test_a_burst_of_parallel_wrong_passwords_cannot_carry_the_right_one_past_the_limit(pop3_lab):
    _, pop3, _, _ = pop3_lab
    sources = [f"127.0.1.{n}" for n in range(1, 16)]
    with ThreadPoolExecutor(len(sources)) as pool:
        answers = list(pool.map(lambda source: pop3_sign_in(pop3.port, "helena", "Wrong-pass1", source), sources))
    assert all(answer.startswith("-ERR") for answer in answers)
    assert pop3_sign_in(pop3.port, "helena", PASSWORD, source="127.0.1.99").startswith("-ERR")


def test_throttled_pop3_guesses_do_not_stall_another_users_sign_in(pop3_lab):
    _, pop3, _, _ = pop3_lab
    guessers = [LineClient(pop3.port, "127.0.2.1") for _ in range(32)]
    for guesser in guessers:
        guesser.line()
    for guesser in guessers:
        guesser.send(b"USER nobody@guard.test\r\nPASS Wrong-pass1\r\n")
    started = time.monotonic()
    answer = pop3_sign_in(pop3.port, "bob", PASSWORD, source="127.0.2.2")
    elapsed = time.monotonic() - started
    for guesser in guessers:
        guesser.close()
    assert answer.startswith("+OK")
    assert elapsed < 1.5, f"bob waited {elapsed:.2f} s behind someone else's throttled guesses"


def test_throttled_failures_are_answered_later(pop3_lab):
    _, pop3, _, _ = pop3_lab
    for _ in range(signin_guard.FREE_FAILURES):
        pop3_sign_in(pop3.port, "bob", "Wrong-pass1")
    started = time.monotonic()
    assert pop3_sign_in(pop3.port, "bob", "Wrong-pass1").startswith("-ERR")
    assert time.monotonic() - started >= 0.3


# -- SMTP AUTH (real sockets) ---------------------------------------------------------------------


def test_smtp_auth_and_pop3_share_one_limit_per_mailbox_across_client_addresses(lab):
    server, pop3, _, _ = lab

    def guess(number: int) -> bool:
        source = f"127.0.3.{number + 1}"
        if number % 2:
            return smtp_auth(server.port, "Helena@Guard.Test.", "Wrong-pass1", source=source) == 535
        return pop3_sign_in(pop3.port, "helena", "Wrong-pass1", source=source).startswith("-ERR")

    with ThreadPoolExecutor(10) as pool:
        assert all(pool.map(guess, range(10)))
    # Refused before the password is looked at, with the reply that ends the session.
    assert smtp_auth(server.port, "helena@guard.test", PASSWORD, source="127.0.3.99") == int(
        replies.TOO_MANY_AUTH_FAILURES[:3]
    )
    assert smtp_auth(server.port, "bob@guard.test", PASSWORD, source="127.0.3.98") == 235


def test_parallel_smtp_auth_attempts_from_one_address_are_checked_against_the_limit(lab):
    server, _, _, _ = lab
    limit = server.max_auth_failures_per_client_per_hour
    guesses = [f"user{n}@guard.test" for n in range(limit + 15)]
    with ThreadPoolExecutor(len(guesses)) as pool:
        codes = list(pool.map(lambda user: smtp_auth(server.port, user, "Wrong-pass1", source="127.0.4.1"), guesses))
    assert codes.count(535) <= limit
    assert set(codes) <= {535, 421}


# -- webmail and console (HTTP) -------------------------------------------------------------------


@pytest.mark.django_db
def test_webmail_lockout_holds_for_every_spelling_of_the_address(settings):
    settings.MAILBOX_SIGNIN_FAILURES_PER_MAILBOX = 3
    server = make_server(domain="guard.test")
    make_mailbox(server, "helena")
    client = Client(REMOTE_ADDR="192.0.2.1")
    for spelling in ("helena@guard.test.", "HELENA@guard.test", "helena@GUARD.TEST"):
        response = client.post(reverse("webmail:sign_in"), {"address": spelling, "password": "Wrong-pass1"})
        assert response.status_code == 401
    response = Client(REMOTE_ADDR="192.0.2.2").post(
        reverse("webmail:sign_in"), {"address": "helena@guard.test", "password": PASSWORD}
    )
    assert response.status_code == 429
    response = Client(REMOTE_ADDR="192.0.2.3").post(
        reverse("webmail:sign_in"), {"address": "helena@guard.test..", "password": PASSWORD}
    )
    assert response.status_code in (401, 429)


@pytest.mark.django_db
def test_console_lockout_holds_for_every_spelling_of_the_user_name(settings):
    from django.contrib.auth.models import User

    settings.CONSOLE_LOGIN_FAILURES_PER_USERNAME = 3
    User.objects.create_user("oscar", password=PASSWORD, is_staff=True, is_superuser=True)
    for spelling in ("oscar", "OSCAR", " Oscar "):
        Client(REMOTE_ADDR="192.0.2.10").post(reverse("console:login"), {"username": spelling, "password": "nope"})
    response = Client(REMOTE_ADDR="192.0.2.11").post(
        reverse("console:login"), {"username": "oscar", "password": PASSWORD}
    )
    assert response.status_code == 429
