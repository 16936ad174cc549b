"""
The Celery tasks: thin, named, routed, carrying ids. The ledger holds the work,
so every task is safe to run twice.

==========================  =====================  =====================================
task                        queue                  what it does
==========================  =====================  =====================================
leadrelay.deliver(dest)     deliver.<dest>         drain due deliveries of one destination
leadrelay.poll(dest)        deliver.<dest>         ask the platform about undecided leads
leadrelay.sweep()           leadrelay              expired leases back to due; wake-ups
leadrelay.submit(...)       leadrelay.intake       a raw lead from an app without our code
==========================  =====================  =====================================
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery.worker.request import Request

from worker import intake, ledger
from worker.config import queue_name
from worker.delivery import context, polling
from worker.delivery import loop as delivery
from worker.ops.redact import redact_value
from worker.runtime.app import app

log = logging.getLogger("leadrelay.tasks")

#: a deferred drain re-wakes itself only when the wait is this short; longer waits are the sweeper's
MAX_COUNTDOWN = timedelta(seconds=5)


class RedactedRequest(Request):
    """
    A raw intake message carries a lead; its arguments are redacted where the
    worker reports them (task events, `inspect`), so Flower never shows a
    phone, a name or a passport.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._argsrepr = repr(redact_value(list(self.args)))
        self._kwargsrepr = repr(redact_value(dict(self.kwargs)))


def wake(destination: str, countdown: float | None = None) -> None:
    """Enqueue a drain of one destination on its own queue."""
    app.send_task(
        "leadrelay.deliver",
        args=[destination],
        queue=queue_name(destination),
        countdown=countdown,
        ignore_result=True,
    )


@app.task(name="leadrelay.deliver", ignore_result=True, acks_late=True)
def deliver(destination: str) -> dict[str, Any]:
    """Drain due deliveries of one destination. Safe to run twice: the ledger decides."""
    report = delivery.drain(context.current(), destination)
    if report.more:
        wake(destination)
    elif report.deferred is not None and report.deferred <= MAX_COUNTDOWN:
        wake(destination, countdown=report.deferred.total_seconds())
    return {"requests": report.requests, "outcomes": dict(report.outcomes)}


@app.task(name="leadrelay.poll", ignore_result=True, acks_late=True)
def poll(destination: str) -> dict[str, int]:
    """Ask the platform about leads it decides later; settle the decided ones."""
    ctx = context.current()
    counts = polling.poll(ctx, destination)
    if counts.get("next_stage_now"):
        wake(destination)  # a stage was decided and the next one goes without a pause
    return dict(counts)


@app.task(name="leadrelay.sweep", ignore_result=True, acks_late=True)
def sweep() -> dict[str, int]:
    """Expired leases back to due; a wake-up per destination with due work and an empty queue."""
    ctx = context.current()
    now = ctx.clock()
    woken: dict[str, int] = {}
    with ctx.sessions.begin() as session:
        for dest in ctx.settings.destinations.values():
            ledger.sweep_expired_leases(session, dest.name, now=now, max_attempts=dest.max_attempts)
        due = ledger.due_counts(session, now)
        polls = ledger.poll_due_counts(session, now)
        paused = ledger.pauses(session, now)
    for name, count in due.items():
        if name in paused:
            continue
        if name in ctx.settings.destinations and _queue_empty(ctx, queue_name(name)):
            wake(name)
            woken[name] = count
    for name in polls:
        if name in ctx.settings.destinations:
            app.send_task(
                "leadrelay.poll",
                args=[name],
                queue=queue_name(name),
                ignore_result=True,
            )
    return woken


def _queue_empty(ctx: context.WorkerContext, queue: str) -> bool:
    """True when no message waits on `queue` (kombu's Redis transport keeps a list per queue)."""
    if ctx.redis is None:
        return True
    try:
        return int(ctx.redis.llen(queue)) == 0
    except Exception:
        return True


@app.task(name="leadrelay.submit", ignore_result=True, acks_late=True, Request=RedactedRequest)
def submit(
    destination: Any = None,
    lead: Any = None,
    idempotency_key: Any = None,
    *extra: Any,
    **unknown: Any,
) -> dict[str, Any]:
    """
    A lead from an app that has a Celery client but not our code (`send_task`).

    Validated like every other way in; a refused lead is recorded in `refusals`
    with each field and rule, never dropped in silence. A message of the wrong
    shape (arguments missing or unknown) is a refusal too, never a task that
    dies on a TypeError. Returns the lead id or the refusal id (results are
    not kept; the ledger is the record).
    """
    ctx = context.current()
    if extra or unknown:
        result = intake.refuse_message(
            ctx, "message", "takes destination, lead and idempotency_key only", source="celery"
        )
    else:
        result = intake.accept_one(
            ctx, destination, lead, idempotency_key=idempotency_key, source="celery"
        )
    if result.lead_id is not None:
        wake(destination)
    return {"lead_id": result.lead_id, "refusal_id": result.refusal_id}
