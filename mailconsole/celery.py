"""The Celery app: supervision and (later) delivery tasks, routed to each node's own queue."""

import logging
import os

from celery import Celery
from celery.signals import after_setup_logger

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailconsole.settings")

# Maildir tmp/ files count as orphaned after 36 hours; looking once an hour is plenty.
TEMP_SWEEP_INTERVAL_S = 3600

app = Celery("mailconsole")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# Each periodic task (several a second) would log "received" and "succeeded" at INFO and bury what a
# person needs: the banner, state changes, warnings. They show with MAILCONSOLE_LOG_LEVEL=DEBUG.
PER_TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy", "celery.beat")


@after_setup_logger.connect
def quiet_per_task_lines(**kwargs) -> None:
    if os.environ.get("MAILCONSOLE_LOG_LEVEL", "INFO").upper() != "DEBUG":
        for name in PER_TASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


@app.on_after_configure.connect
def schedule_reconcile(sender: Celery, **kwargs) -> None:
    """Run the periodic reconcile for this node; beat is started per node by `runstack`."""
    from django.conf import settings

    sender.add_periodic_task(
        float(settings.RECONCILE_INTERVAL_S),
        sender.signature("servers.reconcile_node", args=(settings.NODE_NAME,)),
        name=f"reconcile {settings.NODE_NAME}",
        queue=settings.NODE_NAME,
        expires=settings.RECONCILE_INTERVAL_S * 2,
    )
    # Delivery: index Queue/ and send due messages to workers; take files from Pickup/.
    for task in ("servers.delivery_scan", "servers.delivery_pickup"):
        sender.add_periodic_task(
            float(settings.DELIVERY_SCAN_INTERVAL_S),
            sender.signature(task, args=(settings.NODE_NAME,)),
            name=f"{task} {settings.NODE_NAME}",
            queue=settings.NODE_NAME,
            expires=settings.DELIVERY_SCAN_INTERVAL_S * 2,
        )
    sender.add_periodic_task(
        float(TEMP_SWEEP_INTERVAL_S),
        sender.signature("servers.sweep_stale_temp_files", args=(settings.NODE_NAME,)),
        name=f"servers.sweep_stale_temp_files {settings.NODE_NAME}",
        queue=settings.NODE_NAME,
        expires=TEMP_SWEEP_INTERVAL_S,
    )
