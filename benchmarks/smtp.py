"""SMTP throughput, accept latency, CPU and memory of MailConsole, against bare aiosmtpd (and Postfix).

    python -m benchmarks.smtp [--messages N] [--concurrency C] [--compare-postfix] [--profile] [--with-checks]

--with-checks adds a second MailConsole server with every inbound check of the Anti-spam tab on
(DNSBL, greylisting, SPF reject, DMARC honour, …), answered by a DNS server on loopback, and prints its
accepted rate as a ratio of the same server with the checks off, measured in the same run.

MailConsole's server is created with `services.create_virtual_server` and started by an in-process
`supervision.reconcile_node(NODE_NAME)` (the Celery task's body, without Celery), so the worker is
the real `manage.py run_smtpd` process. A message counts as delivered once its file is in a
recipient's Maildir `new/`; for MailConsole and the Maildir baseline that happens before the 250,
for Postfix after queueing. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks import env
from benchmarks.loadclient import (
    ProcessMeter,
    client_addresses,
    count_files,
    percentile,
    read_reply,
    run_load,
    wait_delivered,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DOMAIN = "bench.test"
MAILBOX_COUNT = 10
SIZES_KIB = (1, 10, 100)
IDLE_SESSIONS = 500


@dataclass
class Target:
    """A server under test: where it listens, where its mail lands, which processes are it."""

    name: str
    port: int
    maildirs: list[Path]
    pids: Callable[[], list[int]]


async def measure(
    target: Target,
    *,
    messages: int,
    size_kib: int,
    concurrency: int,
    per_connection: int,
    recipients: list[str],
    source_addresses: list[str],
) -> dict:
    new_dirs = [m / "new" for m in target.maildirs]
    before = count_files(new_dirs)
    meter = ProcessMeter(target.pids)
    meter.start()
    result = await run_load(
        "127.0.0.1",
        target.port,
        recipients,
        messages=messages,
        size_octets=size_kib * 1024,
        concurrency=concurrency,
        per_connection=per_connection,
        source_addresses=source_addresses,
    )
    # A sink delivers nothing: its figures are for accepting only.
    delivered_at = await wait_delivered(new_dirs, before + result.accepted, timeout_s=120) if new_dirs else None
    cpu_s = meter.stop()
    accept_elapsed = result.last_accept_at - result.started_at
    row = {
        "server": target.name,
        "size_kib": size_kib,
        "concurrency": concurrency,
        "per_connection": per_connection,
        "messages": messages,
        "accepted": result.accepted,
        "failed": result.failed,
        "errors": result.errors,
        "accepted_per_s": result.accepted / accept_elapsed if accept_elapsed > 0 else 0.0,
        "delivered_per_s": (result.accepted / (delivered_at - result.started_at)) if delivered_at else 0.0,
        "delivered": count_files(new_dirs) - before,
        "p50_ms": percentile(result.latencies_s, 0.50) * 1000,
        "p95_ms": percentile(result.latencies_s, 0.95) * 1000,
        "p99_ms": percentile(result.latencies_s, 0.99) * 1000,
        "server_cpu_ms_per_msg": cpu_s * 1000 / max(result.accepted, 1),
        "client_cpu_ms_per_msg": result.client_cpu_s * 1000 / max(result.accepted, 1),
        "peak_rss_mib": meter.peak_rss_bytes / 2**20,
    }
    return row


def rss_by_process(pid: int) -> dict[int, float]:
    """RSS in MiB of the worker and each of its session processes."""
    worker = psutil.Process(pid)
    return {p.pid: p.memory_info().rss / 2**20 for p in [worker, *worker.children()]}


async def idle_sessions_rss(port: int, pid: int, count: int) -> dict:
    """Open `count` sessions that said EHLO and then wait, all from one client address (so with
    several session processes they all land in one); return each process's RSS before and with them."""
    before = rss_by_process(pid)
    writers = []
    try:
        for _ in range(count):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await read_reply(reader)
            writer.write(b"EHLO idle.test\r\n")
            await read_reply(reader)
            writers.append(writer)
        await asyncio.sleep(1)
        with_sessions = rss_by_process(pid)
    finally:
        for writer in writers:
            writer.close()
    # The process whose memory grew most is the one holding the sessions.
    holder = max(with_sessions, key=lambda p: with_sessions[p] - before.get(p, 0.0))
    return {
        "sessions": len(writers),
        "rss_before_mib": before.get(holder, 0.0),
        "rss_with_mib": with_sessions[holder],
        "holder_is_worker": holder == pid,
        "all_processes_before_mib": sum(before.values()),
        "all_processes_with_mib": sum(with_sessions.values()),
    }


# The sender the load client uses (bench@client.test, From: the same) and its published records.
SENDER_DOMAIN = "client.test"
DNSBL_ZONE = "bl.bench.test"


def every_check() -> dict[str, object]:
    """The Anti-spam tab with every inbound check on, in its strictest mode, against the loopback DNS."""
    return {
        "dnsbl_zones": DNSBL_ZONE,
        "dnsbl_action": "reject",
        "greylisting": True,
        "greylisting_delay_s": 1,
        "spf_action": "reject",
        "dmarc_action": "honour",
    }


def start_bench_dns():
    """A DNS server on loopback publishing what a well-configured sender has: SPF, DMARC, MX and A.
    DNSBL lookups for the client addresses get NXDOMAIN (not listed)."""
    from tests.delivery_helpers import TestDNS

    dns = TestDNS()
    dns.add_txt(SENDER_DOMAIN, "v=spf1 ip4:127.0.0.0/8 -all")
    dns.add_txt(f"_dmarc.{SENDER_DOMAIN}", "v=DMARC1; p=reject")
    dns.add_mx(SENDER_DOMAIN, (10, f"mx.{SENDER_DOMAIN}"))
    dns.add_a(f"mx.{SENDER_DOMAIN}", "127.0.0.1")
    dns.add_a(SENDER_DOMAIN, "127.0.0.1")
    return dns.start()


def start_mailconsole(
    var_dir: Path, worker_processes: int, *, name: str = "bench", checks: dict[str, object] | None = None
) -> tuple[Target, list[str]]:
    from django.conf import settings

    from servers import services, supervision
    from servers.delivery.services import update_delivery_settings
    from servers.models import VirtualServer

    server = services.create_virtual_server(
        name=name,
        default_domain=DOMAIN if checks is None else f"checks.{DOMAIN}",
        ip_address="127.0.0.1",
        port=env.free_port(),
        home_dir=var_dir / "homes" / name,
        start=False,
    )
    mailboxes = [
        services.add_mailbox(server.default_domain, f"user{n}", env.BENCH_PASSWORD) for n in range(MAILBOX_COUNT)
    ]
    if worker_processes > 1:
        services.update_virtual_server(server, worker_processes=worker_processes)
    if checks is not None:
        dns_address = str(checks.pop("dns_server"))
        update_delivery_settings(server, dns_server=dns_address)
        services.update_virtual_server(server, **checks)
    services.start_server(server)
    supervision.reconcile_node(settings.NODE_NAME)
    server = VirtualServer.objects.get(pk=server.pk)
    if server.state != "running":
        raise RuntimeError(f"the MailConsole worker did not start: {server.state} {server.last_error}")
    maildirs = [Path(m.maildir) for m in mailboxes]
    target = Target(
        "mailconsole" if checks is None else "mailconsole-checks", server.port, maildirs, lambda: [server.pid]
    )
    if worker_processes > 1:
        wait_for_session_processes(server.pid, worker_processes)
    return target, [m.address for m in mailboxes]


def wait_for_session_processes(pid: int, count: int, timeout_s: float = 30) -> None:
    """The session processes report ready within a second or so of the worker's start."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(psutil.Process(pid).children()) >= count:
            time.sleep(1.5)  # their imports and first report
            return
        time.sleep(0.1)
    raise RuntimeError(f"the worker did not start {count} session processes")


def start_baseline(mode: str, root: Path) -> tuple[Target, subprocess.Popen]:
    port = env.free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.baseline_server", "--mode", mode, "--port", str(port), "--root", str(root)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert process.stdout is not None
    process.stdout.readline()  # "listening"
    maildirs = [root / f"user{n}" for n in range(MAILBOX_COUNT)] if mode == "maildir" else []
    return Target(f"aiosmtpd-{mode}", port, maildirs, lambda: [process.pid]), process


def profile_worker(pid: int, seconds: int, out: Path) -> subprocess.Popen:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
            "--subprocesses",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarize_profile(raw: Path, top: int = 20) -> dict[str, list[tuple[str, float]]]:
    """From py-spy's collapsed stacks: the busiest leaf frames, and time under our and aiosmtpd's functions."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    total = max(total, 1)
    # The worker's entry frames hold every sample; they say nothing.
    entry_frames = ("run_worker (", "run (servers/workers/", "Command.handle (")
    ours = [
        f
        for f in inclusive
        if ("servers/" in f or "aiosmtpd/" in f) and not f.startswith(entry_frames) and inclusive[f] * 100 >= total
    ]
    return {
        "samples": [("total", float(total))],
        "own": [(f, 100 * c / total) for f, c in sorted(own.items(), key=lambda item: -item[1])[:top]],
        "inclusive": [(f, 100 * inclusive[f] / total) for f in sorted(ours, key=lambda f: -inclusive[f])[:top]],
    }


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'server':<18} {'KiB':>4} {'c':>3} {'m/conn':>6} {'acc/s':>8} {'dlv/s':>8} {'p50ms':>7} "
        f"{'p95ms':>7} {'p99ms':>7} {'cpu ms/m':>8} {'cli ms/m':>8} {'RSS MiB':>7} {'fail':>4}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['server']:<18} {r['size_kib']:>4} {r['concurrency']:>3} {r['per_connection']:>6} "
            f"{r['accepted_per_s']:>8.0f} {r['delivered_per_s']:>8.0f} {r['p50_ms']:>7.1f} {r['p95_ms']:>7.1f} "
            f"{r['p99_ms']:>7.1f} {r['server_cpu_ms_per_msg']:>8.2f} {r['client_cpu_ms_per_msg']:>8.2f} "
            f"{r['peak_rss_mib']:>7.1f} {r['failed']:>4}"
        )


def domain_of(target: Target) -> str:
    return f"checks.{DOMAIN}" if target.name == "mailconsole-checks" else DOMAIN


def ratios(rows: list[dict], against: str, ours: str = "mailconsole") -> list[dict]:
    by_key = {(r["server"], r["size_kib"], r["concurrency"], r["per_connection"]): r for r in rows}
    out = []
    for r in rows:
        if r["server"] != ours:
            continue
        other = by_key.get((against, r["size_kib"], r["concurrency"], r["per_connection"]))
        if not other or not other["accepted_per_s"]:
            continue
        out.append(
            {
                "against": against,
                "size_kib": r["size_kib"],
                "per_connection": r["per_connection"],
                "accepted_ratio": r["accepted_per_s"] / other["accepted_per_s"],
                "delivered_ratio": (
                    r["delivered_per_s"] / other["delivered_per_s"] if other["delivered_per_s"] else None
                ),
                "p99_ratio": r["p99_ms"] / max(other["p99_ms"], 1e-9),
                "cpu_ratio": r["server_cpu_ms_per_msg"] / max(other["server_cpu_ms_per_msg"], 1e-9),
            }
        )
    return out


def start_targets(args: argparse.Namespace) -> tuple[list[Target], list[str], list[Callable[[], None]]]:
    """Set up every server (blocking: the ORM and reconcile run outside the event loop)."""
    var_dir = env.prepare(keep=args.keep)
    ours, addresses = start_mailconsole(var_dir, args.worker_processes)
    local_parts = [a.partition("@")[0] for a in addresses]
    targets = [ours]
    cleanups: list[Callable[[], None]] = []
    if args.with_checks:
        dns = start_bench_dns()
        cleanups.append(dns.stop)
        checked, _ = start_mailconsole(
            var_dir,
            args.worker_processes,
            name="bench-checks",
            checks={**every_check(), "dns_server": dns.address},
        )
        targets.append(checked)
    try:
        for mode in ("sink", "maildir"):
            target, process = start_baseline(mode, var_dir / f"baseline-{mode}")
            targets.append(target)
            cleanups.append(lambda p=process: (p.send_signal(signal.SIGTERM), p.wait(5)))
        if args.compare_postfix:
            from benchmarks.postfix import Postfix

            postfix = Postfix(Path(tempfile.mkdtemp(prefix="postfix-bench-")), env.free_port(), DOMAIN, local_parts)
            cleanups.append(postfix.stop)
            postfix.start()
            targets.append(
                Target(
                    "postfix", postfix.port, postfix.maildirs, lambda: [pid for pid in [postfix.master_pid()] if pid]
                )
            )
    except BaseException:
        for cleanup in cleanups:
            cleanup()
        raise
    return targets, local_parts, cleanups


async def main_async(
    args: argparse.Namespace, targets: list[Target], local_parts: list[str], cleanups: list[Callable[[], None]]
) -> dict:
    ours = targets[0]
    sources = client_addresses(args.client_addresses)
    rows = []
    profile = None
    try:
        # On the fresh worker, before any load has grown its heap.
        idle = await idle_sessions_rss(ours.port, ours.pids()[0], args.idle_sessions)
        # Warm up every server (first connections, thread pools, Postfix's process pool). With the
        # checks on, the first round also meets greylisting (every triplet deferred once); the second,
        # after the delay, passes and records the triplets as known, as a day of real traffic would.
        for warm_up in range(2 if any(t.name == "mailconsole-checks" for t in targets) else 1):
            if warm_up:
                await asyncio.sleep(1.5)
            for target in targets:
                await run_load(
                    "127.0.0.1",
                    target.port,
                    [f"{u}@{domain_of(target)}" for u in local_parts],
                    messages=100,
                    size_octets=1024,
                    concurrency=10,
                    per_connection=5,
                    source_addresses=sources,
                )
        for size_kib in args.sizes:
            messages = args.messages if size_kib < 100 else max(args.messages // 2, 1)
            for per_connection in args.per_connection:
                # Interleave the servers, so that background noise hits each of them alike.
                for target in targets:
                    rcpts = [f"{u}@{domain_of(target)}" for u in local_parts]
                    spy = None
                    if (
                        args.profile
                        and target.name == args.profile_server
                        and size_kib == args.profile_size
                        and per_connection == args.profile_per_connection
                    ):
                        profile = RESULTS_DIR / f"profile-smtp-{int(time.time())}.txt"
                        spy = profile_worker(target.pids()[0], 600, profile)
                        await asyncio.sleep(1)
                    row = await measure(
                        target,
                        messages=messages,
                        size_kib=size_kib,
                        concurrency=args.concurrency,
                        per_connection=per_connection,
                        recipients=rcpts,
                        source_addresses=sources,
                    )
                    if spy is not None:
                        spy.send_signal(signal.SIGINT)
                        spy.wait(30)
                    rows.append(row)
                    print_table([row])
    finally:
        for cleanup in cleanups:
            cleanup()
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "python": platform.python_version(),
            "host": socket.gethostname(),
        },
        "rows": rows,
        "ratios": ratios(rows, "aiosmtpd-sink") + ratios(rows, "aiosmtpd-maildir") + ratios(rows, "postfix"),
        "checks_ratios": ratios(rows, "mailconsole", ours="mailconsole-checks"),
        "idle_sessions": idle,
    }
    if profile is not None and profile.exists():
        report["profile"] = {"file": str(profile), "top": summarize_profile(profile)}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000, help="per scenario (halved for 100 KiB)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES_KIB), help="message sizes in KiB")
    parser.add_argument("--per-connection", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--idle-sessions", type=int, default=IDLE_SESSIONS)
    parser.add_argument("--compare-postfix", action="store_true", help="also measure Postfix (root, apt)")
    parser.add_argument("--profile", action="store_true", help="py-spy the worker during one scenario")
    parser.add_argument(
        "--with-checks", action="store_true", help="also a server with every Anti-spam check on (loopback DNS)"
    )
    parser.add_argument("--profile-size", type=int, default=10, help="KiB of the profiled scenario")
    parser.add_argument(
        "--profile-server", default="mailconsole", help="which server to profile (mailconsole-checks: the checks on)"
    )
    parser.add_argument("--profile-per-connection", type=int, default=1, help="of the profiled scenario")
    parser.add_argument("--keep", action="store_true", help="keep the temporary var/ directory")
    parser.add_argument(
        "--worker-processes",
        type=int,
        default=2,
        help="MailConsole's session processes for the server (its worker_processes setting)",
    )
    parser.add_argument(
        "--client-addresses",
        type=int,
        default=16,
        help="loopback source addresses the load client spreads its connections over",
    )
    args = parser.parse_args()
    report = asyncio.run(main_async(args, *start_targets(args)))

    print()
    print_table(report["rows"])
    print("\nMailConsole as a ratio of each other server (>1 is better for msgs/s; <1 is better for CPU):")
    for r in report["ratios"]:
        print(
            f"  vs {r['against']:<17} {r['size_kib']:>4} KiB, {r['per_connection']:>2}/conn: "
            f"accepted {r['accepted_ratio']:.2f}x  delivered "
            f"{'-' if r['delivered_ratio'] is None else format(r['delivered_ratio'], '.2f') + 'x'}  "
            f"p99 {r['p99_ratio']:.2f}x  CPU/msg {r['cpu_ratio']:.2f}x"
        )
    if report["checks_ratios"]:
        print("\nEvery inbound check on, as a ratio of the same server with the checks off (target >= 0.8x):")
        for r in report["checks_ratios"]:
            print(
                f"  {r['size_kib']:>4} KiB, {r['per_connection']:>2}/conn: accepted {r['accepted_ratio']:.2f}x  "
                f"p99 {r['p99_ratio']:.2f}x  CPU/msg {r['cpu_ratio']:.2f}x"
            )
    idle = report["idle_sessions"]
    holder = "worker" if idle["holder_is_worker"] else "session process holding them"
    print(
        f"\n{idle['sessions']} idle sessions: {holder} RSS {idle['rss_before_mib']:.1f} MiB -> "
        f"{idle['rss_with_mib']:.1f} MiB (all processes {idle['all_processes_before_mib']:.1f} -> "
        f"{idle['all_processes_with_mib']:.1f} MiB)"
    )
    if "profile" in report:
        summary = report["profile"]["top"]
        print(f"\nprofile ({report['profile']['file']}, {summary['samples'][0][1]:.0f} samples)")
        print("busiest frames (% of samples spent in the frame itself):")
        for function, share in summary["own"]:
            print(f"  {share:5.1f}  {function}")
        print("time under MailConsole's and aiosmtpd's functions (% of samples, inclusive):")
        for function, share in summary["inclusive"]:
            print(f"  {share:5.1f}  {function}")
    print(f"load average at the end: {os.getloadavg()}")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"smtp-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
