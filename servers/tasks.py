"""Celery tasks: thin wrappers that take ids, re-fetch, and call into supervision or services.

Every task here is sent to the queue named after the node that must run it.
"""

from celery import shared_task

from servers import supervision


@shared_task(name="servers.reconcile_node", ignore_result=True)
def reconcile_node(node_name: str) -> dict:
    report = supervision.reconcile_node(node_name)
    return {"started": report.started, "stopped": report.stopped, "failed": report.failed}


@shared_task(name="servers.terminate_worker", ignore_result=True)
def terminate_worker(kind: str, unit_id: int, pid: int) -> bool:
    return supervision.terminate_worker(kind, unit_id, pid)
from servers.delivery.tasks import *  # noqa: E402,F401,F403
