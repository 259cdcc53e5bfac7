"""Current sessions of SMTP, POP3 and IMAP workers, read from Redis, and terminating one."""

from __future__ import annotations

import json

import redis
from django.utils.translation import gettext

from servers.livestate import redis_client, sessions_key, terminate_key
from servers.models import SupervisedProcess

from .audit import record_change
from .errors import RefusedError


def list_sessions(unit: SupervisedProcess) -> list[dict]:
    """The live sessions of a server's (or the POP3 service's) worker, oldest first; [] if unknown."""
    # The worker's own hash, and one per session process when it has several.
    processes = getattr(unit, "worker_processes", 1)
    indexes = range(1, processes + 1) if processes > 1 else [0]
    try:
        with redis_client().pipeline(transaction=False) as pipe:
            for index in indexes:
                pipe.hgetall(sessions_key(unit.process_kind, unit.pk, index))
            values = [value for raw in pipe.execute() for value in raw.values()]
    except (redis.RedisError, OSError):
        return []
    sessions = []
    for value in values:
        try:
            sessions.append(json.loads(value))
        except ValueError:
            continue
    return sorted(sessions, key=lambda s: s.get("connected_at", 0))


def terminate_session(unit: SupervisedProcess, session_id: str, *, actor: str = "system") -> None:
    """Ask the worker to close a session (the client gets a 421 / -ERR) within a second or two."""
    if not any(s["id"] == session_id for s in list_sessions(unit)):
        raise RefusedError(gettext("There is no such session (it may have ended already)."), field="session")
    try:
        client = redis_client()
        client.sadd(terminate_key(unit.process_kind, unit.pk), session_id)
        client.expire(terminate_key(unit.process_kind, unit.pk), 60)
    except (redis.RedisError, OSError) as exc:
        raise RefusedError(
            gettext("Cannot reach the worker's live state: %(reason)s") % {"reason": exc}, field="session"
        ) from None
    record_change(actor=actor, action="terminate_session", obj=unit, after={"session": session_id})
