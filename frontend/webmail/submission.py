"""Sending from the webmail: through the mailbox's own virtual server over SMTP, as any mail client does.

The message goes to the server's address and port with STARTTLS when offered and AUTH with the
user's own credentials, so relay rules, limits, quotas and sender checks apply exactly as they do
for Thunderbird. Refusals come back as sentences for the user.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage

from django.utils.translation import gettext

from servers.models import Mailbox

SUBMIT_TIMEOUT_S = 30
WILDCARD_ADDRESSES = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


class SubmissionError(Exception):
    """The server did not take the message; the text says why in plain words."""


@dataclass
class SubmissionResult:
    refused: dict[str, str] = field(default_factory=dict)  # recipient -> the server's reason


def _reply_text(code: int, reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return f"{code} {' '.join(text.split())}"


def _sending_blocked(reply: bytes | str) -> bool:
    """Whether a refusal is the outbound limits' SENDING_BLOCKED (servers.replies)."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return "sending blocked" in text


def submit(mailbox: Mailbox, password: str, message: EmailMessage, recipients: list[str]) -> SubmissionResult:
    """Hand `message` to the mailbox's virtual server for `recipients`; raise SubmissionError when it refuses."""
    server = mailbox.domain.server
    host = WILDCARD_ADDRESSES.get(server.ip_address, server.ip_address)
    context = ssl.create_default_context()
    # Our own server on this machine, often with its self-signed certificate.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with smtplib.SMTP(host, server.port, timeout=SUBMIT_TIMEOUT_S) as client:
            client.ehlo()
            if client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
            if not client.has_extn("auth"):
                raise SubmissionError(
                    gettext(
                        "The mail server does not accept sign-ins for sending (no AUTH), "
                        "so the webmail cannot send through it. Ask your administrator."
                    )
                )
            client.login(mailbox.address, password)
            refused = client.send_message(message, from_addr=mailbox.address, to_addrs=recipients)
    except SubmissionError:
        raise
    except smtplib.SMTPAuthenticationError as error:
        raise SubmissionError(
            gettext("The mail server did not accept your sign-in for sending (%(reply)s).")
            % {"reply": _reply_text(error.smtp_code, error.smtp_error)}
        ) from None
    except smtplib.SMTPRecipientsRefused as error:
        reasons = "; ".join(f"{rcpt}: {_reply_text(code, reply)}" for rcpt, (code, reply) in error.recipients.items())
        raise SubmissionError(
            gettext("Nothing was sent: every recipient was refused (%(reasons)s).") % {"reasons": reasons}
        ) from None
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as error:
        if _sending_blocked(error.smtp_error):
            raise SubmissionError(
                gettext(
                    "Your mailbox is blocked from sending: it passed an outbound limit (%(reply)s). "
                    "Mail you had waiting is held, not lost; ask your administrator to release the mailbox."
                )
                % {"reply": _reply_text(error.smtp_code, error.smtp_error)}
            ) from None
        if isinstance(error, smtplib.SMTPDataError):
            raise SubmissionError(
                gettext("The mail server refused the message (%(reply)s).")
                % {"reply": _reply_text(error.smtp_code, error.smtp_error)}
            ) from None
        raise SubmissionError(
            gettext("The mail server refused you as the sender (%(reply)s).")
            % {"reply": _reply_text(error.smtp_code, error.smtp_error)}
        ) from None
    except smtplib.SMTPServerDisconnected:
        raise SubmissionError(
            gettext("The mail server closed the connection; it may be paused or busy. Try again in a moment.")
        ) from None
    except smtplib.SMTPResponseException as error:
        raise SubmissionError(
            gettext("The mail server answered %(reply)s.") % {"reply": _reply_text(error.smtp_code, error.smtp_error)}
        ) from None
    except (ConnectionRefusedError, TimeoutError):
        raise SubmissionError(
            gettext("The mail server (%(address)s) is not answering; it may be stopped. Try again later.")
            % {"address": f"{host}:{server.port}"}
        ) from None
    except (OSError, smtplib.SMTPException) as error:
        raise SubmissionError(gettext("The message could not be sent: %(error)s.") % {"error": error}) from None
    return SubmissionResult(refused={rcpt: _reply_text(code, reply) for rcpt, (code, reply) in refused.items()})
