"""The IMAP mail store alone (no server, no sockets): how long a big folder takes to open and to look at.

    python -m benchmarks.imap_store [--messages 50000] [--rounds 3]

A Maildir of --messages small messages in a temporary directory (a third in new/, the rest read in
cur/), then, each in a fresh process so nothing is remembered:
- `first open`: open + messages() when the folder has no UID map yet (every message is read once
  for its RFC822.SIZE);
- `fresh process`: open + messages() with the map on disk (a worker's first SELECT of the folder);
- `warm`: a second open in the same process (every later SELECT), and SELECT + UID FETCH 1:*
  (UID FLAGS RFC822.SIZE) through the real `ImapSession` in that process;
- `refresh`: nothing changed; one delivery; the session's own STORE and EXPUNGE.
Wall and CPU (user + system) milliseconds: on a shared machine, CPU is the steadier number.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BODY = b"From: bob@example.com\nSubject: hello %d\n\n" + b"Hello Alice, some text.\n" * 40


def make_maildir(root: Path, count: int) -> Path:
    from servers.maildir import ensure_maildir

    maildir = ensure_maildir(root / "alice")
    start_ns = time.time_ns() - 10**12
    for n in range(count):
        subdir, info = ("cur", ":2,S") if n % 3 else ("new", "")
        (maildir / subdir / f"{start_ns + n}.P1R{n:016x}.bench{info}").write_bytes(BODY % n)
    return maildir


def timed(action: Callable[[], object]) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = action()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000, result


def measure_in_this_process(maildir: Path) -> dict[str, list[float]]:
    """One fresh process's numbers: open, reopen, session SELECT + FETCH, refreshes."""
    from servers import mailstore
    from servers.imap.session import ImapSession
    from servers.imap.store_api import AuthOutcome, AuthStatus
    from servers.mailfolders import MaildirAccount

    account = MaildirAccount(maildir, "alice@example.com", quota_octets=None)
    numbers: dict[str, list[float]] = {}
    wall, cpu = time.perf_counter(), time.process_time()
    folder = account.open_folder("INBOX", read_only=False)
    folder.messages()
    numbers["open"] = [(time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000]
    numbers["reopen (warm)"] = list(timed(lambda: account.open_folder("INBOX", read_only=True).messages())[:2])

    def authenticate(user: str, password: str) -> AuthOutcome:
        return AuthOutcome(AuthStatus.OK, account)

    session = ImapSession(
        hostname="bench",
        authenticator=authenticate,
        default_domain="example.com",
        tls_available=True,
        tls_active=True,
        plaintext_requires_tls=True,
    )
    session.receive_data(b'a LOGIN alice "x"\r\n')
    numbers["SELECT (warm)"] = list(timed(lambda: session.receive_data(b"s SELECT INBOX\r\n"))[:2])
    fetch = b"f UID FETCH 1:* (UID FLAGS RFC822.SIZE)\r\n"
    numbers["UID FETCH 1:* (UID FLAGS RFC822.SIZE)"] = list(timed(lambda: session.receive_data(fetch))[:2])
    numbers["refresh, nothing changed"] = list(timed(folder.refresh)[:2])
    mailstore.deliver(maildir, [b"Subject: new\r\n\r\nx\r\n"])
    numbers["refresh after one delivery"] = list(timed(folder.refresh)[:2])
    last = folder.messages()[-1].uid

    def store() -> object:
        return folder.store_flags([last], frozenset({"\\Deleted"}), "add")

    numbers["STORE one"] = list(timed(store)[:2])
    numbers["EXPUNGE one"] = list(timed(folder.expunge)[:2])
    numbers["refresh after own EXPUNGE"] = list(timed(folder.refresh)[:2])
    return numbers


def run_child(maildir: Path) -> dict[str, list[float]]:
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.imap_store", "--child", str(maildir)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(json.dumps(measure_in_this_process(options.child)))
        return
    with tempfile.TemporaryDirectory(prefix="imap-store-bench-") as temp:
        maildir = make_maildir(Path(temp), options.messages)
        first = run_child(maildir)
        rows = [("first open (no UID map yet)", first["open"])]
        later = [run_child(maildir) for _ in range(options.rounds)]
        rows.append(("fresh process open (map on disk)", min((r["open"] for r in later), key=lambda x: x[1])))
        for name in later[0]:
            if name != "open":
                rows.append((name, min((r[name] for r in later), key=lambda x: x[1])))
    print(f"{options.messages} messages; best of {options.rounds} fresh processes (wall ms / CPU ms)")
    for name, (wall, cpu) in rows:
        print(f"  {name:42} {wall:9.1f} {cpu:9.1f}")


if __name__ == "__main__":
    main()
