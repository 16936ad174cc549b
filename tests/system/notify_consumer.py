"""
An upstream app's side of settlement events, written as its authors would:
its own Celery app, stock Celery and kombu, JSON only, nothing of the relay's
imported. Its worker consumes one queue:

    APP_BROKER_URL=redis://… APP_DATABASE_URL=postgresql://… APP_EVENTS_TABLE=lead_events \\
        celery -A tests.system.notify_consumer worker -Q app.events

Events come at least once, so each is recorded once per (lead_id, state) in the
app's own PostgreSQL table (INSERT … ON CONFLICT), and a repeat only counts
itself. The task acks late: a consumer that dies before the row is committed
leaves the message to be delivered again, and a database that is away is
waited for (the task retries).

Besides the event, the row keeps how the message came (the arguments' types,
the app, the kombu transport that carried it), for the tests that run this app.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import psycopg
from celery import Celery, Task
from kombu import Queue
from psycopg import sql
from psycopg.types.json import Jsonb

#: the queue the relay publishes this app's events to (the destination's `notify_queue`)
EVENTS_QUEUE = "app.events"

app = Celery("app", broker=os.environ.get("APP_BROKER_URL"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_queues=[Queue(EVENTS_QUEUE)],
    task_default_queue=EVENTS_QUEUE,
    broker_connection_retry_on_startup=True,
)

RECORD = sql.SQL(
    "INSERT INTO {table} (lead_id, state, event, received, received_by)"
    " VALUES (%s, %s, %s, 1, %s)"
    " ON CONFLICT (lead_id, state) DO UPDATE SET received = {table}.received + 1"
)

_connection: psycopg.Connection[Any] | None = None


def connection() -> psycopg.Connection[Any]:
    """This process's connection to the app's database, opened again after it broke."""
    global _connection
    if _connection is None or _connection.closed or _connection.broken:
        _connection = psycopg.connect(os.environ["APP_DATABASE_URL"], autocommit=True)
    return _connection


@functools.cache
def transport() -> str:
    """The kombu transport class this app's connections use (no connection is opened)."""
    with app.connection_for_read() as conn:
        cls = type(conn.transport)
    return f"{cls.__module__}.{cls.__qualname__}"


@app.task(
    name="app.lead_settled",
    bind=True,
    queue=EVENTS_QUEUE,
    autoretry_for=(psycopg.OperationalError,),
    retry_backoff=True,
    retry_backoff_max=10,
    max_retries=None,
)
def lead_settled(self: Task[Any, Any], event: dict[str, Any]) -> None:
    """One lead settled at one destination: record it, once per (lead_id, state)."""
    received_by = {
        "app": self.app.main,
        "args": [type(arg).__name__ for arg in self.request.args or ()],
        "kwargs": sorted(self.request.kwargs or {}),
        "transport": transport(),
    }
    table = sql.Identifier(os.environ["APP_EVENTS_TABLE"])
    connection().execute(
        RECORD.format(table=table),
        (event["lead_id"], event["state"], Jsonb(event), Jsonb(received_by)),
    )
