"""Delivery status notifications (RFC 3464, RFC 6522): the report sent back to a message's sender.

A report is multipart/report; report-type=delivery-status with three parts: a human-readable
explanation, the machine-readable message/delivery-status, and the original headers
(text/rfc822-headers).
"""

from __future__ import annotations

import email.utils
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

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
) -> bytes:
    """The whole DSN message, ready to queue with the null sender `<>`."""
    headers = original_headers(original)
    subject = _header_value(headers, "Subject")
    delayed = all(r.action == DELAYED for r in recipients)
    title = "Delivery delayed" if delayed else "Undeliverable"
    boundary = f"=_report_{uuid.uuid4().hex}"
    message_id = email.utils.make_msgid(domain=reporting_mta)

    human = [f"This is the mail system at {reporting_mta}.", ""]
    if delayed:
        human += [
            "Your message has not been delivered yet to the recipients below.",
            "The mail system will keep trying; you do not need to send it again.",
            "",
        ]
    else:
        human += ["Your message could not be delivered to the recipients below.", ""]
    for report in recipients:
        human.append(f"  <{report.address}>: {report.result.reply}")
    human += ["", f"Subject of your message: {subject}" if subject else "Your message had no subject."]

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

    parts = [
        f"From: Mail Delivery System <{postmaster}>",
        f"To: <{to}>",
        f"Subject: {title}: {subject}" if subject else f"Subject: {title}",
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
        "",
        *human,
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
