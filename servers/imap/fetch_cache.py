"""What FETCH derives from a message's bytes (its ENVELOPE, its BODYSTRUCTURE), kept by UID.

A message never changes while its folder's UIDVALIDITY holds (RFC 9051 2.3.1.1: a UID names one
message; Maildir files are never rewritten), so what was rendered once from its header serves every
later FETCH of any session: a client opening a folder of 50,000 messages then costs no file reads.
A message that vanished and came back under the same unique name gets a new UID, so it never finds
the old value.

The store hands out one `FetchCache` per folder, UIDVALIDITY and kind of value (`Folder.fetch_cache`);
`FetchCaches` keeps those of a process within a bound on the octets they hold, forgetting the least
recently used folders first.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

# What one cached value costs beyond its octets: the bytes object, the int key, the dict slot.
ENTRY_OVERHEAD_OCTETS = 100
# The default bound of a process's caches: the values of ~150,000 messages of the usual size.
MAX_CACHED_OCTETS = 32 * 1024 * 1024


class FetchCache:
    """One folder's rendered values of one kind, by UID (thread-safe: sessions share it)."""

    def __init__(self, on_grow: Callable[[FetchCache, int], None] | None = None) -> None:
        self._values: dict[int, bytes] = {}
        self._lock = threading.Lock()
        self._on_grow = on_grow
        self.registered = True  # False once its registry forgot it (a session may still hold it)
        self.octets = 0  # the values' octets and their overhead
        # A hit is one C-level dict lookup, without a lock: a fetch of 50,000 messages makes 50,000.
        self.get: Callable[[int], bytes | None] = self._values.get

    def __len__(self) -> int:
        return len(self._values)

    def put(self, uid: int, value: bytes) -> None:
        with self._lock:
            if uid in self._values:
                return
            self._values[uid] = value
            grown = len(value) + ENTRY_OVERHEAD_OCTETS
            self.octets += grown
        if self._on_grow is not None:
            self._on_grow(self, grown)

    def items(self) -> list[tuple[int, bytes]]:
        with self._lock:
            return list(self._values.items())

    def shrink_to(self, octets: int) -> int:
        """Forget the oldest values until at most `octets` remain; return the octets freed."""
        freed = 0
        with self._lock:
            while self._values and self.octets > octets:
                uid = next(iter(self._values))
                size = len(self._values.pop(uid)) + ENTRY_OVERHEAD_OCTETS
                self.octets -= size
                freed += size
        return freed


class FetchCaches:
    """A process's `FetchCache`s by folder identity, within `max_octets` in all."""

    def __init__(self, max_octets: int = MAX_CACHED_OCTETS) -> None:
        self.max_octets = max_octets
        self._caches: collections.OrderedDict[str, FetchCache] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.octets = 0

    def __len__(self) -> int:
        return len(self._caches)

    def cache(self, identity: str) -> FetchCache:
        """The cache of `identity` (a folder's path, UIDVALIDITY and kind of value), made if missing."""
        with self._lock:
            found = self._caches.get(identity)
            if found is None:
                found = self._caches[identity] = FetchCache(self._grew)
            else:
                self._caches.move_to_end(identity)
            return found

    def _grew(self, cache: FetchCache, octets: int) -> None:
        with self._lock:
            if not cache.registered:
                return
            self.octets += octets
            if self.octets <= self.max_octets:
                return
            # The least recently used folders go first; a folder bigger than the bound alone keeps
            # its newest values.
            while self.octets > self.max_octets and len(self._caches) > 1:
                identity, oldest = next(iter(self._caches.items()))
                if oldest is cache:
                    self._caches.move_to_end(identity)
                    identity, oldest = next(iter(self._caches.items()))
                del self._caches[identity]
                oldest.registered = False
                self.octets -= oldest.octets
            if self.octets > self.max_octets:
                self.octets -= cache.shrink_to(self.max_octets // 2)


# The caches of this process: every folder store of a worker shares the one bound.
process_caches = FetchCaches()
