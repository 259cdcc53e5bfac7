"""DKIM (RFC 6376) without I/O: key pairs, the TXT record that publishes one, and the signature.

dkimpy parses the header, canonicalises its fields and hashes them (relaxed/relaxed); the relaxed
body is computed here (the same bytes as dkimpy's, tested, without its regex pass over every space),
and the private-key operation is OpenSSL's, through `cryptography`: dkimpy's own RSA is pure Python
(about 8 ms per RSA-2048 signature against about 0.3 ms) and its Ed25519 needs PyNaCl, which we do
not install. The tests check signatures with dkimpy's verifier and with OpenDKIM.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import hashlib
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy

RSA = "rsa-sha256"
ED25519 = "ed25519-sha256"
RSA_KEY_BITS = 2048
# RFC 6376 5.4 and 5.4.1: what the signature protects. Only the fields present are signed; "from"
# is signed once more than it occurs, so that a From: added on the way breaks the signature.
SIGNED_FIELDS = (
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "reply-to",
    "in-reply-to",
    "references",
)
SIGNED_FIELD_PREFIXES = ("list-",)
CANONICALIZATION = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
TRAILING_WSP = re.compile(rb"[\t ]+\r\n")
WSP_RUN = re.compile(rb"[\t ]{2,}|\t")
# A character-string in a TXT record holds at most 255 octets (RFC 1035 3.3.14).
TXT_STRING_OCTETS = 255

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class SigningError(Exception):
    """The message cannot be signed (no From: to sign, a broken key); it is sent unsigned."""


def generate_key_pair(algorithm: str) -> tuple[str, str]:
    """A new key pair: (the private key as PKCS#8 PEM, the public key as the TXT record's p= value)."""
    private: PrivateKey
    if algorithm == RSA:
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
        public = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    elif algorithm == ED25519:
        private = ed25519.Ed25519PrivateKey.generate()
        # RFC 8463 4.2: p= is the bare 32-byte key, not a SubjectPublicKeyInfo.
        public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raise ValueError(f"unknown DKIM algorithm {algorithm!r}")
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem.decode("ascii"), base64.b64encode(public).decode("ascii")


def txt_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


def txt_value(algorithm: str, public_key: str) -> str:
    """The record to publish, as one string (what DNS providers' forms take)."""
    key_type = "ed25519" if algorithm == ED25519 else "rsa"
    return f"v=DKIM1; k={key_type}; p={public_key}"


def txt_strings(value: str) -> list[str]:
    """`value` cut into TXT character-strings of at most 255 octets (for zone files); DNS joins them."""
    return [value[i : i + TXT_STRING_OCTETS] for i in range(0, len(value), TXT_STRING_OCTETS)] or [""]


@functools.lru_cache(maxsize=256)
def load_private_key(pem: str) -> PrivateKey:
    """The key object for a PEM (remembered: parsing costs more than signing)."""
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    if not isinstance(key, (rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise SigningError(f"a DKIM key must be RSA or Ed25519, not {type(key).__name__}")
    return key


def _fields_to_sign(names: Iterable[bytes]) -> list[bytes]:
    present = [
        name.lower()
        for name in names
        if name.lower().decode("ascii", "replace") in SIGNED_FIELDS
        or name.lower().startswith(tuple(prefix.encode() for prefix in SIGNED_FIELD_PREFIXES))
    ]
    return [*present, b"from"]


@dataclass(frozen=True)
class ParsedMessage:
    """The header fields ([name, value] with CRLF) and the body, as dkimpy reads them."""

    headers: list[list[bytes]]
    body: bytes


def parse_message(message: bytes) -> ParsedMessage:
    """Split a CRLF message into its header fields and body (only the header is parsed line by line)."""
    end = message.find(b"\r\n\r\n")
    head, body = (message[: end + 2], message[end + 4 :]) if end >= 0 else (message, b"")
    try:
        headers, _ = dkim.rfc822_parse(head)
    except dkim.MessageFormatError as error:
        raise SigningError(f"the header cannot be read: {error}") from None
    return ParsedMessage(headers=headers, body=body)


def canonical_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4 (relaxed body) of a CRLF body; as dkimpy's, but plain text costs no regex.

    dkimpy's substitutes a space for every run of spaces, single ones included (a regex replacement
    per word); here only what must change is touched, and the usual body (no tab, no double space,
    no space before CRLF) is only searched.
    """
    if b" \r\n" in body or b"\t\r\n" in body:
        body = TRAILING_WSP.sub(b"\r\n", body)
    if b"\t" in body or b"  " in body:
        body = WSP_RUN.sub(b" ", body)
    body = body.rstrip(b"\r\n")
    # rstrip also takes a lone CR or LF, which cannot end a CRLF body's line anyway.
    return body + b"\r\n" if body else b""


def author_domain(parsed: ParsedMessage) -> str | None:
    """The domain of the one From: address (RFC 5322 3.6.2), lowercase; None if there is not exactly one."""
    values = [value for name, value in parsed.headers if name.lower() == b"from"]
    if len(values) != 1:
        return None
    addresses = email.utils.getaddresses([values[0].decode("utf-8", "replace")])
    if len(addresses) != 1 or "@" not in addresses[0][1]:
        return None
    return addresses[0][1].rpartition("@")[2].lower().rstrip(".") or None


def signature_field(
    parsed: ParsedMessage,
    *,
    domain: str,
    selector: str,
    algorithm: str,
    private_key: PrivateKey,
    timestamp: int | None = None,
) -> bytes:
    """The `DKIM-Signature:` field (folded, CRLF-terminated) to put in front of the message."""
    include = _fields_to_sign(name for name, _ in parsed.headers)
    if include.count(b"from") < 2:
        raise SigningError("the message has no From: field")
    body = canonical_body(parsed.body)
    fields = [
        (b"v", b"1"),
        (b"a", algorithm.encode("ascii")),
        (b"c", CANONICALIZATION.to_c_value()),
        (b"d", domain.encode("ascii")),
        (b"s", selector.encode("ascii")),
        (b"t", str(int(time.time()) if timestamp is None else timestamp).encode("ascii")),
        (b"h", b":".join(include)),
        (b"bh", base64.b64encode(hashlib.sha256(body).digest())),
        (b"b", b""),
    ]
    unsigned = dkim.fold(b"; ".join(b"=".join(field) for field in fields), namelen=len(b"DKIM-Signature:"))
    digest = hashlib.sha256()
    # RFC 6376 3.7: the chosen fields (bottom-up, as dkimpy selects them), then this field with b=
    # empty and without its trailing CRLF.
    dkim.hash_headers(
        digest,
        CANONICALIZATION,
        CANONICALIZATION.canonicalize_headers(parsed.headers),
        include,
        (b"DKIM-Signature", b" " + unsigned),
        {},
    )
    if isinstance(private_key, rsa.RSAPrivateKey):
        if algorithm != RSA:
            raise SigningError(f"an RSA key cannot sign {algorithm}")
        signature = private_key.sign(digest.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    else:
        if algorithm != ED25519:
            raise SigningError(f"an Ed25519 key cannot sign {algorithm}")
        # RFC 8463 3: Ed25519 signs the SHA-256 digest of the hashed data.
        signature = private_key.sign(digest.digest())
    signed = unsigned + base64.b64encode(signature)
    return b"DKIM-Signature: " + dkim.fold(signed, namelen=len(b"DKIM-Signature:")) + b"\r\n"
