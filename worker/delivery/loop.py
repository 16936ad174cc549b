"""
THE delivery loop: claim → checks → build → exchange → read → settle.

One step of `drain` is short: one claim, one request with a timeout, one
commit. Within a drain, a batch's settlement is written in the transaction
of the next step's claim (or on its own when the drain ends), so a batch
costs one commit, not two; a claim is still committed before its request
goes. Two things may add requests to a step, each through the exchange
(`worker.delivery.exchange`, the one way out to a platform): what a lead
needs before it is sent (`worker.delivery.checks`: an in-doubt lead's
lookup, an Admitad program's rules), and the halves of a batch the platform
refused as a whole (Kuper's 400/422), each sent on a renewed lease. A wait
longer than `max_inline_wait` (a cooldown, a pause) is never slept out inside
a task: the claimed rows go back to due and the caller re-wakes later, so no
task runs near the broker's visibility timeout.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from worker import ledger
from worker.config import DestinationConfig
from worker.delivery import checks, retry, settle
from worker.delivery.context import WorkerContext
from worker.delivery.exchange import Exchange, NoSlot, QuotaSpent, Turn, call, read, record
from worker.delivery.limiter import next_quota_reset
from worker.leads import Delivery
from worker.ops import metrics
from worker.outcomes import Answer, Failed, LeadOutcome, Rejected, Split, Suspended, Throttled
from worker.platforms.base import Adapter

log = logging.getLogger("leadrelay.delivery")

#: beyond a request's timeout and the longest inline limiter wait, the lease a part of a
#: split batch needs left to record it
PART_RECORD_ROOM = timedelta(seconds=1)


@dataclass
class Step:
    """What one step of the loop did."""

    kind: str  #: "sent", "empty" or "deferred"
    wait: timedelta = timedelta(0)
    outcomes: Counter[str] = field(default_factory=Counter)
    requests: int = 0  #: requests that reached the wire (a throttled one counts)
    throttles: int = 0  #: requests answered 429/503 (each cooled the destination down)


@dataclass
class DrainReport:
    """What one drain of a destination did, for the task's result and the demo's progress."""

    destination: str
    requests: int = 0
    #: requests answered 429/503: each cooled the destination down for every worker
    throttles: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    #: set when the drain stopped for a wait (cooldown, pause, limiter)
    deferred: timedelta | None = None
    #: True when the time budget ran out with work left
    more: bool = False


def drain(ctx: WorkerContext, destination: str, *, budget: float | None = None) -> DrainReport:
    """Deliver due leads of one destination until none is due, a wait, or `budget` seconds."""
    deadline = time.monotonic() + (ctx.settings.drain_budget if budget is None else budget)
    with _one_connection(ctx) as held:
        return _drain(Turn.at(held, destination), deadline)


@contextmanager
def _one_connection(ctx: WorkerContext) -> Iterator[WorkerContext]:
    """
    The context with its sessions on one connection for the whole drain. Each
    transaction of a step would otherwise take a connection from the pool (a
    ping) and give it back (a rollback): two round trips per transaction that
    carry nothing. Each transaction still commits on its own.
    """
    with ctx.engine.connect() as connection:
        yield replace(ctx, sessions=sessionmaker(bind=connection, expire_on_commit=False))


#: settlements read but not yet written: each writes itself in the session it is given
Later = list[Callable[[Session], None]]


def _drain(turn: Turn, deadline: float) -> DrainReport:
    report = DrainReport(turn.dest.name)
    later: Later = []
    try:
        while True:
            step = deliver_batch(turn, later)
            report.outcomes.update(step.outcomes)
            report.requests += step.requests
            report.throttles += step.throttles
            if step.kind == "deferred":
                report.deferred = step.wait
                return report
            if step.kind == "empty":
                return report
            if time.monotonic() >= deadline:
                report.more = True
                return report
    finally:
        if later:  # the last batch's settlement, or one whose claim's transaction failed
            with turn.ctx.sessions.begin() as session:
                for write in later:
                    write(session)
            later.clear()


@contextmanager
def _carrying(ctx: WorkerContext, later: Later | None) -> Iterator[Session]:
    """
    A transaction that first writes the settlements waiting in `later`; they
    leave it only once that transaction has committed, so a failed one leaves
    them to be written again.
    """
    with ctx.sessions.begin() as session:
        for write in later or ():
            write(session)
        yield session
    if later:
        later.clear()


def deliver_batch(turn: Turn, later: Later | None = None) -> Step:
    """
    One claim, one request, one commit; for a batch the platform refuses whole,
    a request per half as well (`_split`), all within the claim's lease. With
    `later`, the settlements waiting there are written in the claim's
    transaction first, and this batch's settlement is left there in turn.
    """
    ctx, dest = turn.ctx, turn.dest
    now = ctx.clock()
    cooling = ctx.limiter.cooldown_left(dest)
    turn = turn.claim()
    # the pause is read in the claim's own transaction: one commit for both
    with _carrying(ctx, later) as session:
        blocked = _blocked_for(turn, session, now, cooling)
        if blocked is not None:
            return Step("deferred", blocked)
        batch = ledger.claim_due(
            session,
            dest.name,
            limit=dest.batch_size,
            now=now,
            lease=dest.lease,
            owner=turn.owner,
        )
    if not batch:
        return Step("empty")
    batch = checks.vet(turn, batch)
    if not batch:
        return Step("sent", outcomes=Counter(settled_before_sending=1))
    return _send_batch(turn, batch, lease_until=now + dest.lease, later=later)


def _send_batch(
    turn: Turn,
    batch: Sequence[Delivery],
    *,
    lease_until: datetime,
    part: bool = False,
    later: Later | None = None,
) -> Step:
    """
    One request for claimed deliveries: build, then the exchange (limiter slot,
    daily quota, send), read, apply. `part`: a part of a batch the platform
    refused whole; when the claim's lease (`lease_until`) has too little room
    left for it, the lease is extended first, and a part whose claim was lost
    meanwhile is not sent. `later`: where a plain settlement waits for the
    next claim's transaction (`deliver_batch`).
    """
    if part and lease_until - turn.now() < _part_room(turn):
        extended = _extend(turn, batch)
        if extended is None:  # no longer ours: the sweeper sends them, in doubt
            return Step("sent", outcomes=Counter(released=len(batch)))
        lease_until = extended
    request = turn.adapter.build_request(batch, turn.dest)
    exchange = call(turn, request, kind="send", quota=True)
    if isinstance(exchange, NoSlot):
        settle.release(turn, batch, turn.now() + exchange.wait)
        return Step("deferred", exchange.wait)
    if isinstance(exchange, QuotaSpent):
        return _suspend(turn, batch, Suspended("daily quota spent", until_quota_reset=True))
    answer = read_answer(turn.adapter, turn.dest, exchange, batch)
    return apply(turn, batch, exchange, answer, lease_until=lease_until, later=later)


def _extend(turn: Turn, part: Sequence[Delivery]) -> datetime | None:
    """
    A fresh lease on the part about to go, so a batch halved many times makes
    progress however long it takes; None when the claim was lost meanwhile.
    """
    now = turn.now()
    until = now + turn.dest.lease
    with turn.ctx.sessions.begin() as session:
        extended = ledger.extend_lease(
            session, turn.owner, [d.id for d in part], until=until, now=now
        )
    return until if extended else None


def _part_room(turn: Turn) -> timedelta:
    """
    The lease a part needs left before it is sent: the longest inline wait for
    a limiter slot, one request's timeout, and its records.
    """
    wait = turn.ctx.settings.max_inline_wait
    return timedelta(seconds=wait + turn.dest.timeout) + PART_RECORD_ROOM


def _blocked_for(
    turn: Turn, session: Session, now: datetime, cooling: timedelta
) -> timedelta | None:
    """
    How long the destination is paused (read in `session`) or cooling down
    (`cooling`, the limiter's); None when it may send. A pause comes first.
    """
    dest = turn.dest
    pause = ledger.active_pause(session, dest.name, now)
    if pause is not None:
        return (pause.until - now) if pause.until else timedelta(seconds=dest.auth_pause)
    return cooling if cooling > timedelta(0) else None


def read_answer(
    adapter: Adapter[Any], dest: DestinationConfig, exchange: Exchange, batch: Sequence[Delivery]
) -> Answer:
    """The adapter's reading of a delivery's answer: one outcome per lead, or one for all."""
    answer = read(exchange, lambda r: adapter.parse_response(r, batch, dest))
    if isinstance(answer, list) and len(answer) != len(batch):
        return Failed(f"{len(answer)} outcomes for {len(batch)} leads")
    return answer


def apply(
    turn: Turn,
    batch: Sequence[Delivery],
    exchange: Exchange,
    answer: Answer,
    *,
    lease_until: datetime,
    later: Later | None = None,
) -> Step:
    """
    Act on the answer: settle each lead, cool down / pause the destination, or
    send the halves of a batch refused whole, each on its own (within the
    claim's lease, `lease_until`). With `later`, the settlement is left there
    for the next claim's transaction instead of a transaction of its own.
    """
    if isinstance(answer, Throttled):
        return _throttle(turn, batch, exchange, answer)
    if isinstance(answer, Suspended):
        return _suspend(turn, batch, answer, exchange)
    if isinstance(answer, Split):
        return _split(turn, batch, exchange, answer, lease_until)
    dest = turn.dest
    outcomes: Sequence[LeadOutcome | Failed] = (
        [answer] * len(batch) if isinstance(answer, Failed) else answer
    )
    now = turn.now()
    follow_up = timedelta(seconds=dest.poll_interval) if turn.adapter.reconciles else None
    settlements = [
        retry.settle(d, o, dest, now, turn.ctx.rand, follow_up=follow_up)
        for d, o in zip(batch, outcomes, strict=True)
    ]
    results = [(s.delivery_id, s.outcome, s.detail) for s in settlements]

    def write(session: Session) -> None:
        settle.write(turn, session, batch, settlements, now)
        record(turn, session, exchange, results)

    if later is None:
        with turn.ctx.sessions.begin() as session:
            write(session)
    else:
        later.append(write)
    counts = Counter(str(s.state) for s in settlements)
    metrics.count_outcomes(dest.name, counts)
    _sent(turn, exchange, "batch sent", "delivery.sent", len(batch), outcomes=dict(counts))
    return Step("sent", outcomes=counts, requests=1)


def _sent(
    turn: Turn, exchange: Exchange, message: str, event: str, leads: int, **more: object
) -> None:
    """The request's log line (the exchange timed and counted the request)."""
    status = exchange.response.status_code if exchange.response is not None else None
    log.info(
        message,
        extra={
            "event": event,
            "destination": turn.dest.name,
            "leads": leads,
            "status": status,
            "ms": exchange.elapsed_ms,
            **more,
        },
    )


def _split(
    turn: Turn,
    batch: Sequence[Delivery],
    exchange: Exchange,
    answer: Split,
    lease_until: datetime,
) -> Step:
    """
    The platform refused the batch as a whole without saying which lead: record
    that, then send each half on its own request (halving again where a half is
    refused whole), so only the leads the platform itself refuses end rejected.

    The halves go one after the other, each on a lease renewed before it goes
    when too little is left. When one is deferred (no limiter slot, a cooldown,
    a pause) or its claim was lost meanwhile, the half not yet sent goes back
    with it, due again: nothing is lost, and nothing is sent under a claim
    that may have ended.
    """
    if len(batch) < 2:  # nothing to halve: a one-lead refusal is that lead's own
        refused: list[LeadOutcome] = [Rejected(answer.reason)] * len(batch)
        return apply(turn, batch, exchange, refused, lease_until=lease_until)
    with turn.ctx.sessions.begin() as session:
        record(turn, session, exchange, [(d.id, "split", answer.reason) for d in batch])
    _sent(turn, exchange, "batch refused whole; sending its halves", "delivery.split", len(batch))
    step = Step("sent", requests=1)
    middle = len(batch) // 2
    first, second = batch[:middle], batch[middle:]
    done = _send_part(turn, first, lease_until, step)
    if done is not None:
        settle.release(turn, second, done)
        if step.kind == "sent":  # the claim was lost: the sweeper puts them back
            step.outcomes["released"] += len(second)
        return step
    _send_part(turn, second, lease_until, step)
    return step


def _send_part(
    turn: Turn, part: Sequence[Delivery], lease_until: datetime, step: Step
) -> datetime | None:
    """
    Send one part of a split batch, adding what it did to `step`. None when the
    loop may go on to the next part; otherwise when the parts not yet sent are
    due again: at once when the claim was lost or a pause holds the
    destination, after the wait when a limiter slot or a cooldown did.
    """
    sub = _send_batch(turn, part, lease_until=lease_until, part=True)
    step.outcomes.update(sub.outcomes)
    step.requests += sub.requests
    step.throttles += sub.throttles
    now = turn.now()
    if sub.kind == "deferred":
        step.kind, step.wait = "deferred", sub.wait
        return now if sub.outcomes["suspended"] else now + sub.wait
    return now if sub.outcomes["released"] else None


def _throttle(
    turn: Turn,
    batch: Sequence[Delivery],
    exchange: Exchange,
    answer: Throttled,
) -> Step:
    dest = turn.dest
    wait = answer.retry_after or retry.backoff(1, dest, turn.ctx.rand)
    turn.ctx.limiter.cool_down(dest, wait)
    metrics.count_throttle(dest.name, wait.total_seconds())
    now = turn.now()
    with turn.ctx.sessions.begin() as session:
        ledger.release(session, turn.owner, [d.id for d in batch], now + wait, now)
        record(turn, session, exchange, [(d.id, "throttled", answer.reason) for d in batch])
    log.warning(
        "destination cooling down",
        extra={
            "event": "delivery.throttled",
            "destination": dest.name,
            "wait_s": wait.total_seconds(),
        },
    )
    return Step("deferred", wait, Counter(throttled=len(batch)), requests=1, throttles=1)


def _suspend(
    turn: Turn,
    batch: Sequence[Delivery],
    answer: Suspended,
    exchange: Exchange | None = None,
) -> Step:
    dest = turn.dest
    now = turn.now()
    until = answer.until
    if until is None:
        until = (
            next_quota_reset(dest, now)
            if answer.until_quota_reset
            else now + timedelta(seconds=dest.auth_pause)
        )
    kind = "quota" if answer.until_quota_reset else "auth"
    metrics.count_pause(dest.name, kind)
    with turn.ctx.sessions.begin() as session:
        ledger.set_pause(session, dest.name, kind=kind, reason=answer.reason, now=now, until=until)
        # due at once: the pause is what holds them, so `leadrelay resume` frees them at once
        ledger.release(session, turn.owner, [d.id for d in batch], now, now)
        if exchange is not None:
            record(turn, session, exchange, [(d.id, "suspended", answer.reason) for d in batch])
    log.error(
        "destination paused",
        extra={
            "event": "delivery.suspended",
            "destination": dest.name,
            "kind": kind,
            "reason": answer.reason,
            "until": until.isoformat(),
        },
    )
    return Step("deferred", until - now, Counter(suspended=len(batch)), int(exchange is not None))


__all__ = ["DrainReport", "Step", "deliver_batch", "drain"]
