"""POP3 throughput of MailConsole's POP3 service (and Dovecot's, with --compare-dovecot).

    python -m benchmarks.pop3 [--clients 10] [--messages-per-mailbox 100] [--compare-dovecot]

Two loads on the same Maildirs: "retr-all" (each client: USER, PASS, STAT, RETR every message,
QUIT; nothing deleted) in msgs/s, and "short" sessions (USER, PASS, STAT, RETR 1, QUIT) in
sessions/s. Each client uses its own mailbox (a mailbox allows one session at a time).
The service is created with `services.create_pop3_service` and started by an in-process
`supervision.reconcile_node(NODE_NAME)`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks import env
from benchmarks.loadclient import LINE, ProcessMeter, percentile

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DOMAIN = "bench.test"


@dataclass
class Pop3Target:
    name: str
    port: int
    pids: Callable[[], list[int]]


class Pop3Error(Exception):
    pass


async def status(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readline()
    if not line.startswith(b"+OK"):
        raise Pop3Error(line.decode("ascii", "replace").strip() or "connection closed")
    return line


async def multiline(reader: asyncio.StreamReader) -> int:
    await status(reader)
    octets = 0
    while True:
        line = await reader.readline()
        if line == b".\r\n":
            return octets
        if not line:
            raise ConnectionError("closed in the middle of a response")
        octets += len(line)


async def session(port: int, user: str, password: str, retr_all: bool) -> int:
    """One POP3 session; return how many messages it retrieved."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
    try:
        await status(reader)
        writer.write(f"USER {user}\r\n".encode())
        await status(reader)
        writer.write(f"PASS {password}\r\n".encode())
        await status(reader)
        writer.write(b"STAT\r\n")
        count = int((await status(reader)).split()[1])
        wanted = count if retr_all else min(count, 1)
        for number in range(1, wanted + 1):
            writer.write(f"RETR {number}\r\n".encode())
            await multiline(reader)
        writer.write(b"QUIT\r\n")
        await status(reader)
        return wanted
    finally:
        writer.close()


async def measure(
    target: Pop3Target,
    users: list[tuple[str, str]],
    *,
    retr_all: bool,
    sessions_per_client: int,
) -> dict:
    meter = ProcessMeter(target.pids)
    meter.start()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    retrieved = 0
    sessions_done = 0

    async def client(user: str, password: str) -> None:
        nonlocal retrieved, sessions_done
        for _ in range(sessions_per_client):
            started = time.perf_counter()
            try:
                # Not `retrieved += await ...`: that reads `retrieved` before the await and loses updates.
                count = await session(target.port, user, password, retr_all)
                retrieved += count
                sessions_done += 1
                latencies.append(time.perf_counter() - started)
            except (OSError, Pop3Error, asyncio.IncompleteReadError) as error:
                key = f"{type(error).__name__}: {str(error)[:60]}"
                errors[key] = errors.get(key, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(client(u, p) for u, p in users))
    elapsed = time.perf_counter() - started
    cpu_s = meter.stop()
    return {
        "server": target.name,
        "load": "retr-all" if retr_all else "short",
        "clients": len(users),
        "sessions": sessions_done,
        "retrieved": retrieved,
        "errors": errors,
        "msgs_per_s": retrieved / elapsed,
        "sessions_per_s": sessions_done / elapsed,
        "session_p50_ms": percentile(latencies, 0.5) * 1000,
        "session_p99_ms": percentile(latencies, 0.99) * 1000,
        "server_cpu_ms_per_session": cpu_s * 1000 / max(sessions_done, 1),
        "peak_rss_mib": meter.peak_rss_bytes / 2**20,
    }


def set_up(args: argparse.Namespace) -> tuple[Pop3Target, list[tuple[str, str]], Path]:
    var_dir = env.prepare(keep=args.keep)
    from django.conf import settings

    from servers import maildir, mailstore, services, supervision
    from servers.models import Pop3Service

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
        path = maildir.ensure_maildir(Path(mailbox.maildir))
        for m in range(args.messages_per_mailbox):
            head = f"From: bench@client.test\r\nTo: {mailbox.address}\r\nSubject: pop3 bench {m}\r\n\r\n"
            mailstore.deliver(path, [head.encode(), body])
        users.append((mailbox.address, env.BENCH_PASSWORD))
    service = services.create_pop3_service(ip_address="127.0.0.1", port=env.free_port(), plaintext_requires_tls=False)
    supervision.reconcile_node(settings.NODE_NAME)
    service = Pop3Service.objects.get(pk=service.pk)
    if service.state != "running":
        raise RuntimeError(f"the POP3 worker did not start: {service.state} {service.last_error}")
    return Pop3Target("mailconsole", service.port, lambda: [service.pid]), users, server.home_path / "Mailbox"


def print_rows(rows: list[dict]) -> None:
    print(
        f"{'server':<12} {'load':<9} {'clients':>7} {'sessions':>8} {'msgs/s':>8} {'sess/s':>7} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'cpu ms/sess':>11} {'RSS MiB':>7} errors"
    )
    for r in rows:
        print(
            f"{r['server']:<12} {r['load']:<9} {r['clients']:>7} {r['sessions']:>8} {r['msgs_per_s']:>8.0f} "
            f"{r['sessions_per_s']:>7.1f} {r['session_p50_ms']:>7.1f} {r['session_p99_ms']:>7.1f} "
            f"{r['server_cpu_ms_per_session']:>11.2f} {r['peak_rss_mib']:>7.1f} {r['errors'] or ''}"
        )


async def run_all(args: argparse.Namespace, targets: list[Pop3Target], users: list[tuple[str, str]]) -> list[dict]:
    rows = []
    for target in targets:
        await measure(target, users[:2], retr_all=False, sessions_per_client=2)  # warm-up
    for _ in range(args.rounds):
        # Interleave the servers, so that background noise hits each of them alike.
        for target in targets:
            rows.append(await measure(target, users, retr_all=True, sessions_per_client=1))
            print_rows(rows[-1:])
            rows.append(await measure(target, users, retr_all=False, sessions_per_client=args.short_sessions))
            print_rows(rows[-1:])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--messages-per-mailbox", type=int, default=100)
    parser.add_argument("--message-kib", type=int, default=10)
    parser.add_argument("--short-sessions", type=int, default=5, help="short sessions per client")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compare-dovecot", action="store_true", help="also measure Dovecot (root, apt)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary var/ directory")
    args = parser.parse_args()
    ours, users, mailbox_root = set_up(args)
    targets = [ours]
    dovecot = None
    if args.compare_dovecot:
        from benchmarks.dovecot import Dovecot

        var_dir = Path(os.environ["MAILCONSOLE_VAR_DIR"])
        reachable = [var_dir, *[p for p in mailbox_root.parents if var_dir in p.parents]]
        dovecot = Dovecot(var_dir / "dovecot-bench", env.free_port(), mailbox_root, dict(users), reachable)
        dovecot.start()
        targets.append(Pop3Target("dovecot", dovecot.port, lambda: [dovecot.process.pid]))
    try:
        rows = asyncio.run(run_all(args, targets, users))
    finally:
        if dovecot is not None:
            dovecot.stop()
    print()
    print_rows(rows)
    ratios = []
    if dovecot is not None:
        for load, key in (("retr-all", "msgs_per_s"), ("short", "sessions_per_s")):
            ours_best = [r[key] for r in rows if r["server"] == "mailconsole" and r["load"] == load]
            theirs = [r[key] for r in rows if r["server"] == "dovecot" and r["load"] == load]
            if not ours_best or not theirs or not sum(theirs):
                continue
            ratio = (sum(ours_best) / len(ours_best)) / (sum(theirs) / len(theirs))
            ratios.append({"load": load, "metric": key, "ratio_to_dovecot": ratio})
            print(f"MailConsole / Dovecot, {load} ({key}, mean of {len(theirs)} rounds): {ratio:.2f}x")
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "settings": vars(args),
        "rows": rows,
        "ratios": ratios,
    }
    print(f"load average at the end: {os.getloadavg()}")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"pop3-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
