"""Delivery status notifications (RFC 3464, RFC 6522): the report sent back to a message's sender.

A report is multipart/report; report-type=delivery-status with three parts: a human-readable
explanation (in the language of the sender's domain: `Domain.language`), the machine-readable
message/delivery-status (always the same English fields), and the original headers
(text/rfc822-headers).
"""

from __future__ import annotations

import email.header
import email.utils
import quopri
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.utils import translation
from django.utils.translation import gettext as _

from servers.delivery.client import Result

FAILED = "failed"
DELAYED = "delayed"
MAX_HEADER_OCTETS = 64 * 1024


@dataclass(frozen=True)
class RecipientReport:
    address: str
    action: str  # "failed" or "delayed" (RFC 3464 2.3.3)
    result: Result
    last_attempt_at: datetime | None = None
    will_retry_until: datetime | None = None


def original_headers(message: bytes) -> bytes:
    """The header section of a message (up to the first empty line), CRLF-terminated."""
    head = message[:MAX_HEADER_OCTETS]
    for separator in (b"\r\n\r\n", b"\n\n"):
        index = head.find(separator)
        if index >= 0:
            head = head[:index]
            break
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    return b"".join(line + b"\r\n" for line in lines if line)


def _header_value(headers: bytes, name: str) -> str:
    parsed = email.message_from_bytes(headers + b"\r\n")
    return str(parsed.get(name, "") or "")


def _remote_mta(result: Result) -> str:
    # Result.host is "name[address]:port"; Remote-MTA names the host (RFC 3464 2.3.5).
    return result.host.split("[", 1)[0]


def _date(value: datetime | None) -> str:
    return email.utils.format_datetime(value) if value else ""


def build_report(
    *,
    reporting_mta: str,
    postmaster: str,
    to: str,
    original: bytes,
    arrival_date: datetime,
    recipients: Sequence[RecipientReport],
    now: datetime,
    queue_id: str = "",
    language: str = "en",
) -> bytes:
    """The whole DSN message, ready to queue with the null sender `<>`; `language` is the human part's."""
    headers = original_headers(original)
    subject = _decoded(_header_value(headers, "Subject"))
    delayed = all(r.action == DELAYED for r in recipients)
    boundary = f"=_report_{uuid.uuid4().hex}"
    message_id = email.utils.make_msgid(domain=reporting_mta)
    with translation.override(language):
        title, human = _human_part(reporting_mta, recipients, subject, delayed)

    per_message = [f"Reporting-MTA: dns; {reporting_mta}"]
    if queue_id:
        per_message.append(f"X-MailConsole-Queue-ID: {queue_id}")
    per_message.append(f"Arrival-Date: {_date(arrival_date)}")
    blocks = ["\r\n".join(per_message)]
    for report in recipients:
        fields = [
            f"Final-Recipient: rfc822; {report.address}",
            f"Action: {report.action}",
            f"Status: {report.result.status}",
        ]
        if report.result.host:
            fields.append(f"Remote-MTA: dns; {_remote_mta(report.result)}")
        if report.result.host or report.result.code:
            fields.append(f"Diagnostic-Code: smtp; {report.result.reply}")
        if report.last_attempt_at:
            fields.append(f"Last-Attempt-Date: {_date(report.last_attempt_at)}")
        if report.will_retry_until:
            fields.append(f"Will-Retry-Until: {_date(report.will_retry_until)}")
        blocks.append("\r\n".join(fields))

    human_text = "\r\n".join(human)
    parts = [
        f"From: Mail Delivery System <{postmaster}>",
        f"To: <{to}>",
        f"Subject: {_encoded_header(f'{title}: {subject}' if subject else title)}",
        f"Date: {email.utils.format_datetime(now)}",
        f"Message-ID: {message_id}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Description: Notification",
        *_body_lines(human_text),
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "Content-Description: Delivery report",
        "",
        "\r\n\r\n".join(blocks),
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "Content-Description: Undelivered message headers",
        "",
    ]
    text = "\r\n".join(parts).encode("utf-8") + b"\r\n"
    return text + headers + f"\r\n--{boundary}--\r\n".encode()


def _human_part(
    reporting_mta: str, recipients: Sequence[RecipientReport], subject: str, delayed: bool
) -> tuple[str, list[str]]:
    """The Subject word and the explanation a person reads, in the active language."""
    title = _("Delivery delayed") if delayed else _("Undeliverable")
    human = [_("This is the mail system at %(host)s.") % {"host": reporting_mta}, ""]
    if delayed:
        human += [
            _("Your message has not been delivered yet to the recipients below."),
            _("The mail system will keep trying; you do not need to send it again."),
            "",
        ]
    else:
        human += [_("Your message could not be delivered to the recipients below."), ""]
    for report in recipients:
        human.append(f"  <{report.address}>: {report.result.reply}")
    human += [
        "",
        _("Subject of your message: %(subject)s") % {"subject": subject}
        if subject
        else _("Your message had no subject."),
    ]
    return title, human


def _decoded(value: str) -> str:
    """A header value with its RFC 2047 encoded words decoded (as it is shown to a person)."""
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (LookupError, UnicodeDecodeError, ValueError):
        return value


def _encoded_header(value: str) -> str:
    """A header value as it may travel: ASCII as it is, anything else as RFC 2047 encoded words."""
    if value.isascii():
        return value
    return email.header.Header(value, "utf-8", maxlinelen=998).encode()


def _body_lines(text: str) -> list[str]:
    """The explanation's transfer encoding and body: 7bit when ASCII, else quoted-printable, so the
    report crosses hosts without 8BITMIME."""
    if text.isascii():
        return ["Content-Transfer-Encoding: 7bit", "", text]
    encoded = quopri.encodestring(text.encode("utf-8")).decode("ascii").replace("\n", "\r\n")
    return ["Content-Transfer-Encoding: quoted-printable", "", encoded.rstrip("\r\n")]
