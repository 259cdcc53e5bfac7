"""What a stored or arriving message says about itself, read from its bytes (no I/O).

Shared by the SMTP policy (its loop check before the 250) and the mail store and delivery engine
(the same check before a relay), so the hop count is counted one way everywhere.
"""

from __future__ import annotations

import re

_RECEIVED_LINE = re.compile(rb"^received:", re.IGNORECASE | re.MULTILINE)


def header_section(message: bytes) -> bytes:
    """The message's header section, up to (not including) the first empty line, CRLF or bare LF."""
    # Look for a bare-LF blank line only before the first CRLF one: a CRLF message is never scanned
    # to its end (a 10 MB body would be, for a "\n\n" it does not contain).
    crlf_end = message.find(b"\r\n\r\n")
    head = message if crlf_end < 0 else message[:crlf_end]
    lf_end = head.find(b"\n\n")
    return head if lf_end < 0 else head[:lf_end]


def hop_count(message: bytes) -> int:
    """How many Received: trace headers (RFC 5321 6.3) the message carries: its hops so far."""
    return len(_RECEIVED_LINE.findall(header_section(message)))
