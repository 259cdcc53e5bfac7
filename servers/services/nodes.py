"""Nodes (hosts running workers) and the SMTP service of a whole node."""

from __future__ import annotations

import logging

import redis
from django.conf import settings
from django.db import transaction

from servers.models import Node, ServiceState

from .audit import record_change

log = logging.getLogger(__name__)


def local_node() -> Node:
    """The Node row for the host this process runs on, registered on first use."""
    node, _ = Node.objects.get_or_create(name=settings.NODE_NAME)
    return node


def broker_answers() -> bool:
    """A quick check, so a console command does not wait on a broker that is not there."""
    try:
        return bool(
            redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=0.5, socket_timeout=0.5).ping()
        )
    except (redis.RedisError, OSError):
        return False


def send_to_node(node: Node | str, task, *args) -> None:
    """Queue a task on a node's own Celery queue once the current transaction commits.

    If the broker cannot be reached the change is still saved: the node's periodic reconcile
    reads the desired state from the database and applies it anyway.
    """
    queue = node if isinstance(node, str) else node.name

    def send() -> None:
        if not broker_answers():
            log.warning("the task queue (Redis) is not running; node %s applies this when its stack starts", queue)
            return
        try:
            task.apply_async(args=args, queue=queue, retry=False)
        except Exception as exc:  # broker down: reconcile will catch up
            log.warning("could not queue %s for node %s: %s", task.name, queue, exc)

    transaction.on_commit(send)


def request_reconcile(node: Node | str) -> None:
    """Ask the node to bring its workers to the desired state now rather than at the next tick."""
    from servers.tasks import reconcile_node

    name = node if isinstance(node, str) else node.name
    send_to_node(name, reconcile_node, name)


@transaction.atomic
def set_node_service_state(node: Node, desired: str, *, actor: str = "system") -> Node:
    """Start, pause or stop the SMTP service of a node: every virtual server on it at once."""
    desired = ServiceState(desired)
    node = Node.objects.select_for_update().get(pk=node.pk)
    if node.smtp_service_state != desired:
        before = {"smtp_service_state": node.smtp_service_state}
        node.smtp_service_state = desired
        node.save(update_fields=["smtp_service_state"])
        record_change(
            actor=actor,
            action="set_smtp_service_state",
            obj=node,
            before=before,
            after={"smtp_service_state": desired.value},
        )
    request_reconcile(node)
    return node
