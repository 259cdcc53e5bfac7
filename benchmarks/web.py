"""Response times of the console, the REST API and webmail with 10,000 mailboxes and a 50,000-message mailbox.

    python -m benchmarks.web [--mailboxes 10000] [--domains 50] [--messages 50000] [--requests 50]

Builds a private installation (benchmarks/env.py), fills it through the services where that is
practical, runs the real web server (gunicorn, as `manage.py runstack` does) on a free loopback
port, signs in as the console administrator, with an API token and as a mailbox in webmail, and
requests each page N times in a row over HTTP. Webmail's first look at the big mailbox (the index
building itself, as in production) is timed apart from the warm figures. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from benchmarks import env
from benchmarks.loadclient import percentile

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_DIR = Path(__file__).resolve().parent.parent
ADMIN = "admin"
ADMIN_PASSWORD = "Adminpass123"
SERVER_COUNT = 5
BIG_LOCAL_PART = "archive"
# Webmail's index waits this long after the last change of new/ or cur/ before trusting their times.
INDEX_SETTLE_S = 2.1

TARGET_PANEL_MS = 150.0
TARGET_API_MS = 100.0
TARGET_WEBMAIL_MS = 300.0

FIRST_NAMES = [
    "anna",
    "ben",
    "carla",
    "dmitri",
    "eva",
    "farid",
    "greta",
    "hugo",
    "ines",
    "jonas",
    "kemal",
    "lena",
    "marco",
    "nora",
    "olaf",
    "petra",
    "quentin",
    "rosa",
    "sven",
    "tara",
    "umar",
    "vera",
    "wim",
    "yara",
]
LAST_NAMES = [
    "meyer",
    "novak",
    "rossi",
    "garcia",
    "kowalski",
    "jensen",
    "dubois",
    "smith",
    "horvat",
    "silva",
    "larsen",
    "costa",
    "fischer",
    "moreau",
    "bauer",
    "nagy",
    "popescu",
    "keller",
    "ward",
    "lindqvist",
]
SUBJECT_WORDS = [
    "invoice",
    "meeting",
    "report",
    "timetable",
    "exam",
    "holiday",
    "budget",
    "minutes",
    "project",
    "reminder",
    "newsletter",
    "update",
    "schedule",
    "results",
    "homework",
    "agenda",
    "contract",
]


@dataclass
class Installation:
    """What the benchmark built: who signs in where, and which pages to ask for."""

    domain_ids: list[int]
    big_address: str
    big_maildir: Path
    api_key: str
    setup_s: dict[str, float] = field(default_factory=dict)


# -- building the data ----------------------------------------------------------------------------


def display_name(n: int) -> str:
    first, last = FIRST_NAMES[n % len(FIRST_NAMES)], LAST_NAMES[(n // len(FIRST_NAMES)) % len(LAST_NAMES)]
    return f"{first.title()} {last.title()}"


def build(var_dir: Path, *, mailbox_count: int, domain_count: int) -> Installation:
    """Servers and domains through the services; mailboxes in bulk with one precomputed hash."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.db import transaction
    from django.utils import timezone

    from api.models import ApiToken
    from servers import maildir, services
    from servers.models import AuditEntry, Domain, Logon, Mailbox

    timings: dict[str, float] = {}
    started = time.perf_counter()
    get_user_model().objects.create_superuser(ADMIN, password=ADMIN_PASSWORD)
    _, api_key = ApiToken.issue(get_user_model().objects.get(username=ADMIN), name="benchmark")
    servers = [
        services.create_virtual_server(
            name=f"bench{s}",
            default_domain=f"school{s:02d}.bench.test",
            ip_address="127.0.0.1",
            port=env.free_port(),
            home_dir=var_dir / "homes" / f"bench{s}",
            start=False,
        )
        for s in range(SERVER_COUNT)
    ]
    for d in range(SERVER_COUNT, domain_count):
        services.add_domain(servers[d % SERVER_COUNT], f"school{d:02d}.bench.test")
    domains = list(Domain.objects.filter(type="local").select_related("server").order_by("name"))
    timings["servers_and_domains"] = time.perf_counter() - started

    # services.add_mailbox hashes each password with Argon2 (about 180 ms each here: half an hour for
    # 10,000), so the rows are made here in bulk, every one with the same precomputed hash, and with
    # the audit entries add_mailbox would have written. The big mailbox comes first in both lists
    # (first domain, and "archive" sorts before "userNNNNN").
    started = time.perf_counter()
    password_hash = make_password(env.BENCH_PASSWORD)
    now = timezone.now()
    rows = [Mailbox(domain=domains[0], local_part=BIG_LOCAL_PART, display_name="Archive", password=password_hash)]
    for n in range(mailbox_count - 1):
        rows.append(
            Mailbox(
                domain=domains[n % len(domains)],
                local_part=f"user{n:05d}",
                display_name=display_name(n),
                password=password_hash,
                quota_bytes=(50 * 2**20 if n % 4 == 0 else None),
                last_logon_at=now - dt.timedelta(minutes=n),
                last_logon_from="192.0.2.10",
            )
        )
    with transaction.atomic():
        Mailbox.objects.bulk_create(rows, batch_size=1000)
        mailboxes = list(Mailbox.objects.select_related("domain__server").order_by("pk"))
        AuditEntry.objects.bulk_create(
            [
                AuditEntry(
                    actor="system",
                    action="add_mailbox",
                    object_type="mailbox",
                    object_id=str(m.pk),
                    object_repr=m.address,
                    after={"local_part": m.local_part, "display_name": m.display_name},
                )
                for m in mailboxes
            ],
            batch_size=1000,
        )
        # Two POP3 sign-ins per mailbox over the last two weeks: the Logons list and its API.
        Logon.objects.bulk_create(
            [
                Logon(
                    mailbox=m,
                    protocol="POP3",
                    client_address="192.0.2.10",
                    logon_at=now - dt.timedelta(minutes=(m.pk * 7 + k * 3001) % 20000),
                    last_access_at=now - dt.timedelta(minutes=(m.pk * 7 + k * 3001) % 20000),
                )
                for m in mailboxes
                for k in range(2)
            ],
            batch_size=1000,
        )
    timings["mailboxes_db"] = time.perf_counter() - started

    started = time.perf_counter()
    for mailbox in mailboxes:
        maildir.ensure_maildir(mailbox.maildir)  # what add_mailbox does, fsyncs included
    timings["maildirs"] = time.perf_counter() - started
    big = mailboxes[0]
    return Installation(
        domain_ids=[d.pk for d in domains],
        big_address=big.address,
        big_maildir=Path(big.maildir),
        api_key=api_key,
        setup_s=timings,
    )


def message_bytes(n: int, to: str, rng: random.Random) -> bytes:
    sender = f"{FIRST_NAMES[n % len(FIRST_NAMES)]}.{LAST_NAMES[(n // 7) % len(LAST_NAMES)]}@partner{n % 40}.example"
    subject = " ".join(rng.sample(SUBJECT_WORDS, 3)).capitalize() + f" #{n}"
    date = dt.datetime(2025, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=10 * n)
    head = (
        f"From: {sender.split('@')[0].replace('.', ' ').title()} <{sender}>\r\n"
        f"To: {to}\r\nSubject: {subject}\r\nDate: {date:%a, %d %b %Y %H:%M:%S +0000}\r\n"
        f"Message-ID: <{n}.bench@partner.example>\r\nMIME-Version: 1.0\r\n"
    )
    if n % 20 == 0:
        boundary = f"b{n}"
        return (
            head + f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee the attachment.\r\n"
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
            f'Content-Disposition: attachment; filename="notes-{n}.bin"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\n{'QUJD' * 200}\r\n--{boundary}--\r\n"
        ).encode()
    body = "\r\n".join(" ".join(rng.choices(SUBJECT_WORDS, k=12)) for _ in range(12))
    return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n").encode()


def fill_big_mailbox(path: Path, count: int, to: str) -> float:
    """Write `count` messages into the Maildir, 90% read (cur/, flag S), delivery times over the past year.

    Like servers.mailstore.deliver (a unique name, tmp/ then rename) but without the fsyncs, which
    would make the setup minutes long and mean nothing here.
    """
    from servers import maildir

    started = time.perf_counter()
    rng = random.Random(50_000)
    first_ns = time.time_ns() - 365 * 86400 * 10**9
    step_ns = 365 * 86400 * 10**9 // max(count, 1)
    for n in range(count):
        name = maildir.new_unique_name()
        tmp = path / "tmp" / name
        tmp.write_bytes(message_bytes(n, to, rng))
        delivered_ns = first_ns + n * step_ns
        os.utime(tmp, ns=(delivered_ns, delivered_ns))
        target = path / "new" / name if n % 10 == 0 else path / "cur" / f"{name}{maildir.INFO_SEPARATOR}2,S"
        os.rename(tmp, target)
    return time.perf_counter() - started


# -- the web server -------------------------------------------------------------------------------


def start_gunicorn(port: int, workers: int, log_path: Path) -> subprocess.Popen:
    """The web process as runstack starts it (its access log into a file instead of the terminal)."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "mailconsole.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--access-logfile",
            str(log_path),
            "--graceful-timeout",
            "5",
        ],
        cwd=REPO_DIR,
        stdout=subprocess.DEVNULL,
        stderr=open(log_path.with_suffix(".err"), "wb"),  # noqa: SIM115 - lives as long as the process
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}; see {log_path.with_suffix('.err')}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/console/login/", timeout=2).status_code == 200:
                return process
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError("gunicorn did not answer within 30 s")


def stop_gunicorn(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def console_session(base: str) -> requests.Session:
    session = requests.Session()
    session.get(f"{base}/console/login/").raise_for_status()
    reply = session.post(
        f"{base}/console/login/",
        allow_redirects=False,
        data={"username": ADMIN, "password": ADMIN_PASSWORD, "csrfmiddlewaretoken": session.cookies["csrftoken"]},
    )
    if reply.status_code != 302:
        raise RuntimeError(f"console sign-in failed: {reply.status_code}")
    return session


def api_session(key: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Token {key}"
    return session


def webmail_session(base: str, address: str) -> requests.Session:
    session = requests.Session()
    session.get(f"{base}/mail/").raise_for_status()
    reply = session.post(
        f"{base}/mail/",
        allow_redirects=False,
        data={"address": address, "password": env.BENCH_PASSWORD, "csrfmiddlewaretoken": session.cookies["csrftoken"]},
    )
    if reply.status_code != 302:
        raise RuntimeError(f"webmail sign-in failed: {reply.status_code}")
    return session


# -- measuring ------------------------------------------------------------------------------------


@dataclass
class Endpoint:
    group: str  # panel, api, webmail
    name: str
    path: str
    target_ms: float | None
    marker: str = ""  # text the answer must contain, so that a sign-in page or an error is not timed
    requests: int | None = None  # fewer than --requests for a page that takes seconds


def timed_get(session: requests.Session, url: str) -> tuple[float, requests.Response]:
    started = time.perf_counter()
    reply = session.get(url, allow_redirects=False)
    _ = reply.content
    return (time.perf_counter() - started) * 1000, reply


def check(endpoint: Endpoint, reply: requests.Response) -> None:
    if reply.status_code != 200 or (endpoint.marker and endpoint.marker not in reply.text):
        raise RuntimeError(
            f"{endpoint.name} ({endpoint.path}): HTTP {reply.status_code}, "
            f"marker {endpoint.marker!r} {'found' if endpoint.marker in reply.text else 'missing'}"
        )


def summarize(endpoint: Endpoint, times_ms: list[float], octets: int, **extra) -> dict:
    p95 = percentile(times_ms, 0.95)
    return {
        "group": endpoint.group,
        "name": endpoint.name,
        "path": endpoint.path,
        "requests": len(times_ms),
        "p50_ms": percentile(times_ms, 0.50),
        "p95_ms": p95,
        "max_ms": max(times_ms),
        "mean_ms": sum(times_ms) / len(times_ms),
        "octets": octets,
        "target_ms": endpoint.target_ms,
        "met": None if endpoint.target_ms is None else p95 <= endpoint.target_ms,
        **extra,
    }


def measure(session: requests.Session, base: str, endpoint: Endpoint, requests_n: int, warmup: int = 2) -> dict:
    for _ in range(warmup):  # each gunicorn worker's first request for a page loads templates and code
        check(endpoint, timed_get(session, base + endpoint.path)[1])
    times = []
    octets = 0
    for _ in range(endpoint.requests or requests_n):
        elapsed, reply = timed_get(session, base + endpoint.path)
        check(endpoint, reply)
        times.append(elapsed)
        octets = len(reply.content)
    return summarize(endpoint, times, octets)


PENDING_RE = re.compile(r'data-testid="indexing">Still indexing ([0-9]+)')


def webmail_first_look(session: requests.Session, base: str) -> dict:
    """The inbox right after the first sign-in, then again until the index holds every message."""
    passes = []
    while True:
        elapsed, reply = timed_get(session, f"{base}/mail/folder/inbox/")
        if reply.status_code != 200 or 'data-testid="message-list"' not in reply.text:
            raise RuntimeError(f"webmail inbox: HTTP {reply.status_code}")
        found = PENDING_RE.search(reply.text)
        pending = int(found.group(1)) if found else 0
        passes.append({"ms": elapsed, "pending_after": pending, "octets": len(reply.content)})
        print(f"  webmail inbox, indexing pass {len(passes)}: {elapsed:8.0f} ms, {pending} messages still to index")
        if not pending:
            return {
                "cold_first_page_ms": passes[0]["ms"],
                "passes": passes,
                "passes_total_s": sum(p["ms"] for p in passes) / 1000,
            }
        if len(passes) > 100:
            raise RuntimeError("the webmail index does not finish")


def after_new_mail(session: requests.Session, base: str, maildir_path: Path, to: str, count: int) -> dict:
    """The inbox page right after a delivery: the index rescans the folder and parses the new message."""
    from servers import mailstore

    endpoint = Endpoint(
        "webmail", "inbox after a new delivery", "/mail/folder/inbox/", TARGET_WEBMAIL_MS, 'data-testid="message-list"'
    )
    rng = random.Random(7)
    times = []
    octets = 0
    for n in range(count):
        mailstore.deliver(maildir_path, [message_bytes(1_000_000 + n, to, rng)])
        elapsed, reply = timed_get(session, base + endpoint.path)
        check(endpoint, reply)
        times.append(elapsed)
        octets = len(reply.content)
    return summarize(endpoint, times, octets)


UNREAD_LINK_RE = re.compile(r'data-read="0">.*?href="(/mail/m/[0-9]+/)"', re.DOTALL)


def after_reading(session: requests.Session, base: str, count: int) -> dict:
    """The inbox page right after opening an unread message, which moves its file from new/ to cur/."""
    endpoint = Endpoint(
        "webmail",
        "inbox after reading a message",
        "/mail/folder/inbox/",
        TARGET_WEBMAIL_MS,
        'data-testid="message-list"',
    )
    _, reply = timed_get(session, base + endpoint.path)
    times = []
    for _ in range(count):
        found = UNREAD_LINK_RE.search(reply.text)
        if found is None:
            raise RuntimeError("no unread message on the inbox's first page")
        opened = session.get(base + found.group(1))
        if opened.status_code != 200:
            raise RuntimeError(f"reading {found.group(1)}: HTTP {opened.status_code}")
        elapsed, reply = timed_get(session, base + endpoint.path)
        check(endpoint, reply)
        times.append(elapsed)
    return summarize(endpoint, times, len(reply.content))


def query_counts(endpoints: list[Endpoint], installation: Installation) -> dict[str, int]:
    """SQL queries per page, from one in-process request each (Django's test client, the same database)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    console = Client(HTTP_HOST="127.0.0.1")
    console.post("/console/login/", {"username": ADMIN, "password": ADMIN_PASSWORD})
    api = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Token {installation.api_key}")
    webmail = Client(HTTP_HOST="127.0.0.1")
    webmail.post("/mail/", {"address": installation.big_address, "password": env.BENCH_PASSWORD})
    clients = {"panel": console, "api": api, "webmail": webmail}
    counts = {}
    for endpoint in endpoints:
        with CaptureQueriesContext(connection) as captured:
            reply = clients[endpoint.group].get(endpoint.path)
        counts[endpoint.path] = len(captured) if reply.status_code == 200 else -reply.status_code
    return counts


# -- the report -----------------------------------------------------------------------------------


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'group':<8} {'page':<38} {'n':>3} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'queries':>7} "
        f"{'KiB':>6} {'target':>9}  met"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        target = f"p95≤{r['target_ms']:.0f}" if r["target_ms"] is not None else "-"
        met = {True: "yes", False: "NO", None: ""}[r["met"]]
        queries = r.get("queries")
        print(
            f"{r['group']:<8} {r['name'][:38]:<38} {r['requests']:>3} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} "
            f"{r['max_ms']:>8.1f} {'' if queries is None else queries:>7} {r['octets'] / 1024:>6.1f} "
            f"{target:>9}  {met}"
        )


def endpoints_for(installation: Installation, mailbox_count: int, message_count: int) -> list[Endpoint]:
    first_domain, other_domain = installation.domain_ids[0], installation.domain_ids[len(installation.domain_ids) // 2]
    # Half-way through the lists (50 rows a page in both): OFFSET costs grow with the page number.
    api_page = max(mailbox_count // 50 // 2, 1)
    later_page = max(message_count // 50 // 2, 1)
    mailbox_table = 'data-testid="mailboxes"'
    inbox_table = 'data-testid="message-list"'
    return [
        Endpoint(
            "panel",
            "domain mailboxes (with the big one)",
            f"/console/domains/{first_domain}/",
            TARGET_PANEL_MS,
            mailbox_table,
        ),
        Endpoint(
            "panel",
            "domain mailboxes, page 3",
            f"/console/domains/{other_domain}/?page=3",
            TARGET_PANEL_MS,
            mailbox_table,
        ),
        Endpoint(
            "panel",
            "domain mailboxes, search",
            f"/console/domains/{other_domain}/?q=user001",
            TARGET_PANEL_MS,
            mailbox_table,
        ),
        Endpoint("panel", "POP3 domains (mailbox counts)", "/console/pop3/", TARGET_PANEL_MS, "bench.test"),
        Endpoint("panel", "dashboard", "/console/", None, "</html>"),
        Endpoint("api", "mailboxes", "/api/v1/mailboxes/", TARGET_API_MS, '"count":'),
        Endpoint(
            "api", f"mailboxes, page {api_page}", f"/api/v1/mailboxes/?page={api_page}", TARGET_API_MS, '"count":'
        ),
        Endpoint("api", "mailboxes, search", "/api/v1/mailboxes/?search=user0012", TARGET_API_MS, '"count":'),
        Endpoint(
            "api", "mailboxes of one domain", f"/api/v1/mailboxes/?domain={other_domain}", TARGET_API_MS, '"count":'
        ),
        Endpoint("api", "domains", "/api/v1/domains/", TARGET_API_MS, '"count":'),
        Endpoint("api", "servers", "/api/v1/servers/", TARGET_API_MS, '"count":'),
        Endpoint("api", "queue", "/api/v1/queue/", TARGET_API_MS, '"count":'),
        Endpoint("api", "audit", "/api/v1/audit/", TARGET_API_MS, '"count":'),
        Endpoint("api", "logons", "/api/v1/logons/", TARGET_API_MS, '"count":'),
        Endpoint("api", "stats (not a list)", "/api/v1/stats/", None, '"mailboxes":', requests=5),
        Endpoint("webmail", "inbox, first page (warm)", "/mail/folder/inbox/", TARGET_WEBMAIL_MS, inbox_table),
        Endpoint(
            "webmail",
            f"inbox, page {later_page}",
            f"/mail/folder/inbox/?page={later_page}",
            TARGET_WEBMAIL_MS,
            inbox_table,
        ),
        Endpoint("webmail", "inbox, search (sender)", "/mail/folder/inbox/?q=greta", TARGET_WEBMAIL_MS, inbox_table),
        Endpoint(
            "webmail", "inbox, search (subject, rare)", "/mail/folder/inbox/?q=%2349999", TARGET_WEBMAIL_MS, inbox_table
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mailboxes", type=int, default=10_000)
    parser.add_argument("--domains", type=int, default=50)
    parser.add_argument("--messages", type=int, default=50_000, help="in the big mailbox")
    parser.add_argument("--requests", type=int, default=50, help="timed requests per page")
    parser.add_argument(
        "--new-mail",
        type=int,
        default=10,
        help="deliveries, each followed by an inbox page; as many messages read, likewise",
    )
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers (runstack's default)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary var/ directory")
    args = parser.parse_args()
    if args.domains < SERVER_COUNT:
        parser.error(f"--domains must be at least {SERVER_COUNT} (one per server)")

    run_started = time.perf_counter()
    var_dir = env.prepare(keep=args.keep)
    print(f"building {args.mailboxes} mailboxes in {args.domains} domains and {args.messages} messages in {var_dir}")
    installation = build(var_dir, mailbox_count=args.mailboxes, domain_count=args.domains)
    installation.setup_s["big_mailbox_files"] = fill_big_mailbox(
        installation.big_maildir, args.messages, installation.big_address
    )
    print("  " + ", ".join(f"{k} {v:.1f} s" for k, v in installation.setup_s.items()))

    (var_dir / "static").mkdir(exist_ok=True)  # STATIC_ROOT: whitenoise warns on every start without it
    port = env.free_port()
    base = f"http://127.0.0.1:{port}"
    web = start_gunicorn(port, args.web_workers, var_dir / "web-access.log")
    rows: list[dict] = []
    try:
        endpoints = endpoints_for(installation, args.mailboxes, args.messages)
        webmail = webmail_session(base, installation.big_address)
        first_look = webmail_first_look(webmail, base)
        time.sleep(INDEX_SETTLE_S)  # the index trusts directory times once they are this old
        sessions = {"panel": console_session(base), "api": api_session(installation.api_key), "webmail": webmail}
        for endpoint in endpoints:
            rows.append(measure(sessions[endpoint.group], base, endpoint, args.requests))
            r = rows[-1]
            print(f"  {r['group']:<8} {r['name']:<38} p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms")
        if args.new_mail:
            rows.append(
                after_new_mail(webmail, base, installation.big_maildir, installation.big_address, args.new_mail)
            )
            rows.append(after_reading(webmail, base, args.new_mail))
        time.sleep(INDEX_SETTLE_S)
        counts = query_counts(endpoints, installation)
        for row in rows:
            row["queries"] = counts.get(row["path"]) if not row["name"].startswith("inbox after") else None
    finally:
        stop_gunicorn(web)

    cold = {
        "group": "webmail",
        "name": "inbox, first look (cold index)",
        "path": "/mail/folder/inbox/",
        "requests": 1,
        "p50_ms": first_look["cold_first_page_ms"],
        "p95_ms": first_look["cold_first_page_ms"],
        "max_ms": first_look["cold_first_page_ms"],
        "mean_ms": first_look["cold_first_page_ms"],
        "octets": first_look["passes"][0]["octets"],
        "target_ms": None,
        "met": None,
        "queries": None,
    }
    print()
    print_table([*rows, cold])
    print(
        f"\nwebmail first look: {len(first_look['passes'])} page loads, {first_look['passes_total_s']:.1f} s in all, "
        f"until the index held all {args.messages} messages"
    )
    missed = [r for r in rows if r["met"] is False]
    print("every target met" if not missed else f"targets missed: {', '.join(r['name'] for r in missed)}")
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "python": platform.python_version(),
            "host": socket.gethostname(),
        },
        "parameters": {
            "mailboxes": args.mailboxes,
            "domains": args.domains,
            "servers": SERVER_COUNT,
            "messages": args.messages,
            "requests": args.requests,
            "web_workers": args.web_workers,
        },
        "setup_s": installation.setup_s,
        "rows": rows,
        "webmail_first_look": first_look,
        "wall_s": time.perf_counter() - run_started,
    }
    print(f"load average at the end: {os.getloadavg()}, wall time {report['wall_s']:.0f} s")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"web-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
