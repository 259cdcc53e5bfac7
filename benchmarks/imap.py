"""IMAP speed of MailConsole's IMAP service, side by side with Dovecot (--compare-dovecot) on the same Maildirs.

    python -m benchmarks.imap [--compare-dovecot] [--big-folders 10000 50000] [--idle-sessions 1000]

Rows, each measured on every server in one run, the servers interleaved so background noise hits
them alike:
- `open+fetch N`: LOGIN, SELECT INBOX and `FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)` of an N-message
  folder, in ms (median of --rounds; the first open of a folder by a fresh process is also shown:
  Dovecot builds its index then, we build our UID map).
- `body.peek`: --clients sessions, signed in and SELECTed beforehand (not timed: sign-in checks Argon2
  hashes here and SHA512-CRYPT hashes in Dovecot), each `FETCH n BODY.PEEK[]` of every message of their own mailbox
  one by one, in messages/s.
- `store 1000`: `STORE 1:1000 +FLAGS.SILENT (\\Flagged)` then `-FLAGS.SILENT`, in messages/s.
- `append`: --clients sessions each APPEND --appends messages of --message-kib KiB to their INBOX
  (folders our service creates as root at first sign-in are not writable by Dovecot's `nobody`), in messages/s.
- `idle`: --idle-sessions sessions in IDLE at once (spread over the mailboxes), the RSS of the whole
  service (every process of it), and the time from storing a message with `servers.mailstore.deliver`
  to an IDLE session reading its `EXISTS`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks import env
from benchmarks.loadclient import LINE, ProcessMeter

_LITERAL = re.compile(rb"\{([0-9]+)\+?\}\r\n")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DOMAIN = "bench.test"


@dataclass
class ImapTarget:
    name: str
    port: int
    pids: Callable[[], list[int]]
    # Run before each server's rows: Dovecot (as nobody) must be able to read what ours stored (as root).
    before_rows: Callable[[], None] = lambda: None


class ImapError(Exception):
    pass


class Client:
    """A minimal pipelining-free IMAP client: one command at a time, literals for APPEND."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.tag = 0
        self.pending = bytearray()  # received after the last tagged response

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**24)
        client = cls(reader, writer)
        greeting = await reader.readline()
        if not greeting.startswith(b"* OK"):
            raise ImapError(greeting.decode("ascii", "replace").strip() or "no greeting")
        return client

    async def read_until_tagged(self, tag: bytes) -> int:
        """Read responses (skipping literals) up to the tagged one; return the octets read.

        In big chunks, scanned with C-level searches rather than a readline per response: a FETCH
        of 50,000 messages is 50,000 lines, and a Python loop over them made this client, not the
        server, the slowest part of the `open+fetch` rows. "{n}\\r\\n" can only be a literal's
        announcement (a quoted string holds no CRLF), so the octets after one are skipped unread.
        """
        buffer = self.pending
        start = 0  # where the scan goes on
        tagged_line = b"\r\n" + tag + b" "
        while True:
            literal = _LITERAL.search(buffer, start)
            at_tag = 0 if start == 0 and buffer.startswith(tag + b" ") else buffer.find(tagged_line, max(start - 2, 0))
            if at_tag >= 0 and (literal is None or at_tag < literal.start()):
                tag_start = at_tag if at_tag == 0 and buffer.startswith(tag + b" ") else at_tag + 2
                end = buffer.find(b"\r\n", tag_start)
                if end >= 0:
                    line = bytes(buffer[tag_start:end])
                    self.pending = buffer[end + 2 :]
                    if not line[len(tag) + 1 :].startswith(b"OK"):
                        raise ImapError(line.decode("ascii", "replace"))
                    return end + 2
            elif literal is not None and literal.end() + int(literal.group(1)) <= len(buffer):
                start = literal.end() + int(literal.group(1))
                continue
            elif literal is None:
                start = max(len(buffer) - 32, start)  # a tagged line or "{n}" cut by the chunk end is seen again
            chunk = await self.reader.read(2**20)
            if not chunk:
                raise ConnectionError("closed in the middle of a response")
            buffer += chunk

    async def command(self, text: str) -> int:
        self.tag += 1
        tag = f"a{self.tag}".encode()
        self.writer.write(tag + b" " + text.encode() + b"\r\n")
        return await self.read_until_tagged(tag)

    async def login(self, user: str, password: str) -> None:
        await self.command(f'LOGIN "{user}" "{password}"')

    async def append(self, folder: str, message: bytes) -> None:
        self.tag += 1
        tag = f"a{self.tag}".encode()
        self.writer.write(tag + f" APPEND {folder} (\\Seen) {{{len(message)}}}\r\n".encode())
        continuation = await self.reader.readline()
        if not continuation.startswith(b"+"):
            raise ImapError(continuation.decode("ascii", "replace").strip())
        self.writer.write(message + b"\r\n")
        await self.read_until_tagged(tag)

    async def logout(self) -> None:
        self.tag += 1
        self.writer.write(f"a{self.tag} LOGOUT\r\n".encode())
        with contextlib.suppress(ConnectionError, ImapError):
            await self.read_until_tagged(f"a{self.tag}".encode())
        self.writer.close()


def fill_folder(path: Path, count: int, body: bytes) -> None:
    """Write `count` messages into the Maildir's new/: like `servers.mailstore.deliver` (a unique name,
    tmp/ then rename) without its fsyncs, which would make filling 60,000 messages take many minutes."""
    from servers import maildir, mailstore

    root = maildir.ensure_maildir(path)
    for n in range(count):
        head = (
            f"From: Bench Sender <bench@client.test>\r\nTo: user@{DOMAIN}\r\nSubject: imap bench {n}\r\n"
            f"Date: Wed, 02 Dec 2026 12:00:00 +0000\r\nMessage-ID: <{n}@client.test>\r\n\r\n"
        )
        name = mailstore.new_unique_name()
        tmp = root / "tmp" / name
        tmp.write_bytes(head.encode() + body)
        os.rename(tmp, root / "new" / name)


async def open_and_fetch(target: ImapTarget, user: str, password: str) -> float:
    started = time.perf_counter()
    client = await Client.connect(target.port)
    await client.login(user, password)
    await client.command("SELECT INBOX")
    await client.command("FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)")
    elapsed = time.perf_counter() - started
    await client.logout()
    return elapsed * 1000


async def body_peek(target: ImapTarget, users: list[tuple[str, str]], per_client: int) -> dict:
    """The FETCH phase only: sign-in is timed by no row here (we check Argon2 hashes, Dovecot SHA512-CRYPT)."""
    clients = []
    for user, password in users:
        client = await Client.connect(target.port)
        await client.login(user, password)
        await client.command("SELECT INBOX")
        clients.append(client)
    meter = ProcessMeter(target.pids)
    meter.start()

    async def one(client: Client) -> int:
        for n in range(1, per_client + 1):
            await client.command(f"FETCH {n} BODY.PEEK[]")
        return per_client

    started = time.perf_counter()
    fetched = sum(await asyncio.gather(*(one(client) for client in clients)))
    elapsed = time.perf_counter() - started
    cpu_s = meter.stop()
    for client in clients:
        await client.logout()
    return {"rate": fetched / elapsed, "unit": "msgs/s", "cpu_s": cpu_s, "rss_mib": meter.peak_rss_bytes / 2**20}


async def store_flags(target: ImapTarget, user: str, password: str) -> dict:
    client = await Client.connect(target.port)
    await client.login(user, password)
    await client.command("SELECT INBOX")
    started = time.perf_counter()
    await client.command("STORE 1:1000 +FLAGS.SILENT (\\Flagged)")
    await client.command("STORE 1:1000 -FLAGS.SILENT (\\Flagged)")
    elapsed = time.perf_counter() - started
    await client.logout()
    return {"rate": 2000 / elapsed, "unit": "msgs/s"}


async def append_rate(target: ImapTarget, users: list[tuple[str, str]], per_client: int, body: bytes) -> dict:
    async def one(index: int, user: str, password: str) -> int:
        client = await Client.connect(target.port)
        await client.login(user, password)
        for n in range(per_client):
            head = f"From: a@client.test\r\nSubject: append {index}.{n}\r\n\r\n".encode()
            await client.append("INBOX", head + body)
        await client.logout()
        return per_client

    started = time.perf_counter()
    appended = sum(await asyncio.gather(*(one(i, u, p) for i, (u, p) in enumerate(users))))
    return {"rate": appended / (time.perf_counter() - started), "unit": "msgs/s"}


async def idle_sessions(target: ImapTarget, users: list[tuple[str, str]], count: int, inbox_of: Callable) -> dict:
    clients: list[Client] = []
    sem = asyncio.Semaphore(50)

    async def open_one(n: int) -> Client:
        async with sem:
            user, password = users[n % len(users)]
            client = await Client.connect(target.port)
            await client.login(user, password)
            await client.command("SELECT INBOX")
            client.tag += 1
            client.writer.write(f"a{client.tag} IDLE\r\n".encode())
            line = await client.reader.readline()
            if not line.startswith(b"+"):
                raise ImapError(line.decode("ascii", "replace").strip())
            return client

    clients = list(await asyncio.gather(*(open_one(n) for n in range(count))))
    rss_by_process = [psutil.Process(pid).memory_info().rss / 2**20 for pid in target.pids()]
    rss = sum(rss_by_process)
    # A delivery to the first user's INBOX: the first session (of that user) must hear EXISTS.
    watcher = clients[0]
    from servers import mailstore

    started = time.perf_counter()
    await asyncio.get_running_loop().run_in_executor(
        None, mailstore.deliver, inbox_of(users[0][0]), [b"Subject: idle bench\r\n\r\nhello\r\n"]
    )
    while True:
        line = await asyncio.wait_for(watcher.reader.readline(), 10)
        if b"EXISTS" in line:
            break
    latency_ms = (time.perf_counter() - started) * 1000
    for client in clients:
        client.writer.close()
    largest = sorted(rss_by_process, reverse=True)[:3]
    return {
        "sessions": count,
        "rss_mib": rss,
        "largest_rss_mib": [round(r, 1) for r in largest],
        "exists_after_ms": latency_ms,
    }


def service_pids(pid: int | None) -> list[int]:
    if pid is None:
        return []
    try:
        process = psutil.Process(pid)
        return [pid, *(child.pid for child in process.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def set_up(args: argparse.Namespace) -> tuple[ImapTarget, list[tuple[str, str]], dict[int, tuple[str, str]], Path]:
    var_dir = env.prepare(keep=args.keep)
    from django.conf import settings

    from servers import services, supervision
    from servers.models import ImapService

    server = services.create_virtual_server(
        name="bench",
        default_domain=DOMAIN,
        ip_address="127.0.0.1",
        port=env.free_port(),
        home_dir=var_dir / "homes" / "bench",
        start=False,
    )
    body = LINE * max(args.message_kib * 1024 // len(LINE), 1)
    users = []
    for n in range(args.clients):
        mailbox = services.add_mailbox(server.default_domain, f"user{n}", env.BENCH_PASSWORD)
        fill_folder(Path(mailbox.maildir), args.messages_per_mailbox, body)
        users.append((mailbox.address, env.BENCH_PASSWORD))
    big_users = {}
    for size in args.big_folders:
        mailbox = services.add_mailbox(server.default_domain, f"big{size}", env.BENCH_PASSWORD)
        fill_folder(Path(mailbox.maildir), size, b"short body\r\n")
        big_users[size] = (mailbox.address, env.BENCH_PASSWORD)
    service = services.create_imap_service(ip_address="127.0.0.1", port=env.free_port(), plaintext_requires_tls=False)
    supervision.reconcile_node(settings.NODE_NAME)
    service = ImapService.objects.get(pk=service.pk)
    if service.state != "running":
        raise RuntimeError(f"the IMAP worker did not start: {service.state} {service.last_error}")
    pid = service.pid
    return (
        ImapTarget("mailconsole", service.port, lambda: service_pids(pid)),
        users,
        big_users,
        server.home_path / "Mailbox",
    )


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        extra = " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items())
        print(extra)


async def measured(target: ImapTarget, row: str, step: Awaitable[dict]) -> dict:
    """One row of one server; a failure says which (a server closing on us is otherwise anonymous)."""
    try:
        return {"server": target.name, "row": row, **await step}
    except (OSError, ImapError, TimeoutError, asyncio.IncompleteReadError) as error:
        raise ImapError(f"{target.name}, {row}: {type(error).__name__}: {error}") from error


async def in_ms(step: Awaitable[float]) -> dict:
    return {"ms": await step}


async def median_ms(steps: list[Callable[[], Awaitable[float]]]) -> dict:
    return {"ms": statistics.median([await step() for step in steps])}


async def run_all(
    args: argparse.Namespace,
    targets: list[ImapTarget],
    users: list[tuple[str, str]],
    big_users: dict[int, tuple[str, str]],
    inbox_of: Callable,
) -> list[dict]:
    rows: list[dict] = []
    for size, (user, password) in big_users.items():
        for target in targets:
            target.before_rows()
            rows.append(
                await measured(target, f"open+fetch {size} (first)", in_ms(open_and_fetch(target, user, password)))
            )
            print_rows(rows[-1:])
    body = LINE * max(args.message_kib * 1024 // len(LINE), 1)
    for _ in range(args.rounds):
        for target in targets:
            target.before_rows()
            for size, (user, password) in big_users.items():
                opens = [lambda t=target, u=user, p=password: open_and_fetch(t, u, p)] * 3
                rows.append(await measured(target, f"open+fetch {size}", median_ms(opens)))
                print_rows(rows[-1:])
            rows.append(await measured(target, "body.peek", body_peek(target, users, args.fetches)))
            print_rows(rows[-1:])
            if big_users:
                user, password = next(iter(big_users.values()))
                rows.append(await measured(target, "store 1000", store_flags(target, user, password)))
                print_rows(rows[-1:])
            rows.append(await measured(target, "append", append_rate(target, users, args.appends, body)))
            print_rows(rows[-1:])
    if args.idle_sessions:
        for target in targets:
            target.before_rows()
            rows.append(await measured(target, "idle", idle_sessions(target, users, args.idle_sessions, inbox_of)))
            print_rows(rows[-1:])
    return rows


def ratios(rows: list[dict]) -> list[dict]:
    """MailConsole / Dovecot per row: for rates higher is better, for ms lower is (ratio = theirs/ours)."""
    result = []
    for row_name in dict.fromkeys(r["row"] for r in rows):
        ours = [r for r in rows if r["row"] == row_name and r["server"] == "mailconsole"]
        theirs = [r for r in rows if r["row"] == row_name and r["server"] == "dovecot"]
        if not ours or not theirs:
            continue
        if "rate" in ours[0]:
            mean_ours = statistics.mean(r["rate"] for r in ours)
            mean_theirs = statistics.mean(r["rate"] for r in theirs)
            result.append(
                {"row": row_name, "ratio": mean_ours / mean_theirs, "ours": mean_ours, "dovecot": mean_theirs}
            )
        elif "ms" in ours[0]:
            mean_ours = statistics.mean(r["ms"] for r in ours)
            mean_theirs = statistics.mean(r["ms"] for r in theirs)
            result.append(
                {"row": row_name, "ratio": mean_theirs / mean_ours, "ours": mean_ours, "dovecot": mean_theirs}
            )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--messages-per-mailbox", type=int, default=200)
    parser.add_argument("--fetches", type=int, default=200, help="BODY.PEEK[] fetches per client")
    parser.add_argument("--appends", type=int, default=50, help="APPENDs per client")
    parser.add_argument("--message-kib", type=int, default=10)
    parser.add_argument("--big-folders", type=int, nargs="*", default=[10_000, 50_000])
    parser.add_argument("--idle-sessions", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compare-dovecot", action="store_true", help="also measure Dovecot (root, apt)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary var/ directory")
    args = parser.parse_args()
    args.fetches = min(args.fetches, args.messages_per_mailbox)
    ours, users, big_users, mailbox_root = set_up(args)
    targets = [ours]
    dovecot = None
    if args.compare_dovecot:
        from benchmarks.dovecot import Dovecot

        var_dir = Path(os.environ["MAILCONSOLE_VAR_DIR"])
        reachable = [var_dir, *[p for p in mailbox_root.parents if var_dir in p.parents]]
        credentials = dict(users) | dict(big_users.values())
        dovecot = Dovecot(var_dir / "dovecot-bench", env.free_port(), mailbox_root, credentials, reachable, "imap")
        dovecot.start()
        dovecot_process = dovecot.process
        assert dovecot_process is not None
        targets.append(ImapTarget("dovecot", dovecot.port, lambda: service_pids(dovecot_process.pid), dovecot.own_mail))

    def inbox_of(address: str) -> Path:
        local, domain = address.split("@")
        return mailbox_root / domain / local

    try:
        rows = asyncio.run(run_all(args, targets, users, big_users, inbox_of))
    finally:
        if dovecot is not None:
            dovecot.stop()
    print()
    for ratio in ratios(rows):
        print(
            f"MailConsole / Dovecot, {ratio['row']}: {ratio['ratio']:.2f}x "
            f"(ours {ratio['ours']:.1f}, dovecot {ratio['dovecot']:.1f})"
        )
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "settings": vars(args),
        "rows": rows,
        "ratios": ratios(rows),
    }
    print(f"load average at the end: {os.getloadavg()}")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"imap-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
