"""An asyncio SMTP load client, and the measurements taken around a run (CPU, RSS, delivery).

The same client drives MailConsole, the bare aiosmtpd baselines and Postfix, so the ratios compare
servers, not clients. Accept latency is the time from sending the final "." of DATA to reading
the server's 250: the time the server takes to make the message durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

LINE = b"The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs.\r\n"


def message_body(size_octets: int) -> bytes:
    """A body of about `size_octets` in 86-octet lines (no line starts with a dot)."""
    return LINE * max(size_octets // len(LINE), 1)


def message(number: int, recipient: str, body: bytes) -> bytes:
    head = (
        f"From: bench@client.test\r\nTo: {recipient}\r\nSubject: benchmark {number}\r\n"
        f"Message-ID: <{number}.{os.getpid()}@client.test>\r\n\r\n"
    ).encode("ascii")
    return head + body


class SMTPReplyError(Exception):
    pass


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    """Read one (possibly multi-line) SMTP reply and return its last line."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        if line[3:4] != b"-":
            return line


async def expect(reader: asyncio.StreamReader, code: bytes) -> bytes:
    line = await read_reply(reader)
    if not line.startswith(code):
        raise SMTPReplyError(line.decode("ascii", "replace").strip())
    return line


@dataclass
class LoadResult:
    accepted: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    started_at: float = 0.0
    last_accept_at: float = 0.0
    client_cpu_s: float = 0.0

    def note_error(self, error: Exception) -> None:
        key = f"{type(error).__name__}: {str(error)[:60]}"
        self.errors[key] = self.errors.get(key, 0) + 1


async def smtp_session(
    host: str, port: int, batch: Sequence[tuple[str, bytes]], result: LoadResult, source_address: str | None = None
) -> None:
    local_addr = (source_address, 0) if source_address else None
    reader, writer = await asyncio.open_connection(host, port, local_addr=local_addr)
    try:
        await expect(reader, b"220")
        writer.write(b"EHLO loadclient.test\r\n")
        await expect(reader, b"250")
        for recipient, payload in batch:
            writer.write(b"MAIL FROM:<bench@client.test>\r\n")
            await expect(reader, b"250")
            writer.write(f"RCPT TO:<{recipient}>\r\n".encode("ascii"))
            await expect(reader, b"250")
            writer.write(b"DATA\r\n")
            await expect(reader, b"354")
            writer.write(payload)
            writer.write(b".\r\n")
            sent_at = time.perf_counter()
            await expect(reader, b"250")
            now = time.perf_counter()
            result.latencies_s.append(now - sent_at)
            result.accepted += 1
            result.last_accept_at = now
        writer.write(b"QUIT\r\n")
        await read_reply(reader)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def client_addresses(count: int) -> list[str]:
    """`count` loopback source addresses (127.0.0.10 and up): many clients, as a real server sees."""
    return [f"127.0.0.{10 + n}" for n in range(count)]


async def run_load(
    host: str,
    port: int,
    recipients: Sequence[str],
    *,
    messages: int,
    size_octets: int,
    concurrency: int,
    per_connection: int,
    source_addresses: Sequence[str] = (),
) -> LoadResult:
    """Send `messages` messages over connections of `per_connection` messages, `concurrency` at once.

    Connection slot i connects from `source_addresses[i % len]` (the system's choice if empty)."""
    body = message_body(size_octets)
    rcpt_cycle = itertools.cycle(recipients)
    all_messages = [(rcpt, message(n, rcpt, body)) for n, rcpt in zip(range(messages), rcpt_cycle, strict=False)]
    batches = [all_messages[i : i + per_connection] for i in range(0, messages, per_connection)]
    queue: asyncio.Queue[Sequence[tuple[str, bytes]]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    result = LoadResult()

    async def connection_slot(slot: int) -> None:
        source = source_addresses[slot % len(source_addresses)] if source_addresses else None
        while not queue.empty():
            batch = queue.get_nowait()
            accepted_before = result.accepted
            try:
                await smtp_session(host, port, batch, result, source)
            except (OSError, SMTPReplyError, asyncio.IncompleteReadError) as error:
                result.note_error(error)
                result.failed += len(batch) - (result.accepted - accepted_before)

    cpu_before = time.process_time()
    result.started_at = time.perf_counter()
    await asyncio.gather(*(connection_slot(slot) for slot in range(concurrency)))
    result.client_cpu_s = time.process_time() - cpu_before
    return result


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)]


class ProcessMeter:
    """CPU seconds and peak RSS of a server: its processes, their live children and reaped children."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids
        self.peak_rss_bytes = 0
        self._cpu_start = 0.0
        self._task: asyncio.Task | None = None

    def processes(self) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        for pid in self.pids():
            try:
                process = psutil.Process(pid)
                found[pid] = process
                for child in process.children(recursive=True):
                    found[child.pid] = child
            except psutil.NoSuchProcess:
                continue
        return list(found.values())

    def cpu_s(self) -> float:
        total = 0.0
        roots = set(self.pids())
        for process in self.processes():
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
            if process.pid in roots:
                # Children that already exited (Postfix's smtpd/cleanup/virtual) were charged here.
                total += times.children_user + times.children_system
        return total

    def rss_bytes(self) -> int:
        total = 0
        for process in self.processes():
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    async def _sample(self) -> None:
        while True:
            self.peak_rss_bytes = max(self.peak_rss_bytes, self.rss_bytes())
            await asyncio.sleep(0.1)

    def start(self) -> None:
        self._cpu_start = self.cpu_s()
        self.peak_rss_bytes = self.rss_bytes()
        self._task = asyncio.get_running_loop().create_task(self._sample())

    def stop(self) -> float:
        """Stop sampling and return the CPU seconds used since start()."""
        if self._task is not None:
            self._task.cancel()
        self.peak_rss_bytes = max(self.peak_rss_bytes, self.rss_bytes())
        return self.cpu_s() - self._cpu_start


def count_files(directories: Sequence[Path]) -> int:
    total = 0
    for directory in directories:
        try:
            total += sum(1 for entry in os.scandir(directory) if entry.is_file() and not entry.name.startswith("."))
        except FileNotFoundError:
            continue
    return total


async def wait_delivered(directories: Sequence[Path], expected: int, timeout_s: float) -> float | None:
    """Wait until the directories hold `expected` files; return when (perf_counter), or None on timeout."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if count_files(directories) >= expected:
            return time.perf_counter()
        await asyncio.sleep(0.01)
    return None
