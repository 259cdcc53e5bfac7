"""The I/O of the Filters tab for the SMTP adapter: a virus scan by clamd and a spam score by rspamd.

The decisions are pure functions of `servers.smtp_policy` (`virus_reply`, `spam_verdict`); this
module only asks the scanners, each within a time limit, and says what it heard:

* clamd, by its INSTREAM command (clamd(8)): `zINSTREAM\\0`, then the message in chunks, each
  after its length as 4 bytes in network order, then a chunk of length 0; clamd answers one
  NUL-ended line, "stream: OK", "stream: <signature> FOUND" or "... ERROR". Over TCP
  ("tcp://host:port") or a unix socket ("unix:/path").
* rspamd, by its HTTP protocol (rspamd's "protocol" docs): `POST /checkv2` with the message as
  the body and the envelope in headers (From, Rcpt, IP, Helo, User, Queue-Id); the JSON answer's
  `score` is what the thresholds read. A minimal HTTP/1.1 client on asyncio streams: the project
  has no async HTTP client, and one request per message needs none.

A scanner that cannot be reached is one log line until it answers again; what each one last said is
kept in Redis (`servers.livestate.scanner_key`) for the console's Services view.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

from servers.smtp_policy import ScanResult

log = logging.getLogger(__name__)

VIRUS_SCAN_TIMEOUT_S = 30.0
RSPAMD_TIMEOUT_S = 10.0
CLAMD_CHUNK_OCTETS = 64 * 1024
# How often an unchanged scanner state is written to Redis again (a change is written at once).
STATE_REFRESH_S = 60.0
STATE_TTL_S = 7 * 24 * 3600
MAX_HTTP_RESPONSE_OCTETS = 4 * 1024 * 1024


def parse_scanner_address(text: str) -> tuple[str, str, int]:
    """("tcp", host, port) for "tcp://host:port" ("[v6]:port" too), ("unix", path, 0) for "unix:/path"."""
    text = text.strip()
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path.startswith("/"):
            raise ValueError(f"{text!r}: a unix socket is named by its absolute path (unix:/run/clamav/clamd.ctl).")
        return "unix", path, 0
    if text.startswith("tcp://"):
        host, port = _host_and_port(text[len("tcp://") :].rstrip("/"), text)
        return "tcp", host, port
    raise ValueError(f"{text!r}: write tcp://host:port or unix:/path/to/clamd.socket.")


def _host_and_port(authority: str, text: str, default_port: int | None = None) -> tuple[str, int]:
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = authority.rpartition(":") if ":" in authority else (authority, "", "")
    if not port_text and default_port is not None:
        port_text = str(default_port)
    if not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: name a host and a TCP port (like 127.0.0.1:3310).")
    return host, int(port_text)


def parse_http_url(text: str) -> tuple[str, int, str]:
    """(host, port, path ending in "/") of an http:// URL (rspamd speaks plain HTTP on loopback)."""
    text = text.strip()
    if not text.startswith("http://"):
        raise ValueError(f"{text!r}: rspamd's URL starts with http:// (like http://127.0.0.1:11333).")
    authority, slash, path = text[len("http://") :].partition("/")
    host, port = _host_and_port(authority, text, default_port=80)
    return host, port, "/" + path.strip("/") + ("/" if path.strip("/") else "")


def clamd_result(reply: bytes) -> ScanResult:
    """What clamd's answer to INSTREAM says."""
    text = reply.rstrip(b"\0\r\n").decode("utf-8", "replace").strip()
    _, _, verdict = text.partition(": ")
    if text.endswith(" FOUND"):
        return ScanResult(signature=verdict.removesuffix(" FOUND").strip() or "unknown")
    if verdict == "OK":
        return ScanResult()
    return ScanResult(error=text or "no answer")


async def clamd_instream(address: str, data: bytes) -> ScanResult:
    """Scan `data` with the clamd at `address`; an error result if it cannot tell within the time limit."""
    kind, host, port = parse_scanner_address(address)
    writer = None
    try:
        async with asyncio.timeout(VIRUS_SCAN_TIMEOUT_S):
            if kind == "unix":
                reader, writer = await asyncio.open_unix_connection(host)
            else:
                reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(b"zINSTREAM\0")
                for offset in range(0, len(data), CLAMD_CHUNK_OCTETS):
                    chunk = data[offset : offset + CLAMD_CHUNK_OCTETS]
                    writer.write(struct.pack(">I", len(chunk)) + chunk)
                    await writer.drain()
                writer.write(struct.pack(">I", 0))
                await writer.drain()
            except (ConnectionResetError, BrokenPipeError):
                pass  # clamd stopped reading (its size limit): its answer says why
            reply = await reader.readuntil(b"\0")
    except TimeoutError:
        return ScanResult(error=f"no answer within {VIRUS_SCAN_TIMEOUT_S:g} s")
    except asyncio.IncompleteReadError as exc:
        return ScanResult(error=f"closed without an answer ({exc.partial[:80]!r})" if exc.partial else "closed")
    except (OSError, asyncio.LimitOverrunError) as exc:
        return ScanResult(error=f"{type(exc).__name__}: {exc}")
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    return clamd_result(reply)


def _header_value(value: str) -> str:
    """A value fit for one HTTP header line."""
    return "".join(char if 32 <= ord(char) < 127 else "?" for char in value)[:500]


async def http_post(url: str, path: str, headers: Sequence[tuple[str, str]], body: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 POST (Connection: close); the status code and the body (Content-Length or chunked)."""
    host, port, base = parse_http_url(url)
    host_header = f"[{host}]" if ":" in host else host
    lines = [
        f"POST {base}{path} HTTP/1.1",
        f"Host: {host_header}:{port}",
        "Connection: close",
        f"Content-Length: {len(body)}",
        *(f"{name}: {_header_value(value)}" for name, value in headers),
    ]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body)
        await writer.drain()
        response = await reader.read(MAX_HTTP_RESPONSE_OCTETS)
        while True:
            more = await reader.read(MAX_HTTP_RESPONSE_OCTETS)
            if not more:
                break
            response += more
            if len(response) > MAX_HTTP_RESPONSE_OCTETS:
                raise ValueError("the answer is too long")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    head, separator, payload = response.partition(b"\r\n\r\n")
    if not separator:
        raise ValueError("an answer without headers")
    status_line, *header_lines = head.split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP answer: {status_line[:80]!r}")
    fields = {name.strip().lower(): value.strip() for name, _, value in (h.partition(b":") for h in header_lines)}
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        payload = _unchunked(payload)
    elif fields.get(b"content-length", b"").isdigit():
        payload = payload[: int(fields[b"content-length"])]
    return int(parts[1]), payload


def _unchunked(payload: bytes) -> bytes:
    body = b""
    while payload:
        size_line, _, payload = payload.partition(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            break
        body, payload = body + payload[:size], payload[size + 2 :]
    return body


async def rspamd_score(url: str, data: bytes, headers: Sequence[tuple[str, str]]) -> float:
    """rspamd's score of a message; raises OSError, TimeoutError or ValueError if it gave none."""
    async with asyncio.timeout(RSPAMD_TIMEOUT_S):
        status, body = await http_post(url, "checkv2", headers, data)
    if status != 200:
        raise ValueError(f"HTTP {status}: {body[:200]!r}")
    answer = json.loads(body)
    score = answer.get("score") if isinstance(answer, dict) else None
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise ValueError(f"an answer without a score: {body[:200]!r}")
    return float(score)


def scanner_answers(kind: str, address: str, *, timeout_s: float = 1.0) -> tuple[bool, str]:
    """Whether a scanner answers its ping now (clamd: zPING -> PONG; rspamd: GET /ping -> pong), and
    what went wrong if not. Blocking, for the console's Services view; the workers never call it."""
    try:
        if kind == "clamd":
            family, host, port = parse_scanner_address(address)
            if family == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout_s)
                sock.connect(host)
            else:
                sock = socket.create_connection((host, port), timeout=timeout_s)
            with sock:
                sock.sendall(b"zPING\0")
                answer = sock.recv(64)
            expected = b"PONG"
        else:
            host, port, base = parse_http_url(address)
            with socket.create_connection((host, port), timeout=timeout_s) as sock:
                sock.sendall(f"GET {base}ping HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                answer = b""
                while chunk := sock.recv(4096):
                    answer += chunk
            answer = answer.partition(b"\r\n\r\n")[2]
            expected = b"pong"
    except (OSError, ValueError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    if answer.rstrip(b"\0\r\n").strip() != expected:
        return False, f"unexpected answer {answer[:60]!r}"
    return True, ""


class ContentChecks:
    """One worker's scanners and what each last said; `redis` (async, optional) takes their state."""

    def __init__(self, redis: Any = None, *, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.clock = clock
        # (kind, address) -> (reachable, last error, checked at, written to Redis at)
        self.states: dict[tuple[str, str], tuple[bool, str, float, float]] = {}

    async def scan(self, address: str, data: bytes) -> ScanResult:
        """clamd's verdict on `data`; an error result (never an exception) if it gave none."""
        result = await clamd_instream(address, data)
        await self._note("clamd", address, result.error)
        return result

    async def spam_score(self, url: str, data: bytes, headers: Sequence[tuple[str, str]]) -> float | None:
        """rspamd's score, or None (fail open) if it gave none."""
        try:
            score = await rspamd_score(url, data, headers)
        except (OSError, TimeoutError, ValueError) as exc:
            await self._note("rspamd", url, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            return None
        await self._note("rspamd", url, "")
        return score

    async def _note(self, kind: str, address: str, error: str) -> None:
        """Log a scanner going down (once) and coming back; keep its state for the Services view."""
        now = self.clock()
        before = self.states.get((kind, address))
        was_reachable = before is None or before[0]
        reachable = not error
        if was_reachable and not reachable:
            log.warning("%s %s: cannot scan (%s); %s", kind, address, error, _FAILURE_MEANS[kind])
        elif not was_reachable and reachable:
            log.warning("%s %s: answers again", kind, address)
        last_error = error or (before[1] if before else "")
        written_at = before[3] if before else 0.0
        changed = before is None or before[0] != reachable or before[1] != last_error
        if self.redis is not None and (changed or now - written_at >= STATE_REFRESH_S):
            written_at = now
            await self._publish(kind, address, reachable, last_error, now)
        self.states[(kind, address)] = (reachable, last_error, now, written_at)

    async def _publish(self, kind: str, address: str, reachable: bool, error: str, now: float) -> None:
        from servers.livestate import scanner_key

        state = json.dumps({"reachable": reachable, "error": error, "checked_at": now})
        try:
            await self.redis.set(scanner_key(kind, address), state, ex=STATE_TTL_S)
        except Exception as exc:  # Redis down: the console shows the state as unknown, mail goes on
            log.debug("cannot publish the %s state: %s", kind, exc)


_FAILURE_MEANS = {
    "clamd": "mail is accepted unscanned or deferred, as each server's virus_scanner_failure says",
    "rspamd": "mail is accepted unscored until it answers",
}
