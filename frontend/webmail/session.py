"""The webmail's own sign-in, kept apart from the console's Django users in the same session store.

The session holds the mailbox id, a keyed hash of its password hash (so a password change or a
lock made elsewhere ends the webmail session, as Django does for its users) and the password,
for SMTP submission, encrypted with a key that only the browser keeps (an HttpOnly cookie): the
session store alone, a database dump say, does not reveal it, and the cookie alone is no password.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.crypto import constant_time_compare, salted_hmac

from servers.models import Mailbox
from servers.services import signin_guard

log = logging.getLogger(__name__)

MAILBOX_KEY = "webmail_mailbox_id"
HASH_KEY = "webmail_password_hash"
PASSWORD_KEY = "webmail_password"
SESSION_KEYS = (MAILBOX_KEY, HASH_KEY, PASSWORD_KEY)
KEY_COOKIE = "webmail_key"
KEY_COOKIE_PATH = "/mail/"


def password_fingerprint(mailbox: Mailbox) -> str:
    """A keyed hash of the mailbox's password hash: it changes whenever the password does."""
    return salted_hmac("mailconsole.webmail.session", mailbox.password, algorithm="sha256").hexdigest()


def _keep_password(request: HttpRequest, password: str) -> None:
    key = Fernet.generate_key()
    request.session[PASSWORD_KEY] = Fernet(key).encrypt(password.encode()).decode()
    request.webmail_key = key.decode()


def set_key_cookie(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """Hand the browser the key of its session's password, if this request made one."""
    key = getattr(request, "webmail_key", None)
    if key:
        response.set_cookie(
            KEY_COOKIE,
            key,
            max_age=settings.SESSION_COOKIE_AGE,
            path=KEY_COOKIE_PATH,
            secure=settings.SESSION_COOKIE_SECURE,
            httponly=True,
            samesite="Lax",
        )
    return response


def sign_in(request: HttpRequest, mailbox: Mailbox, password: str) -> None:
    request.session.cycle_key()  # a new session key on every sign-in: no fixation
    request.session[MAILBOX_KEY] = mailbox.pk
    request.session[HASH_KEY] = password_fingerprint(mailbox)
    _keep_password(request, password)


def sign_out(request: HttpRequest, response: HttpResponse | None = None) -> None:
    """Forget the mailbox only: a console sign-in in the same browser stays."""
    for key in SESSION_KEYS:
        request.session.pop(key, None)
    request.session.cycle_key()
    if response is not None:
        response.delete_cookie(KEY_COOKIE, path=KEY_COOKIE_PATH, samesite="Lax")


def current_mailbox(request: HttpRequest) -> Mailbox | None:
    mailbox_id = request.session.get(MAILBOX_KEY)
    if mailbox_id is None:
        return None
    mailbox = Mailbox.objects.select_related("domain__server").filter(pk=mailbox_id).first()
    if (
        mailbox is None
        or mailbox.is_locked
        or mailbox.domain.is_locked
        or not constant_time_compare(request.session.get(HASH_KEY, ""), password_fingerprint(mailbox))
    ):
        sign_out(request)
        return None
    return mailbox


def submission_password(request: HttpRequest) -> str:
    """The password to sign in to SMTP with; '' when the browser no longer has the key."""
    try:
        key = request.COOKIES.get(KEY_COOKIE, "").encode()
        return Fernet(key).decrypt(request.session.get(PASSWORD_KEY, "").encode()).decode()
    except (InvalidToken, ValueError, TypeError):
        return ""


def password_changed(request: HttpRequest, mailbox: Mailbox, new_password: str) -> None:
    """Keep this session signed in after its own password change (other sessions end)."""
    request.session[HASH_KEY] = password_fingerprint(mailbox)
    _keep_password(request, new_password)
    request.session.cycle_key()


def mailbox_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Give the view the signed-in mailbox as `request.mailbox`, or send the browser to sign in."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        mailbox = current_mailbox(request)
        if mailbox is None:
            return redirect("webmail:sign_in")
        request.mailbox = mailbox
        return with_page_policy(view(request, *args, **kwargs))

    return wrapper


# The webmail's own pages run no script at all and load only our CSS and our message frames.
PAGE_CSP = (
    "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def with_page_policy(response: HttpResponse) -> HttpResponse:
    """Give a webmail page its CSP, unless it serves message content with a policy of its own."""
    if "Content-Security-Policy" not in response:
        response["Content-Security-Policy"] = PAGE_CSP
    return response


# -- throttling failed sign-ins: the mailbox counters every protocol shares -------------------------


def reserve_sign_in(client_address: str, address: str) -> signin_guard.Attempt:
    """Reserve one password check for `address` from `client_address` (refused when over a limit)."""
    return signin_guard.reserve_mailbox_sign_in(address, client_address)


def lockout_minutes() -> int:
    return max(1, settings.MAILBOX_SIGNIN_LOCKOUT_S // 60)
