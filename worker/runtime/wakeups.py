"""
Wake-ups: the one kind of message a producer sends. Kept apart from the tasks
so that a process that only takes leads in (a host app, the CLI) publishes
through the Celery app without loading the delivery code.
"""

from __future__ import annotations

from kombu import Queue

from worker.config import queue_name
from worker.runtime.app import app

DELIVER_TASK = "leadrelay.deliver"


def wake(destination: str, countdown: float | None = None) -> None:
    """
    Enqueue a drain of one destination on its own queue. The queue goes as a
    kombu Queue, not its name: Celery looks a name up in the queues it was
    configured with, and a process that took its settings late (or twice, as a
    test suite does) would refuse a destination it does not list.
    """
    app.send_task(
        DELIVER_TASK,
        args=[destination],
        queue=Queue(queue_name(destination)),  # type: ignore[arg-type]  # its stubs say str
        countdown=countdown,
        ignore_result=True,
    )
