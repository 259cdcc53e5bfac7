"""The Pickup folder: an `.eml` file dropped there is sent like any other message, then removed.

The envelope comes from leading `x-sender:`/`x-receiver:` lines when the file has them (as IIS
writes them), otherwise from the From/Sender and To/Cc/Bcc headers (Bcc is then removed from the
message). A file we cannot make sense of goes to BadMail/ with a `.bdr` saying why.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import logging
import os
import re
import time
from pathlib import Path

from django.conf import settings

from servers import mailstore
from servers.delivery import engine
from servers.models import VirtualServer

log = logging.getLogger(__name__)

# Writers that do not rename into place get this long to finish their file.
SETTLE_S = 1.0
MAX_PICKUP_OCTETS = 64 * 1024 * 1024
BCC_HEADER = re.compile(rb"^bcc:.*(?:\r?\n[ \t].*)*\r?\n", re.IGNORECASE | re.MULTILINE)


class PickupError(ValueError):
    """A Pickup file that cannot be sent."""


def header_section(message: bytes) -> tuple[bytes, bytes]:
    match = re.search(rb"\r?\n\r?\n", message)
    if match is None:
        return message, b""
    return message[: match.end()], message[match.end() :]


def envelope_from_headers(message: bytes) -> tuple[str, list[str], bytes]:
    """Sender, recipients and the message without its Bcc header, from the headers alone."""
    head, body = header_section(message)
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    senders = email.utils.getaddresses(parsed.get_all("Sender", []) or parsed.get_all("From", []))
    recipients = [
        address
        for _, address in email.utils.getaddresses(
            parsed.get_all("To", []) + parsed.get_all("Cc", []) + parsed.get_all("Bcc", [])
        )
        if "@" in address
    ]
    if not senders or not senders[0][1]:
        raise PickupError("no x-sender: line and no From: header")
    return senders[0][1], recipients, BCC_HEADER.sub(b"", head) + body


def read_pickup_file(data: bytes) -> tuple[str, list[str], bytes]:
    mail_from, recipients, offset = mailstore.parse_envelope(data[: mailstore.MAX_ENVELOPE_OCTETS])
    message = data[offset:]
    if mail_from is None or not recipients:
        header_from, header_recipients, message = envelope_from_headers(message)
        mail_from = header_from if mail_from is None else mail_from
        recipients = recipients or header_recipients
    if not recipients:
        raise PickupError("no x-receiver: lines and no To:, Cc: or Bcc: addresses")
    if not header_section(message)[1] and b":" not in message.split(b"\n", 1)[0]:
        raise PickupError("the file does not start with a message header")
    # One copy per address; local parts keep their case (RFC 5321 2.4: only the remote host may fold it).
    seen: set[str] = set()
    unique = []
    for recipient in recipients:
        if recipient.lower() not in seen:
            seen.add(recipient.lower())
            unique.append(recipient)
    return mail_from, unique, message


def pickup_headers(message: bytes) -> bytes:
    """Our Received: line, plus Date: and Message-ID: when the file lacks them (as IIS adds them)."""
    head, _ = header_section(message)
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    lines = [
        f"Received: by {settings.MAIL_HOSTNAME} (MailConsole) via the Pickup folder;\r\n"
        f"\t{email.utils.formatdate(localtime=False)}\r\n"
    ]
    if parsed.get("Date") is None:
        lines.append(f"Date: {email.utils.formatdate(localtime=False)}\r\n")
    if parsed.get("Message-ID") is None:
        lines.append(f"Message-ID: {email.utils.make_msgid(domain=settings.MAIL_HOSTNAME)}\r\n")
    return "".join(lines).encode()


def scan_pickup(server: VirtualServer, *, settle_s: float = SETTLE_S) -> int:
    """Send every settled file in the server's Pickup folder; return how many were taken."""
    pickup_dir = server.home_path / mailstore.PICKUP_DIR
    try:
        entries = sorted(os.scandir(pickup_dir), key=lambda e: e.name)
    except FileNotFoundError:
        return 0
    taken = 0
    cutoff = time.time() - settle_s
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_file():
            continue
        try:
            if entry.stat().st_mtime > cutoff:
                continue
        except FileNotFoundError:
            continue
        if pick_up(server, Path(entry.path)):
            taken += 1
    return taken


def outgoing_message(data: bytes) -> tuple[str, list[str], bytes]:
    """Sender, recipients and the message to queue for the bytes of one Pickup file."""
    if len(data) > MAX_PICKUP_OCTETS:
        raise PickupError(f"the file is larger than {MAX_PICKUP_OCTETS} octets")
    mail_from, recipients, message = read_pickup_file(data)
    return mail_from, recipients, pickup_headers(message) + message


def pick_up(server: VirtualServer, path: Path) -> bool:
    """Queue one Pickup file (or send it to BadMail/) through the store; False if it was gone."""
    try:
        message_id = mailstore.take_from_pickup(server.home_path, path, outgoing_message)
    except mailstore.PickupRefusedError as error:
        log.warning("server %s: %s goes to BadMail: %s", server.pk, path.name, error)
        return True
    if message_id is None:
        return False
    engine.index_file(server, message_id + mailstore.SUFFIX)
    return True
