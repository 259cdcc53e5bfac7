"""Celery tasks: thin wrappers that take ids, re-fetch, and call into supervision or services.

Every task here is sent to the queue named after the node that must run it.
"""

import logging
from pathlib import Path

from celery import shared_task

from servers import storage, supervision
from servers.models import VirtualServer

log = logging.getLogger("mailconsole.tasks")


@shared_task(name="servers.reconcile_node", ignore_result=True)
def reconcile_node(node_name: str) -> dict:
    report = supervision.reconcile_node(node_name)
    return {"started": report.started, "stopped": report.stopped, "failed": report.failed}


@shared_task(name="servers.terminate_worker", ignore_result=True)
def terminate_worker(kind: str, unit_id: int, pid: int) -> bool:
    return supervision.terminate_worker(kind, unit_id, pid)


@shared_task(name="servers.sweep_stale_temp_files", ignore_result=True)
def sweep_stale_temp_files(node_name: str) -> int:
    """Remove temp files that killed writers left in the node's Maildirs and servers' .tmp/ (36 h old)."""
    removed = 0
    for name, home_dir in VirtualServer.objects.on_node(node_name).values_list("name", "home_dir"):
        try:
            removed += storage.sweep_stale_temp_files(Path(home_dir))
        except OSError as error:
            log.warning("could not sweep the temp files of server %s: %s", name, error)
    log.info("swept %d stale temp file(s) on node %s", removed, node_name)
    return removed


from servers.delivery.tasks import *  # noqa: E402,F401,F403
