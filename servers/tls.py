"""TLS for our listeners: a self-signed certificate made at first use, or an administrator's PEM pair."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import ssl
from pathlib import Path

CERTIFICATE_VALID_DAYS = 825


def ensure_self_signed_certificate(cert_path: Path, key_path: Path, hostname: str) -> None:
    """Create a self-signed certificate for `hostname` unless the pair already exists."""
    if cert_path.exists() and key_path.exists():
        return
    # Imported here: cryptography costs a worker 8 MiB of RSS, and it is needed once per certificate.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])])
    alt_names: list[x509.GeneralName] = [
        x509.DNSName(hostname),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERTIFICATE_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as key_file:
        key_file.write(key_bytes)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A server-side context with the library's secure defaults (TLS 1.2 and newer)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context


def format_peer(peer: object) -> str:
    """A client address as `ip:port` (`[ip]:port` for IPv6), from a socket's peername."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer or "unknown")


def describe_tls_failure(error: BaseException | None) -> str:
    """Why a TLS handshake failed, in one line: OpenSSL's reason, or how the connection ended."""
    if isinstance(error, ssl.SSLError):
        # "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)": the source position says nothing.
        return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(error)) or type(error).__name__
    if error is None or isinstance(error, ConnectionError | EOFError):
        return "the client closed the connection during the handshake"
    if isinstance(error, TimeoutError):
        return "the handshake timed out"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
