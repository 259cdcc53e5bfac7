"""Live state in Redis: worker heartbeats. It may vanish at any time; missing means "unknown/down"."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import redis
from django.conf import settings

HEARTBEAT_PREFIX = "mailconsole:heartbeat:"
POP_AUTH_PREFIX = "mailconsole:popauth:"


def heartbeat_key(kind: str, unit_id: int) -> str:
    """The Redis key of one worker's heartbeat; `kind` is "smtp", "pop3" or "imap"."""
    return f"{HEARTBEAT_PREFIX}{kind}:{unit_id}"


def sessions_key(kind: str, unit_id: int, process_index: int = 0) -> str:
    """A hash of session id -> JSON description, rewritten by the worker every heartbeat.

    A server with several session processes has one hash per process: `<key>:<index>`.
    """
    key = f"mailconsole:sessions:{kind}:{unit_id}"
    return f"{key}:{process_index}" if process_index else key


def terminate_key(kind: str, unit_id: int) -> str:
    """A set of session ids an administrator asked the worker to close."""
    return f"mailconsole:terminate:{kind}:{unit_id}"


def pop_login_key(client_ip: str) -> str:
    """When this address last signed in to POP3 (epoch seconds): POP3 writes it, SMTP reads it
    for POP-before-SMTP relaying."""
    return f"{POP_AUTH_PREFIX}{client_ip}"


def scanner_key(kind: str, address: str) -> str:
    """What a content scanner ("clamd", "rspamd") at `address` last answered a worker: JSON with
    reachable, error (the last one) and checked_at (epoch seconds)."""
    return f"mailconsole:scanner:{kind}:{address}"


@dataclass(frozen=True)
class ScannerState:
    reachable: bool
    error: str
    checked_at: float


def read_scanner_state(client: redis.Redis, kind: str, address: str) -> ScannerState | None:
    """The state the workers last wrote for a scanner, or None if none has used it lately."""
    raw = client.get(scanner_key(kind, address))
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return ScannerState(bool(data["reachable"]), str(data.get("error", "")), float(data["checked_at"]))
    except (ValueError, KeyError, TypeError):
        return None


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)


@dataclass(frozen=True)
class Heartbeat:
    """What a worker last said about itself; `unit_id` is its virtual server's or POP3 service's id."""

    unit_id: int
    pid: int
    state: str
    config_version: int
    sent_at: float
    error: str = ""
    sessions: int = 0
    node: str = ""
    # SMTP: anti-spam refusals by reason ("dnsbl", "greylisted", …) since the worker started.
    refusals: dict[str, int] = field(default_factory=dict)

    @property
    def age_s(self) -> float:
        return time.time() - self.sent_at

    @classmethod
    def from_hash(cls, unit_id: int, data: dict[str, str]) -> Heartbeat | None:
        try:
            return cls(
                unit_id=unit_id,
                pid=int(data["pid"]),
                state=data["state"],
                config_version=int(data.get("config_version") or 0),
                sent_at=float(data["sent_at"]),
                error=data.get("error", ""),
                sessions=int(data.get("sessions") or 0),
                node=data.get("node", ""),
                refusals=_counts(data.get("refusals", "")),
            )
        except (KeyError, ValueError):
            return None


def _counts(text: str) -> dict[str, int]:
    """A JSON object of counts; anything else (an older worker, a broken field) counts nothing."""
    try:
        counts = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(counts, dict):
        return {}
    return {str(key): value for key, value in counts.items() if isinstance(value, int)}


def read_heartbeats(client: redis.Redis, kind: str, unit_ids: list[int]) -> dict[int, Heartbeat]:
    """The heartbeats of the given workers that are present in Redis."""
    if not unit_ids:
        return {}
    pipe = client.pipeline(transaction=False)
    for unit_id in unit_ids:
        pipe.hgetall(heartbeat_key(kind, unit_id))
    beats = {}
    for unit_id, data in zip(unit_ids, pipe.execute(), strict=False):
        beat = Heartbeat.from_hash(unit_id, data) if data else None
        if beat is not None:
            beats[unit_id] = beat
    return beats


def heartbeat_unit_ids(client: redis.Redis, kind: str) -> list[int]:
    """Ids of every worker of a kind that has a heartbeat, known to the database or not."""
    ids = []
    prefix = heartbeat_key(kind, 0)[:-1]
    for key in client.scan_iter(match=f"{prefix}*", count=500):
        suffix = key[len(prefix) :]
        if suffix.isdigit():
            ids.append(int(suffix))
    return ids
