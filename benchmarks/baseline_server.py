"""Bare aiosmtpd servers to measure MailConsole against (`python -m benchmarks.baseline_server`).

`sink` accepts every message and forgets it; `maildir` writes each message into `<root>/<local
part>/new/` the durable way (tmp/ file, fsync, rename, fsync new/) in a thread, and only then says
250. Neither has policy, recipients lookup, Received: headers, heartbeats or supervision.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import time
from pathlib import Path

from aiosmtpd.smtp import SMTP


class SinkHandler:
    async def handle_DATA(self, server, session, envelope) -> str:
        return "250 2.0.0 OK"


def deliver(maildir: Path, data: bytes) -> None:
    name = f"{time.time_ns()}.P{os.getpid()}R{secrets.token_hex(8)}.bench"
    tmp_path = maildir / "tmp" / name
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp_path, maildir / "new" / name)
    directory_fd = os.open(maildir / "new", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


class MaildirHandler:
    def __init__(self, root: Path) -> None:
        self.root = root

    async def handle_DATA(self, server, session, envelope) -> str:
        local_part = envelope.rcpt_tos[0].partition("@")[0]
        maildir = self.root / local_part
        for sub in ("tmp", "new", "cur"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        await asyncio.get_running_loop().run_in_executor(None, deliver, maildir, envelope.original_content)
        return "250 2.0.0 OK"


async def serve(mode: str, port: int, root: Path | None) -> None:
    handler = SinkHandler() if mode == "sink" else MaildirHandler(root)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="baseline.invalid"), "127.0.0.1", port, backlog=1024
    )
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("sink", "maildir"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", type=Path, help="where the Maildirs go (maildir mode)")
    args = parser.parse_args()
    asyncio.run(serve(args.mode, args.port, args.root))


if __name__ == "__main__":
    main()
