"""Celery tasks of the delivery engine; each runs on the queue of the node that owns the mail.

The schedule lives in the database (`QueuedMessage.next_attempt_at`); the periodic scan turns due
rows into `servers.delivery_attempt` tasks, so a lost task is only late, never lost.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from servers import mailstore
from servers.delivery import engine, pickup

log = logging.getLogger(__name__)

__all__ = ["delivery_attempt", "delivery_pickup", "delivery_scan"]


@shared_task(name="servers.delivery_attempt", ignore_result=True)
def delivery_attempt(message_id: int) -> str:
    return engine.process_message(message_id)


@shared_task(name="servers.delivery_scan", ignore_result=True)
def delivery_scan(node_name: str) -> int:
    """Index new Queue files, free the claims of dead workers, and send every due message to a worker."""
    servers = engine.active_servers(node_name)
    for server in servers:
        try:
            mailstore.ensure_dirs(server.home_path)
            engine.reconcile_queue(server)
        except OSError:
            # One unreadable home directory must not stop the other servers' mail.
            log.exception("server %s: the Queue folder could not be scanned", server.pk)
    server_ids = [server.pk for server in servers]
    engine.release_dead_claims(server_ids)
    due = engine.due_messages(
        server_ids, redispatch_after_s=settings.DELIVERY_REDISPATCH_S, max_in_flight=settings.DELIVERY_MAX_IN_FLIGHT
    )
    for message_id in due:
        delivery_attempt.apply_async(args=(message_id,), queue=node_name)
    return len(due)


@shared_task(name="servers.delivery_pickup", ignore_result=True)
def delivery_pickup(node_name: str) -> int:
    """Take the files in every active server's Pickup folder into its queue."""
    taken = 0
    for server in engine.active_servers(node_name):
        try:
            taken += pickup.scan_pickup(server)
        except OSError:
            log.exception("server %s: the Pickup folder could not be read", server.pk)
    return taken
