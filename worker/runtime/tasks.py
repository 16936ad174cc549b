"""
The Celery tasks: thin, named, routed, carrying ids. The ledger holds the work,
so every task is safe to run twice.

==========================  =====================  =====================================
task                        queue                  what it does
==========================  =====================  =====================================
leadrelay.deliver(dest)     deliver.<dest>         drain due deliveries of one destination
leadrelay.poll(dest)        deliver.<dest>         ask the platform about undecided leads
leadrelay.sweep()           leadrelay              expired leases back to due; wake-ups
leadrelay.notify()          leadrelay              settlement events to upstream apps' tasks
leadrelay.submit(...)       leadrelay.intake       a raw lead from an app without our code
==========================  =====================  =====================================
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from functools import partial
from typing import Any, ParamSpec

import kombu
import psycopg
import redis
from celery.worker.request import Request
from kombu.exceptions import OperationalError
from sqlalchemy import exc as sa_exc

from worker import intake, ledger
from worker.config import queue_name
from worker.delivery import context, notify, polling
from worker.delivery import loop as delivery
from worker.errors import first_line
from worker.ledger import counts
from worker.ledger import retention as retention_run
from worker.ops.redact import redact_value
from worker.runtime.app import app
from worker.runtime.wakeups import wake

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


P = ParamSpec("P")


def ledger_lost(exc: sa_exc.DBAPIError) -> bool:
    """
    Whether an error says the ledger went away rather than a statement being wrong:
    a lost or refused connection, or the driver losing its place in the protocol
    (psycopg's bare InternalError, with no SQLSTATE: "received 2 results from
    RELEASE" when PgBouncer hands a transaction a restarted server mid-way).
    An InternalError the server sent (it has a SQLSTATE) is a real error.
    """
    if not isinstance(exc, sa_exc.InternalError):
        return True
    return isinstance(exc.orig, psycopg.InternalError) and exc.orig.sqlstate is None


def ledger_may_be_away(task: Callable[P, dict[str, Any]]) -> Callable[P, dict[str, Any]]:
    """
    A task that finds the ledger away (PostgreSQL restarting, a failover) logs one
    warning and ends, instead of a traceback per run: what it would have done
    waits in the ledger, and beat's next sweep (seconds away) starts it again.
    Every lead stays where its last committed transaction left it.
    """

    @functools.wraps(task)
    def run(*args: P.args, **kwargs: P.kwargs) -> dict[str, Any]:
        try:
            return task(*args, **kwargs)
        except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.InternalError) as exc:
            if not ledger_lost(exc):
                raise
            log.warning(
                "the ledger is away: this run ends, the next sweep starts it again",
                extra={"event": "ledger.away", "task": task.__name__, "error": first_line(exc)},
            )
            return {"failed": "ledger away"}

    return run


@app.task(name="leadrelay.deliver", ignore_result=True, acks_late=True)
@ledger_may_be_away
def deliver(destination: str) -> dict[str, Any]:
    """
    Drain due deliveries of one destination. Safe to run twice: the ledger decides.
    Returns the drain's summary (`_summary`).
    """
    ctx = context.current()
    report = delivery.drain(ctx, destination)
    if report.more:
        wake(destination)
    elif report.deferred is not None and report.deferred <= MAX_COUNTDOWN:
        wake(destination, countdown=report.deferred.total_seconds())
    return _summary(ctx, destination, report.outcomes, report.requests, report.throttles)


@app.task(name="leadrelay.poll", ignore_result=True, acks_late=True)
@ledger_may_be_away
def poll(destination: str) -> dict[str, Any]:
    """
    Ask the platform about leads it decides later; settle the decided ones.
    Returns the pass's summary (`_summary`).
    """
    ctx = context.current()
    report = polling.poll(ctx, destination)
    if report.get("next_stage_now"):
        wake(destination)  # a stage was decided and the next one goes without a pause
    return _summary(ctx, destination, report, report.requests, report.throttles)


def _summary(
    ctx: context.WorkerContext,
    destination: str,
    outcomes: Mapping[str, int],
    requests: int,
    throttles: int,
) -> dict[str, Any]:
    """
    What a drain or a poll did, and the backlog it left: the task's result.

    There is no result backend: the worker sends the result's repr in its
    task-succeeded event, and Flower shows it in the task list, so ops see
    per task what it achieved and how much still waits. A small JSON dict of
    counts: nothing of a lead. `backlog` counts the destination's queued and
    retry_wait deliveries up to a cap (`ledger.backlog`; `backlog_capped` when
    more wait); `oldest_due_s` is how long the oldest due one has waited (None:
    none is due).
    """
    now = ctx.clock()
    with ctx.sessions() as session:
        left = ledger.backlog(session, destination, now)
    # what ops look for first comes first: Flower cuts a long result short in its list
    return {
        "outcomes": dict(outcomes),
        "backlog": left.waiting,
        "oldest_due_s": None if left.oldest_due_s is None else round(left.oldest_due_s, 1),
        "requests": requests,
        "throttles": throttles,
        "backlog_capped": left.capped,
    }


@app.task(name="leadrelay.sweep", ignore_result=True, acks_late=True)
@ledger_may_be_away
def sweep() -> dict[str, Any]:
    """
    Expired leases back to due; the ledger's delivery counts folded; a wake-up per
    destination with due work and an empty queue.
    """
    ctx = context.current()
    now = ctx.clock()
    woken: dict[str, int] = {}
    with ctx.sessions.begin() as session:
        for dest in ctx.settings.destinations.values():
            ledger.sweep_expired_leases(
                session,
                dest.name,
                now=now,
                max_attempts=dest.max_attempts,
                notify=notify.target(dest, ctx.secrets),
            )
        counts.fold(session)
        due = ledger.due_counts(session, now, ctx.settings.destinations)
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
                queue=kombu.Queue(queue_name(name)),  # type: ignore[arg-type]  # see wakeups
                ignore_result=True,
            )
    return woken


#: the longest one retention run deletes for; what is left waits for the next run
RETENTION_BUDGET_S = 300.0
#: a pause after each batch, as long as the batch took: claims get the disk half the time
RETENTION_REST = 1.0


@app.task(name="leadrelay.retention", ignore_result=True, acks_late=True)
@ledger_may_be_away
def retention() -> dict[str, Any]:
    """
    Delete whole each destination's leads settled longer ago than its `keep_days`,
    with the exchanges that carried only them: small batches with a pause after
    each, at most RETENTION_BUDGET_S a run, the rest at the next run.
    """
    ctx = context.current()
    now = ctx.clock()
    stop_at = time.monotonic() + RETENTION_BUDGET_S
    report: dict[str, Any] = {}
    for dest, removed in retention_run.delete_all(
        ctx.sessions,
        ctx.settings.destinations.values(),
        now,
        deadline=lambda: time.monotonic() > stop_at,
        rest=RETENTION_REST,
    ):
        report[dest.name] = {
            "leads": removed.leads,
            "attempts": removed.attempts,
            "finished": removed.finished,
        }
        log.info(
            "retention: %s: %d lead(s), %d exchange(s) deleted%s",
            dest.name,
            removed.leads,
            removed.attempts,
            "" if removed.finished else "; the rest at the next run",
            extra={"event": "retention.deleted", "destination": dest.name, **report[dest.name]},
        )
    return report


@app.task(name="leadrelay.notify", ignore_result=True, acks_late=True)
@ledger_may_be_away
def flush_events() -> dict[str, Any]:
    """
    Publish the settlement events waiting in the outbox, each to its upstream
    app's task and queue, under the broker's epoch (read from the broker these
    messages go to). Safe to run twice at once: each takes its own rows.
    """
    ctx = context.current()
    try:
        with app.producer_or_acquire() as producer:
            client = producer.channel.client
            epoch = notify.broker_epoch(client)
            moved = notify.broker_moved(client)
            publish = partial(_publish, producer)
            report = notify.flush(
                ctx.sessions, publish, epoch, clock=ctx.clock, moved=moved is not None
            )
            if moved is not None:
                notify.server_seen(client, moved)
    except (redis.RedisError, OperationalError) as exc:  # beat asks again in a second
        log.warning(
            "settlement events wait: the broker is away",
            extra={"event": "notify.broker_away", "error": type(exc).__name__},
        )
        return {"failed": type(exc).__name__}
    return {"sent": report.sent, "resent": report.resent, "deleted": report.deleted}


def _publish(producer: kombu.Producer, task: str, queue: str, payload: Mapping[str, Any]) -> None:
    """
    One event to the upstream app's task: JSON, its one argument the payload. The
    queue goes as a kombu Queue: with `task_create_missing_queues` off, a queue's
    bare name must be one of ours, and the upstream app's is not.
    """
    app.send_task(
        task,
        args=[dict(payload)],
        queue=kombu.Queue(queue),  # type: ignore[arg-type]  # Celery takes a Queue; its stubs say str
        producer=producer,
        serializer="json",
        ignore_result=True,
    )


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
