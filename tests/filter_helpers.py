"""The scanners of the Filters tab's tests: a clamd of our own, a fake rspamd, and a real rspamd.

ClamAV's signatures cannot be downloaded here, so `FakeClamd` speaks clamd's INSTREAM protocol
itself (clamd(8): `zINSTREAM\\0`, chunks after their 4-byte big-endian lengths, a zero length at
the end, one NUL-ended reply) and flags the EICAR test string, as clamd's own test signature does.
`FakeRspamd` answers `POST /checkv2` with the score a message asks for ("SCORE=7.5" in it), so the
thresholds are tested whatever rspamd's rules say. `real_rspamd` runs Debian's rspamd on loopback
with a minimal configuration of its own (scripts/install-test-packages.sh installs it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socketserver
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.helpers import free_port, wait_until

# The EICAR anti-virus test file (eicar.org), in two halves so that this source is no test file itself.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_SIGNATURE = "Eicar-Signature"


class FakeClamd:
    """A clamd on loopback TCP or a unix socket; `mode` is "scan", "error" (answers ERROR) or "silent"."""

    def __init__(self, unix_path: Path | None = None, mode: str = "scan") -> None:
        self.mode = mode
        self.scanned: list[bytes] = []
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner._serve(self.request)

        if unix_path is not None:
            self.server: socketserver.BaseServer = socketserver.ThreadingUnixStreamServer(str(unix_path), Handler)
            self.address = f"unix:{unix_path}"
        else:
            self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
            self.address = f"tcp://127.0.0.1:{self.server.server_address[1]}"
        self.server.daemon_threads = True  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _serve(self, sock) -> None:
        reader = sock.makefile("rb")
        command = b""
        while not command.endswith(b"\0"):
            byte = reader.read(1)
            if not byte:
                return
            command += byte
        if command == b"zPING\0":
            sock.sendall(b"PONG\0")
            return
        if command != b"zINSTREAM\0":
            sock.sendall(b"UNKNOWN COMMAND\0")
            return
        data = b""
        while True:
            (length,) = struct.unpack(">I", reader.read(4))
            if length == 0:
                break
            data += reader.read(length)
        self.scanned.append(data)
        if self.mode == "silent":
            time.sleep(5)
            return
        if self.mode == "error":
            sock.sendall(b"stream: Can't allocate memory ERROR\0")
        elif EICAR in data:
            sock.sendall(f"stream: {EICAR_SIGNATURE} FOUND\0".encode())
        else:
            sock.sendall(b"stream: OK\0")

    def __enter__(self) -> FakeClamd:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


_SCORE = re.compile(rb"SCORE=(-?[0-9.]+)")


class FakeRspamd:
    """rspamd's /checkv2 (and /ping) on loopback: the score is the message's "SCORE=n" (0 without one)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, list[str]], bytes]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers: dict[str, list[str]] = {}
                for name, value in self.headers.items():
                    headers.setdefault(name, []).append(value)
                owner.requests.append((headers, body))
                found = _SCORE.search(body)
                score = float(found.group(1)) if found else 0.0
                answer = json.dumps({"score": score, "required_score": 15.0, "action": "no action"}).encode()
                self.send_response(200 if self.path == "/checkv2" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def do_GET(self) -> None:
                answer = b"pong\r\n" if self.path == "/ping" else b"not found\r\n"
                self.send_response(200 if self.path == "/ping" else 404)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeRspamd:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


RSPAMD_CONFIG = """
.include "$CONFDIR/common.conf"
options {{
  pidfile = "{home}/rspamd.pid";
  dbdir = "{home}/db";
  .include "$CONFDIR/options.inc"
  # No DNS here: every lookup fails at once instead of waiting on the system's resolver.
  dns {{ nameserver = ["127.0.0.1:1"]; timeout = 0.1s; retransmits = 0; }}
}}
logging {{ type = "file"; filename = "{home}/rspamd.log"; level = "error"; }}
worker "normal" {{
  bind_socket = "127.0.0.1:{port}";
  count = 1;
  .include "$CONFDIR/worker-normal.inc"
}}
"""


def rspamd_missing_reason() -> str | None:
    """Why a real rspamd cannot run here, or None."""
    if shutil.which("rspamd") is None:
        return "rspamd is not installed (Debian package rspamd; scripts/install-test-packages.sh installs it)"
    return None


@contextmanager
def real_rspamd(home: Path) -> Iterator[str]:
    """Debian's rspamd, its normal worker on a loopback port, its pid and db files under `home`; yield its URL.

    No controller, no Redis, no proxy; its statistics and caches stay in `home`.
    """
    import urllib.request

    port = free_port()
    (home / "db").mkdir(parents=True, exist_ok=True)
    config = home / "rspamd.conf"
    config.write_text(RSPAMD_CONFIG.format(home=home, port=port))
    user = ["--insecure", "-u", "root", "-g", "root"] if os.geteuid() == 0 else []
    process = subprocess.Popen(
        ["rspamd", "-f", "-c", str(config), *user],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if process.poll() is not None:
            log = (home / "rspamd.log").read_text() if (home / "rspamd.log").exists() else ""
            raise RuntimeError(f"rspamd exited ({process.returncode}): {log[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=1) as answer:
                return answer.read().strip() == b"pong"
        except OSError:
            return False

    try:
        wait_until(answers, timeout_s=60, interval_s=0.2, message="rspamd to answer /ping")
        yield url
    finally:
        # rspamd's main process and its workers: the process group this test started.
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
