"""The SMTP client side: one transaction per destination host, per-recipient results.

RFC 5321 section 4.5.2 (dot-stuffing) and 2.3.8 (CRLF line endings) are applied on the way out;
STARTTLS (RFC 3207) is used whenever the remote offers it, without certificate checks, as
opportunistic TLS between MTAs does; AUTH (RFC 4954) only when a route carries credentials.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import ipaddress
import os
import re
import smtplib
import ssl
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from servers import stored_secrets
from servers.delivery.routing import Route, Target

# RFC 5321 4.5.3.2 asks for 5 minutes per command; connecting is bounded much tighter.
CONNECT_TIMEOUT_S = 30
ENHANCED_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")
LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")
LEADING_DOT = re.compile(rb"(?m)^\.")


@dataclass(frozen=True)
class Result:
    """What happened to one recipient in one attempt."""

    code: int
    status: str  # RFC 3463, e.g. "5.1.1"
    text: str
    host: str = ""

    @property
    def delivered(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def reply(self) -> str:
        return f"{self.code} {self.text}".strip()


def result_of(code: int, message: bytes | str, host: str = "") -> Result:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    text = " ".join(text.split())
    match = ENHANCED_STATUS.match(text)
    if match and match.group(1) == str(code)[0]:
        status = match.group(0)
        full = text
    else:
        status = f"{str(code)[0]}.0.0"
        full = text
    return Result(code=code, status=status, text=full, host=host)


def wire_data(message: bytes) -> bytes:
    """The DATA payload: CRLF line endings, leading dots doubled, ending in CRLF "." CRLF."""
    normalised = LINE_ENDINGS.sub(b"\r\n", message)
    stuffed = LEADING_DOT.sub(b"..", normalised)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def can_bind_source(source_address: str | None, target_address: str) -> bool:
    """Whether to send from the server's own address: only where that address can reach the target
    (same IP version, and a loopback source only towards loopback)."""
    if not source_address:
        return False
    try:
        source, target = ipaddress.ip_address(source_address), ipaddress.ip_address(target_address)
    except ValueError:
        return False
    return source.version == target.version and (not source.is_loopback or target.is_loopback)


class SessionError(Exception):
    """The whole transaction with one host failed (connection, greeting, MAIL): try the next host."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.reply)
        self.result = result


class ConnectionSlots:
    """A per-server limit on concurrent outbound connections, shared by every process of the node.

    Each connection holds an exclusive lock on one of `limit` files; the kernel drops the lock when
    its holder dies, so a crash never leaks a slot.
    """

    def __init__(self, directory: Path, limit: int, *, wait_s: float = 30.0) -> None:
        self.directory = Path(directory)
        self.limit = max(1, limit)
        self.wait_s = wait_s

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait_s
        while True:
            for index in range(self.limit):
                fd = os.open(self.directory / f"slot-{index}", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as error:
                    os.close(fd)
                    if error.errno in (errno.EAGAIN, errno.EACCES):
                        continue
                    raise
                try:
                    yield
                finally:
                    os.close(fd)  # closing releases the lock
                return
            if time.monotonic() > deadline:
                raise SessionError(result_of(451, "4.4.5 Outbound connection limit reached"))
            time.sleep(0.1)


def _tls_context() -> ssl.SSLContext:
    # Opportunistic TLS between MTAs: encrypt whenever possible, authenticate nobody (RFC 7435).
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _transaction(
    target: Target,
    route: Route,
    mail_from: str,
    recipients: Sequence[str],
    message: bytes,
    *,
    helo: str,
    timeout_s: float,
    source_address: str | None,
    use_tls: bool,
) -> dict[str, Result]:
    host = f"{target.host}[{target.address}]:{target.port}"
    source = (source_address, 0) if can_bind_source(source_address, target.address) else None
    try:
        # A host that does not answer at all should not hold a worker for the whole command time-out.
        smtp = smtplib.SMTP(local_hostname=helo, timeout=min(timeout_s, CONNECT_TIMEOUT_S), source_address=source)
        smtp._host = target.host or target.address  # type: ignore[attr-defined]  # the name STARTTLS sends as SNI
        code, greeting = smtp.connect(target.address, target.port)
        smtp.timeout = timeout_s
        assert smtp.sock is not None  # connect() succeeded
        smtp.sock.settimeout(timeout_s)
    except (OSError, smtplib.SMTPException) as error:
        raise SessionError(result_of(451, f"4.4.1 Connection to {host} failed: {error}", host)) from error
    try:
        if code != 220:
            raise SessionError(result_of(451 if code < 500 else code, greeting, host))
        code, reply = smtp.ehlo()
        if code != 250:
            code, reply = smtp.helo()
            if code != 250:
                raise SessionError(result_of(code, reply, host))
        if use_tls and smtp.has_extn("starttls"):
            code, reply = smtp.starttls(context=_tls_context())
            if code != 220:
                raise SessionError(result_of(451, f"4.7.0 STARTTLS refused: {code} {reply!r}", host))
            smtp.ehlo()
        if route.username:
            if not smtp.has_extn("auth"):
                raise SessionError(result_of(451, f"4.7.0 {host} does not offer AUTH", host))
            try:
                # Decrypted here, for this connection only.
                password = stored_secrets.reveal(route.password)
            except stored_secrets.SecretUnreadableError as error:
                raise SessionError(result_of(451, f"4.7.0 No usable password for {host}: {error}", host)) from None
            try:
                smtp.login(route.username, password)
            except smtplib.SMTPAuthenticationError as error:
                # A smart host refusing our credentials is a configuration problem: keep the mail.
                # (typeshed allows str in smtp_error; login() always raises it with the reply's bytes.)
                raise SessionError(
                    result_of(
                        451,
                        f"4.7.0 Authentication failed: {error.smtp_code} {error.smtp_error.decode(errors='replace')}",  # type: ignore[union-attr]
                        host,
                    )
                ) from error
        options = mail_options(smtp, mail_from, recipients, message)
        if options is None:
            raise SessionError(result_of(553, f"5.6.7 {host} does not accept non-ASCII addresses (SMTPUTF8)", host))
        code, reply = smtp.mail(mail_from, options)
        if code != 250:
            raise SessionError(result_of(code, reply, host))
        results: dict[str, Result] = {}
        accepted: list[str] = []
        for recipient in recipients:
            code, reply = smtp.rcpt(recipient)
            results[recipient] = result_of(code, reply, host)
            if code in (250, 251):
                accepted.append(recipient)
        if not accepted:
            smtp.rset()
            return results
        code, reply = smtp.docmd("DATA")
        if code == 354:
            smtp.send(wire_data(message))
            code, reply = smtp.getreply()
        outcome = result_of(code, reply, host)
        for recipient in accepted:
            results[recipient] = outcome
        return results
    except SessionError:
        raise
    except (ssl.SSLError, ssl.CertificateError) as error:
        raise _TlsError(result_of(451, f"4.7.0 TLS with {host} failed: {error}", host)) from error
    except (OSError, smtplib.SMTPException) as error:
        raise SessionError(result_of(451, f"4.4.2 Connection to {host} lost: {error}", host)) from error
    finally:
        with contextlib.suppress(Exception):
            smtp.quit()
        with contextlib.suppress(Exception):
            smtp.close()


def mail_options(smtp: smtplib.SMTP, mail_from: str, recipients: Sequence[str], message: bytes) -> list[str] | None:
    """MAIL FROM parameters: SIZE (RFC 1870), BODY=8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531).

    None when the addresses need SMTPUTF8 and the remote host does not offer it (RFC 6531 3.2).
    """
    options = []
    if smtp.has_extn("size"):
        options.append(f"SIZE={len(message)}")
    if smtp.has_extn("8bitmime") and not message.isascii():
        options.append("BODY=8BITMIME")
    if not mail_from.isascii() or not all(recipient.isascii() for recipient in recipients):
        if not smtp.has_extn("smtputf8"):
            return None
        options.append("SMTPUTF8")
    return options


class _TlsError(SessionError):
    pass


def deliver(
    route: Route,
    mail_from: str,
    recipients: Sequence[str],
    message: bytes,
    *,
    helo: str,
    timeout_s: float,
    slots: ConnectionSlots,
    source_address: str | None = None,
) -> dict[str, Result]:
    """Deliver `message` to `recipients` over `route`; return every recipient's result.

    Hosts are tried in order until one holds a transaction; a host that fails as a whole (cannot be
    reached, 4xx greeting, MAIL refused with 4xx) passes the recipients to the next. Recipients
    refused or deferred by a host that did take the transaction keep that host's answer.
    """
    last_failure = result_of(451, "4.4.0 No host could be tried")
    for target in route.targets:
        try:
            attempt = functools.partial(
                _transaction,
                target,
                route,
                mail_from,
                recipients,
                message,
                helo=helo,
                timeout_s=timeout_s,
                source_address=source_address,
            )
            with slots.hold():
                try:
                    return attempt(use_tls=True)
                except _TlsError:
                    # A broken TLS stack on the other side: deliver in the clear rather than not at all.
                    return attempt(use_tls=False)
        except SessionError as failure:
            last_failure = failure.result
            if failure.result.permanent:
                return dict.fromkeys(recipients, failure.result)
    if route.fallback is not None:
        return deliver(
            route.fallback,
            mail_from,
            recipients,
            message,
            helo=helo,
            timeout_s=timeout_s,
            slots=slots,
            source_address=source_address,
        )
    return dict.fromkeys(recipients, last_failure)
