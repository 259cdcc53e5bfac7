"""DKIM-sign a message on its way to another host (relay to MX or smart host).

The signing domain (d=) is the From: domain when we hold its key: that is what DMARC aligns with
(RFC 7489 3.1). Otherwise the envelope sender's domain, if ours (forwarded and list mail: the author
is elsewhere, the sender is us). DSNs come From: postmaster@<the default domain>, so they are signed
with the default domain's key. Signing happens at each attempt, in the delivery worker, never on the
SMTP path: it costs well under a millisecond (`python -m benchmarks.dkim`), less than caching would.

A message that cannot be signed goes out unsigned, with a warning in the log: signing never loses mail.
"""

from __future__ import annotations

import logging

from servers import dkim_signing
from servers.delivery.client import LINE_ENDINGS
from servers.services.dkim import SigningKey
from servers.services.errors import RefusedError
from servers.services.names import canonical_domain_name

log = logging.getLogger(__name__)


def _a_label(domain: str) -> str:
    """The domain as our keys are named (A-labels): an internationalised From: (RFC 6532) may use U-labels."""
    if domain.isascii():
        return domain
    try:
        return canonical_domain_name(domain)
    except RefusedError:
        return domain


def signing_key_for(
    parsed: dkim_signing.ParsedMessage, mail_from: str, keys: dict[str, SigningKey]
) -> SigningKey | None:
    author = dkim_signing.author_domain(parsed)
    if author and _a_label(author) in keys:
        return keys[_a_label(author)]
    sender_domain = mail_from.rpartition("@")[2].lower().rstrip(".") if "@" in mail_from else ""
    return keys.get(_a_label(sender_domain)) if sender_domain else None


def signed(message: bytes, mail_from: str, keys: dict[str, SigningKey]) -> bytes:
    """`message` with a DKIM-Signature in front if one of `keys` signs for it; else, or on any error, as it was."""
    if not keys:
        return message
    # Sign what the wire will carry (client.wire_data): every CR, LF and CRLF a CRLF, a CRLF at the end.
    if message.count(b"\n") != message.count(b"\r\n") or message.count(b"\r") != message.count(b"\r\n"):
        message = LINE_ENDINGS.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"  # as the client ends the DATA payload
    try:
        parsed = dkim_signing.parse_message(message)
        key = signing_key_for(parsed, mail_from, keys)
        if key is None:
            return message
        field = dkim_signing.signature_field(
            parsed,
            domain=key.domain,
            selector=key.selector,
            algorithm=key.algorithm,
            private_key=dkim_signing.load_private_key(key.private_pem),
        )
    except Exception:  # a bad key or a message dkimpy cannot read must not keep mail from going out
        log.warning("DKIM signing failed; the message is sent unsigned", exc_info=True)
        return message
    return field + message
