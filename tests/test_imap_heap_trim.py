"""The IMAP worker gives freed heap back after big replies: at once, then at most once per interval."""

from __future__ import annotations

import asyncio

from servers.workers.imapd import HeapTrimmer
from tests.helpers import wait_until


def test_big_replies_trim_the_heap_once_and_then_once_more_after_the_interval():
    trims: list[int] = []

    def trim(pad: int) -> int:
        trims.append(pad)
        return 1

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        trimmer = HeapTrimmer(every_s=0.3)
        trimmer._trim = trim
        trimmer.after_big_reply(loop)
        await loop.run_in_executor(None, lambda: wait_until(lambda: trims == [0], interval_s=0.01))
        trimmer.after_big_reply(loop)  # within the interval: one later trim, however many replies
        trimmer.after_big_reply(loop)
        assert trims == [0]
        await loop.run_in_executor(None, lambda: wait_until(lambda: len(trims) == 2, interval_s=0.01))

    asyncio.run(scenario())
    assert trims == [0, 0]
