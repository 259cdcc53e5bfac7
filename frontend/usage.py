"""Mailbox sizes for the web pages and the API, remembered while the Maildir's folders stay unchanged.

`services.mailbox_usage` stats every message file, which for a mailbox of 50,000 messages takes a
few hundred milliseconds: too slow for a list page that shows it on one row. Files in a Maildir's
new/ and cur/ never change in place; they only arrive, move (flags) or go, and each of those
changes the folder's modification time. So a size counted after both folders last changed stays
true until one of them changes again. A folder changed less than SETTLE_NS before the count may
change again within the same clock tick, so such a count is not trusted (as the webmail index does).
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from servers.models import Mailbox
from servers.services import mailbox_usage
from servers.services.mailboxes import MailboxUsage

SETTLE_NS = 2_000_000_000
# Counting fewer files than this is about as quick as looking the answer up: not worth remembering.
MIN_FILES_TO_REMEMBER = 500
MAX_REMEMBERED = 2000


@dataclass(frozen=True)
class _Counted:
    folder_mtimes_ns: tuple[int, int]
    counted_at_ns: int
    usage: MailboxUsage


_remembered: OrderedDict[str, _Counted] = OrderedDict()
_lock = threading.Lock()


def _folder_mtimes_ns(maildir: Path) -> tuple[int, int]:
    times = []
    for sub in ("new", "cur"):
        try:
            times.append(os.stat(maildir / sub).st_mtime_ns)
        except FileNotFoundError:
            times.append(0)
    return times[0], times[1]


def stored_usage(mailbox: Mailbox) -> MailboxUsage:
    """Size and item count of a mailbox as stored: `services.mailbox_usage`, without recounting unchanged folders."""
    maildir = Path(mailbox.maildir)
    key = str(maildir)
    mtimes = _folder_mtimes_ns(maildir)
    with _lock:
        known = _remembered.get(key)
        if known is not None:
            _remembered.move_to_end(key)
    if (known is not None and known.folder_mtimes_ns == mtimes
            and known.counted_at_ns - max(mtimes) > SETTLE_NS):
        return known.usage
    counted_at_ns = time.time_ns()
    usage = mailbox_usage(mailbox)
    with _lock:
        if usage.message_count >= MIN_FILES_TO_REMEMBER:
            _remembered[key] = _Counted(mtimes, counted_at_ns, usage)
            _remembered.move_to_end(key)
            while len(_remembered) > MAX_REMEMBERED:
                _remembered.popitem(last=False)
        else:
            _remembered.pop(key, None)
    return usage
