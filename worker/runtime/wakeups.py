"""
Wake-ups: the one kind of message a producer sends. Kept apart from the tasks
so that a process that only takes leads in (a host app, the CLI) publishes
through the Celery app without loading the delivery code.
"""

from __future__ import annotations

from worker.config import queue_name
from worker.runtime.app import app

DELIVER_TASK = "leadrelay.deliver"


def wake(destination: str, countdown: float | None = None) -> None:
    """Enqueue a drain of one destination on its own queue."""
    app.send_task(
        DELIVER_TASK,
        args=[destination],
        queue=queue_name(destination),
        countdown=countdown,
        ignore_result=True,
    )
