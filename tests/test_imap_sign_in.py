"""The IMAP worker's authenticator: the same accounts, names and sign-in guard as POP3's, a Logon per
sign-in, and the account handed to the session (no sockets: the authenticator runs in a thread)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest

from servers import services
from servers.imap.store_api import Account, AuthOutcome, AuthStatus
from servers.models import Logon
from servers.services.mailboxes import SignedIn
from servers.workers.imapd import ImapConnection, IMAPWorker
from servers.workers.pop3d import Pop3Connection, POP3Worker
from tests.factories import PASSWORD, make_mailbox, make_server
from tests.helpers import wait_until
from tests.imap_inprocess import snapshot_for_tests

pytestmark = [pytest.mark.usefixtures("fast_hashing"), pytest.mark.django_db(transaction=True)]


class FakeAccount:
    def __init__(self, signed_in: SignedIn, on_release: Callable[[], None]) -> None:
        self.address = signed_in.address
        self.signed_in = signed_in
        self.release = on_release


@pytest.fixture
def lab():
    server = make_server(domain="study003.local")
    helena = make_mailbox(server, "helena", quota_bytes=5_000_000, quota_messages=100)
    return server, helena


def fake_account(signed_in: SignedIn, on_release: Callable[[], None]) -> Account:
    return cast(Account, FakeAccount(signed_in, on_release))


@pytest.fixture
def imap_sign_in(tmp_path) -> Iterator[Callable[[str, str], AuthOutcome]]:
    worker = IMAPWorker(1, account_factory=fake_account)
    worker.snapshot = snapshot_for_tests(tmp_path / "c.crt", tmp_path / "k.key", default_domain="study003.local")
    connection = ImapConnection(writer=None, client="192.0.2.7", tls=False)  # type: ignore[arg-type]
    yield worker.authenticator_for(connection)
    worker.logon_writer.shutdown(wait=True)


def test_a_right_password_gives_the_session_the_mailboxs_maildir_and_quota_and_a_logon_as_imap(lab, imap_sign_in):
    _, helena = lab

    outcome = imap_sign_in("helena", PASSWORD)  # a bare name: the service's default domain

    assert outcome.status is AuthStatus.OK
    assert isinstance(outcome.account, FakeAccount)
    signed_in = outcome.account.signed_in
    assert (signed_in.address, Path(signed_in.maildir)) == ("helena@study003.local", helena.maildir)
    assert (signed_in.quota_bytes, signed_in.quota_messages) == (5_000_000, 100)
    logon = wait_until(lambda: Logon.objects.filter(mailbox=helena).first(), message="the Logon row")
    assert (logon.protocol, logon.client_address) == ("IMAP", "192.0.2.7")
    first_access = logon.last_access_at

    outcome.account.release()
    wait_until(
        lambda: Logon.objects.get(pk=logon.pk).last_access_at > first_access, message="the last access at the end"
    )


def test_unknown_user_and_wrong_password_are_the_same_failure(lab, imap_sign_in):
    assert imap_sign_in("nobody@study003.local", PASSWORD).status is AuthStatus.BAD_CREDENTIALS
    assert imap_sign_in("HELENA@Study003.Local.", "Wrong-pass1").status is AuthStatus.BAD_CREDENTIALS
    assert not Logon.objects.exists()


def test_a_locked_mailbox_is_said_only_to_the_right_password(lab, imap_sign_in):
    _, helena = lab
    services.set_mailbox_lock(helena, True)

    assert imap_sign_in("helena@study003.local", "Wrong-pass1").status is AuthStatus.BAD_CREDENTIALS
    assert imap_sign_in("helena@study003.local", PASSWORD).status is AuthStatus.LOCKED


def test_guesses_through_pop3_lock_the_mailbox_out_of_imap_too(lab, imap_sign_in, settings):
    settings.MAILBOX_SIGNIN_FAILURES_PER_MAILBOX = 3
    pop3 = POP3Worker(1)
    pop3_sign_in = pop3.authenticator_for(Pop3Connection(writer=None, client="198.51.100.9"))
    for _ in range(3):
        assert pop3_sign_in("helena@study003.local", "Wrong-pass1").status.value == "bad-credentials"

    # Another client, the right password, another protocol: the mailbox's counter is shared.
    refused = imap_sign_in("Helena@STUDY003.local", PASSWORD)

    assert refused.status is AuthStatus.BAD_CREDENTIALS
    assert not Logon.objects.exists()
    pop3.logon_writer.shutdown(wait=True)


def test_throttled_failures_are_answered_later_without_holding_a_thread(lab, imap_sign_in):
    delays = [imap_sign_in("helena@study003.local", "Wrong-pass1").failure_delay_s for _ in range(5)]
    assert delays[:3] == [0.0, 0.0, 0.0]
    assert min(delays[3:]) > 0
