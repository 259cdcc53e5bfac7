"""The sign-in of a mail client (POP3, IMAP): one path, so every protocol counts and refuses alike."""

from __future__ import annotations

from dataclasses import dataclass

from . import signin_guard
from .mailboxes import LoginRefusedError, SignedIn, VerifiedCredentials, authenticate_mailbox


@dataclass(frozen=True)
class MailClientSignIn:
    """What a mail client's sign-in came to: the mailbox, or locked, or a failure to answer after a delay."""

    signed_in: SignedIn | None = None
    # The password was right, but the mailbox or its domain is locked (never said for a wrong password).
    locked: bool = False
    # How long the worker waits before it answers a failure: throttling without holding a thread.
    failure_delay_s: float = 0.0


def qualified_login_name(username: str, default_domain: str) -> str:
    """A bare user name means the mailbox of that name in the service's default domain."""
    if "@" in username or not default_domain:
        return username
    return f"{username}@{default_domain}"


def sign_in_mail_client(
    username: str,
    password: str,
    client_address: str,
    *,
    default_domain: str = "",
    cache: VerifiedCredentials | None = None,
) -> MailClientSignIn:
    """Check a mail client's user name and password behind the shared sign-in guard (runs in a thread).

    The attempt is reserved per canonical mailbox and per client before the hash is checked, so
    parallel guesses cannot pass the limit together and guesses through POP3, IMAP, SMTP AUTH and
    webmail all count against one limit. A locked mailbox is reported only after its password
    checked out (and that attempt is not counted as a failure).
    """
    username = qualified_login_name(username, default_domain)
    attempt = signin_guard.reserve_mailbox_sign_in(username, client_address)
    if not attempt.allowed:
        return MailClientSignIn(failure_delay_s=attempt.failure_delay_s)
    try:
        signed_in = authenticate_mailbox(username, password, cache=cache)
    except LoginRefusedError as refusal:
        if refusal.reason == "locked":
            attempt.succeeded()  # the right password: not a guess
            return MailClientSignIn(locked=True)
        attempt.failed()
        return MailClientSignIn(failure_delay_s=attempt.failure_delay_s)
    attempt.succeeded()
    return MailClientSignIn(signed_in=signed_in)
