"""
THE delivery loop: claim → limiter → build → send → parse → record. The only
place that talks to a platform, once, for every platform.

One step of `drain` is short: one claim, one request with a timeout, one
commit. Two things may add requests to a step, each under the limiter: the
lookups and prerequisites a lead needs before it is sent (an in-doubt lead's
lookup, an Admitad program's rules), and the halves of a batch the platform
refused as a whole (Kuper's 400/422), each sent on a renewed lease. A wait
longer than `max_inline_wait` (a cooldown, a pause) is never slept out inside
a task: the claimed rows go back to due and the caller re-wakes later, so no
task runs near the broker's visibility timeout.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import httpx

from worker import ledger, metrics, retry
from worker.config import DestinationConfig
from worker.context import WorkerContext
from worker.errors import AuthRefused, TokenUnavailable
from worker.leads import Delivery, LeadState
from worker.limiter import Grant, next_quota_reset
from worker.outcomes import (
    Answer,
    Failed,
    LeadOutcome,
    Narrowed,
    NotSeen,
    Rejected,
    Split,
    Suspended,
    Throttled,
)
from worker.platforms import adapter_for
from worker.platforms.base import Adapter, FetchFailure, Prerequisite
from worker.redact import redact_answer, redact_request, redact_text

log = logging.getLogger("leadrelay.delivery")

#: the most pages one lookup reads (SalesMan: 200 records each), all within one lease
LOOKUP_PAGES = 5
#: beyond a request's timeout, the lease a part of a split batch needs left to record it
PART_RECORD_ROOM = timedelta(seconds=1)


@dataclass
class Step:
    """What one step of the loop did."""

    kind: str  #: "sent", "empty" or "deferred"
    wait: timedelta = timedelta(0)
    outcomes: Counter[str] = field(default_factory=Counter)
    requests: int = 0  #: requests that reached the wire (a throttled one counts)


@dataclass
class DrainReport:
    """What one drain of a destination did, for the task's log and the demo's progress."""

    destination: str
    requests: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    #: set when the drain stopped for a wait (cooldown, pause, limiter)
    deferred: timedelta | None = None
    #: True when the time budget ran out with work left
    more: bool = False


@dataclass
class Exchange:
    """One HTTP request and what came back (or why nothing did)."""

    request: httpx.Request
    at: datetime
    response: httpx.Response | None = None
    error: str = ""
    in_doubt: bool = False
    elapsed_ms: int = 0
    auth_refused: str = ""


def drain(ctx: WorkerContext, destination: str, *, budget: float | None = None) -> DrainReport:
    """Deliver due leads of one destination until none is due, a wait, or `budget` seconds."""
    dest = ctx.settings.destination(destination)
    adapter = adapter_for(dest)
    deadline = time.monotonic() + (ctx.settings.drain_budget if budget is None else budget)
    report = DrainReport(destination)
    while True:
        step = deliver_batch(ctx, dest, adapter)
        report.outcomes.update(step.outcomes)
        report.requests += step.requests
        if step.kind == "deferred":
            report.deferred = step.wait
            return report
        if step.kind == "empty":
            return report
        if time.monotonic() >= deadline:
            report.more = True
            return report


def deliver_batch(ctx: WorkerContext, dest: DestinationConfig, adapter: Adapter[Any]) -> Step:
    """
    One claim, one request, one commit; for a batch the platform refuses whole,
    a request per half as well (`_split`), all within the claim's lease.
    """
    now = ctx.clock()
    blocked = _blocked_for(ctx, dest, now)
    if blocked is not None:
        return Step("deferred", blocked)
    owner = uuid.uuid4().hex
    with ctx.sessions.begin() as session:
        batch = ledger.claim_due(
            session,
            dest.name,
            limit=dest.batch_size,
            now=now,
            lease=dest.lease,
            owner=owner,
        )
    if not batch:
        return Step("empty")
    if not adapter.deduplicates_for(dest):
        batch = _resolve_doubts(ctx, dest, adapter, owner, batch)
    batch = _check(ctx, dest, adapter, owner, batch)
    if not batch:
        return Step("sent", outcomes=Counter(settled_before_sending=1))
    return _send_batch(ctx, dest, adapter, owner, batch, lease_until=now + dest.lease)


def _send_batch(
    ctx: WorkerContext,
    dest: DestinationConfig,
    adapter: Adapter[Any],
    owner: str,
    batch: Sequence[Delivery],
    *,
    lease_until: datetime,
    part: bool = False,
) -> Step:
    """
    One request for claimed deliveries: build, limiter slot, daily quota, send,
    read, apply. `part`: a part of a batch the platform refused whole; when the
    claim's lease (`lease_until`) has too little room left for it, the lease
    is extended first, and a part whose claim was lost meanwhile is not sent.
    """
    # Everything before the send happens before the grant: the platform counts arrivals,
    # so the time between our grant and the request leaving must be as short as it can be.
    request = adapter.build_request(batch, dest)
    grant = _slot(ctx, dest)
    if not grant.granted:
        _release(ctx, owner, batch, ctx.clock() + grant.wait)
        return Step("deferred", grant.wait)
    try:
        if part and lease_until - ctx.clock() < _part_room(dest):
            extended = _extend(ctx, dest, owner, batch)
            if extended is None:  # no longer ours: the sweeper sends them, in doubt
                return Step("sent", outcomes=Counter(released=len(batch)))
            lease_until = extended
        if not ctx.limiter.spend_quota(dest, ctx.clock()):
            return _suspend(
                ctx,
                dest,
                owner,
                batch,
                Suspended("daily quota spent", until_quota_reset=True),
            )
        exchange = send(ctx, dest, adapter, request)
    finally:
        ctx.limiter.release(dest, grant.holder)
    answer = read_answer(adapter, dest, exchange, batch)
    return apply(ctx, dest, adapter, owner, batch, exchange, answer, lease_until=lease_until)


def _extend(
    ctx: WorkerContext, dest: DestinationConfig, owner: str, part: Sequence[Delivery]
) -> datetime | None:
    """
    A fresh lease on the part about to go, so a batch halved many times makes
    progress however long it takes; None when the claim was lost meanwhile.
    """
    now = ctx.clock()
    until = now + dest.lease
    with ctx.sessions.begin() as session:
        extended = ledger.extend_lease(session, owner, [d.id for d in part], until=until, now=now)
    return until if extended else None


def _part_room(dest: DestinationConfig) -> timedelta:
    """The lease a part needs left before it is sent: one request's timeout and its records."""
    return timedelta(seconds=dest.timeout) + PART_RECORD_ROOM


def _blocked_for(ctx: WorkerContext, dest: DestinationConfig, now: datetime) -> timedelta | None:
    """How long the destination is paused or cooling down; None when it may send."""
    with ctx.sessions.begin() as session:
        pause = ledger.active_pause(session, dest.name, now)
        if pause is not None:
            return (pause.until - now) if pause.until else timedelta(seconds=dest.auth_pause)
    cooling = ctx.limiter.cooldown_left(dest)
    return cooling if cooling > timedelta(0) else None


def _slot(ctx: WorkerContext, dest: DestinationConfig) -> Grant:
    """A limiter slot, sleeping for it only while each wait is short."""
    while True:
        grant = ctx.limiter.acquire(dest)
        if grant.granted or grant.wait.total_seconds() > ctx.settings.max_inline_wait:
            return grant
        time.sleep(grant.wait.total_seconds())


def send(
    ctx: WorkerContext,
    dest: DestinationConfig,
    adapter: Adapter[Any],
    request: httpx.Request,
) -> Exchange:
    """Send one request with the destination's timeout; transport errors become an Exchange."""
    request.extensions["timeout"] = httpx.Timeout(
        dest.timeout, connect=min(3.0, dest.timeout)
    ).as_dict()
    exchange = Exchange(request=request, at=ctx.clock())
    started = time.monotonic()
    try:
        auth = adapter.auth(dest, ctx.cache)
        response = ctx.http.send(request, auth=auth) if auth else ctx.http.send(request)
        response.read()
        exchange.response = response
    except AuthRefused as exc:
        exchange.error = exchange.auth_refused = str(exc)
    except TokenUnavailable as exc:  # the request itself never left: not in doubt
        exchange.error = f"not sent: {exc}"
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        exchange.error = f"not sent: {type(exc).__name__}"
    except httpx.HTTPError as exc:
        exchange.error = f"answer lost: {type(exc).__name__}"
        exchange.in_doubt = True
    except Exception as exc:  # an auth flow's own failure, never a reason to kill the task
        log.exception(
            "request failed",
            extra={"event": "delivery.error", "destination": dest.name},
        )
        exchange.error = f"request failed: {type(exc).__name__}"
    exchange.elapsed_ms = int((time.monotonic() - started) * 1000)
    return exchange


def send_when_allowed(
    ctx: WorkerContext, dest: DestinationConfig, adapter: Adapter[Any], request: httpx.Request
) -> Exchange | None:
    """One request under the destination's limiter; None when no slot came within a short wait."""
    grant = _slot(ctx, dest)
    if not grant.granted:
        return None
    try:
        return send(ctx, dest, adapter, request)
    finally:
        ctx.limiter.release(dest, grant.holder)


def read_answer(
    adapter: Adapter[Any],
    dest: DestinationConfig,
    exchange: Exchange,
    batch: Sequence[Delivery],
) -> Answer:
    """The adapter's reading of the exchange; an unreadable answer is a Failed, not a crash."""
    if exchange.auth_refused:
        return Suspended(exchange.auth_refused)
    if exchange.response is None:
        return Failed(exchange.error, in_doubt=exchange.in_doubt)
    try:
        answer = adapter.parse_response(exchange.response, batch, dest)
    except Exception as exc:
        log.exception(
            "unreadable answer",
            extra={"event": "delivery.unreadable", "destination": dest.name},
        )
        return Failed(f"could not read the answer: {type(exc).__name__}")
    if isinstance(answer, list) and len(answer) != len(batch):
        return Failed(f"{len(answer)} outcomes for {len(batch)} leads")
    return answer


def apply(
    ctx: WorkerContext,
    dest: DestinationConfig,
    adapter: Adapter[Any],
    owner: str,
    batch: Sequence[Delivery],
    exchange: Exchange,
    answer: Answer,
    *,
    lease_until: datetime,
) -> Step:
    """
    Act on the answer: settle each lead, cool down / pause the destination, or
    send the halves of a batch refused whole, each on its own (within the
    claim's lease, `lease_until`).
    """
    if isinstance(answer, Throttled):
        return _throttle(ctx, dest, owner, batch, exchange, answer)
    if isinstance(answer, Suspended):
        return _suspend(ctx, dest, owner, batch, answer, exchange)
    if isinstance(answer, Split):
        return _split(ctx, dest, adapter, owner, batch, exchange, answer, lease_until)
    outcomes: Sequence[LeadOutcome | Failed] = (
        [answer] * len(batch) if isinstance(answer, Failed) else answer
    )
    now = ctx.clock()
    follow_up = timedelta(seconds=dest.poll_interval) if adapter.reconciles else None
    settlements = [
        retry.settle(d, o, dest, now, ctx.rand, follow_up=follow_up)
        for d, o in zip(batch, outcomes, strict=True)
    ]
    with ctx.sessions.begin() as session:
        ledger.settle(session, owner, settlements, now)
        _record(
            ctx,
            session,
            dest,
            "send",
            exchange,
            [(s.delivery_id, s.outcome, s.detail) for s in settlements],
        )
        advance_stages(session, adapter, dest, batch, settlements, now)
    counts = Counter(str(s.state) for s in settlements)
    metrics.count_outcomes(dest.name, counts)
    metrics.observe_request(dest.name, exchange.elapsed_ms / 1000)
    log.info(
        "batch sent",
        extra={
            "event": "delivery.sent",
            "destination": dest.name,
            "leads": len(batch),
            "status": exchange.response.status_code if exchange.response else None,
            "ms": exchange.elapsed_ms,
            "outcomes": dict(counts),
        },
    )
    return Step("sent", outcomes=counts, requests=1)


def _split(
    ctx: WorkerContext,
    dest: DestinationConfig,
    adapter: Adapter[Any],
    owner: str,
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
        return apply(ctx, dest, adapter, owner, batch, exchange, refused, lease_until=lease_until)
    with ctx.sessions.begin() as session:
        results = [(d.id, "split", answer.reason) for d in batch]
        _record(ctx, session, dest, "send", exchange, results)
    metrics.observe_request(dest.name, exchange.elapsed_ms / 1000)
    log.info(
        "batch refused whole; sending its halves",
        extra={
            "event": "delivery.split",
            "destination": dest.name,
            "leads": len(batch),
            "status": exchange.response.status_code if exchange.response else None,
            "ms": exchange.elapsed_ms,
        },
    )
    step = Step("sent", requests=1)
    first, second = _halves(batch)
    done = _send_part(ctx, dest, adapter, owner, first, lease_until, step)
    if done is not None:
        _release(ctx, owner, second, done)
        if step.kind == "sent":  # the claim was lost: the sweeper puts them back
            step.outcomes["released"] += len(second)
        return step
    _send_part(ctx, dest, adapter, owner, second, lease_until, step)
    return step


def _halves(batch: Sequence[Delivery]) -> tuple[Sequence[Delivery], Sequence[Delivery]]:
    middle = len(batch) // 2
    return batch[:middle], batch[middle:]


def _send_part(
    ctx: WorkerContext,
    dest: DestinationConfig,
    adapter: Adapter[Any],
    owner: str,
    part: Sequence[Delivery],
    lease_until: datetime,
    step: Step,
) -> datetime | None:
    """
    Send one part of a split batch, adding what it did to `step`. None when the
    loop may go on to the next part; otherwise when the parts not yet sent are
    due again: at once when the claim was lost or a pause holds the
    destination, after the wait when a limiter slot or a cooldown did.
    """
    sub = _send_batch(ctx, dest, adapter, owner, part, lease_until=lease_until, part=True)
    step.outcomes.update(sub.outcomes)
    step.requests += sub.requests
    now = ctx.clock()
    if sub.kind == "deferred":
        step.kind, step.wait = "deferred", sub.wait
        return now if sub.outcomes["suspended"] else now + sub.wait
    return now if sub.outcomes["released"] else None


def advance_stages(
    session: Any,
    adapter: Adapter[Any],
    dest: DestinationConfig,
    batch: Sequence[Delivery],
    settlements: Sequence[ledger.Settlement],
    now: datetime,
) -> int:
    """
    Release the next stage of staged leads whose stage is decided; returns how
    many were released due now (the caller wakes the destination for them).
    Asked after every settlement of a stage: releasing is idempotent (only a
    held stage moves).
    """
    due_now = 0
    for delivery, settlement in zip(batch, settlements, strict=True):
        if delivery.stage <= 0:
            continue
        due = adapter.next_stage_due(delivery, dest, settlement.state, settlement.data, now)
        if due is not None and ledger.release_next_stage(
            session, delivery.lead_id, delivery.stage, due, now
        ):
            due_now += due <= now
    return due_now


def _throttle(
    ctx: WorkerContext,
    dest: DestinationConfig,
    owner: str,
    batch: Sequence[Delivery],
    exchange: Exchange | None,
    answer: Throttled,
) -> Step:
    wait = answer.retry_after or retry.backoff(1, dest, ctx.rand)
    ctx.limiter.cool_down(dest, wait)
    metrics.count_throttle(dest.name, wait.total_seconds())
    now = ctx.clock()
    with ctx.sessions.begin() as session:
        ledger.release(session, owner, [d.id for d in batch], now + wait, now)
        if exchange is not None:
            _record(
                ctx,
                session,
                dest,
                "send",
                exchange,
                [(d.id, "throttled", answer.reason) for d in batch],
            )
    log.warning(
        "destination cooling down",
        extra={
            "event": "delivery.throttled",
            "destination": dest.name,
            "wait_s": wait.total_seconds(),
        },
    )
    return Step("deferred", wait, Counter(throttled=len(batch)), int(exchange is not None))


def _suspend(
    ctx: WorkerContext,
    dest: DestinationConfig,
    owner: str,
    batch: Sequence[Delivery],
    answer: Suspended,
    exchange: Exchange | None = None,
) -> Step:
    now = ctx.clock()
    until = answer.until
    if until is None:
        until = (
            next_quota_reset(dest, now)
            if answer.until_quota_reset
            else now + timedelta(seconds=dest.auth_pause)
        )
    kind = "quota" if answer.until_quota_reset else "auth"
    metrics.count_pause(dest.name, kind)
    with ctx.sessions.begin() as session:
        ledger.set_pause(session, dest.name, kind=kind, reason=answer.reason, now=now, until=until)
        # due at once: the pause is what holds them, so `leadrelay resume` frees them at once
        ledger.release(session, owner, [d.id for d in batch], now, now)
        if exchange is not None:
            _record(
                ctx,
                session,
                dest,
                "send",
                exchange,
                [(d.id, "suspended", answer.reason) for d in batch],
            )
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


def _release(ctx: WorkerContext, owner: str, batch: Sequence[Delivery], due: datetime) -> None:
    with ctx.sessions.begin() as session:
        ledger.release(session, owner, [d.id for d in batch], due, ctx.clock())


def _check(
    ctx: WorkerContext,
    dest: DestinationConfig,
    adapter: Adapter[Any],
    owner: str,
    batch: Sequence[Delivery],
) -> list[Delivery]:
    """
    Settle leads that break a rule only the platform's own settings know, send
    the rest (narrowed where the adapter leaves part of a lead out). A lead
    whose prerequisites got no limiter slot goes back, due again shortly.
    """
    keep: list[Delivery] = []
    for delivery in batch:
        fetched = _prerequisites(ctx, dest, adapter, adapter.prerequisites(delivery, dest))
        if fetched is None:
            _release(ctx, owner, [delivery], ctx.clock() + timedelta(seconds=1))
            continue
        answers, failed = fetched
        verdict = adapter.check(delivery, dest, answers, failed)
        if verdict is None:
            keep.append(delivery)
            continue
        if isinstance(verdict, Narrowed):
            keep.append(replace(delivery, data={**delivery.data, **verdict.data}))
            continue
        now = ctx.clock()
        settlement = retry.settle(delivery, verdict, dest, now, ctx.rand)
        with ctx.sessions.begin() as session:
            ledger.settle(session, owner, [settlement], now)
            advance_stages(session, adapter, dest, [delivery], [settlement], now)
    return keep


def _prerequisites(
    ctx: WorkerContext,
    dest: DestinationConfig,
    adapter: Adapter[Any],
    needs: Sequence[Prerequisite],
) -> tuple[dict[str, str], dict[str, FetchFailure]] | None:
    """
    The prerequisites' answers by key, from the shared cache or fetched now,
    and those that could not be fetched (key → why); None when no limiter slot
    came within a short wait (nothing is known yet: ask again shortly).
    """
    answers: dict[str, str] = {}
    failed: dict[str, FetchFailure] = {}
    for need in needs:
        cached = ctx.cache.get(need.key)
        if cached is None:
            exchange = send_when_allowed(ctx, dest, adapter, need.request)
            if exchange is None:
                return None
            response = exchange.response
            if response is None or response.status_code != 200:
                failed[need.key] = _fetch_failure(exchange)
                continue
            cached = response.text
            ctx.cache.set(need.key, cached, need.ttl)
        answers[need.key] = cached
    return answers, failed


def _fetch_failure(exchange: Exchange) -> FetchFailure:
    """Why a prerequisite's request brought no answer to keep, and whether that may pass."""
    response = exchange.response
    if response is None:  # transport trouble may pass; a refused token does not
        return FetchFailure(exchange.error, passing=not exchange.auth_refused)
    status = response.status_code
    return FetchFailure(f"HTTP {status}", passing=status >= 500 or status == 429)


def _resolve_doubts(
    ctx: WorkerContext,
    dest: DestinationConfig,
    adapter: Adapter[Any],
    owner: str,
    batch: Sequence[Delivery],
) -> list[Delivery]:
    """For a platform without deduplication: look up in-doubt leads before sending them again."""
    keep: list[Delivery] = []
    for delivery in batch:
        if not delivery.in_doubt:
            keep.append(delivery)
            continue
        outcome = _look_up(ctx, dest, adapter, owner, delivery)
        if outcome == "send":
            keep.append(delivery)
    return keep


def _look_up(
    ctx: WorkerContext,
    dest: DestinationConfig,
    adapter: Adapter[Any],
    owner: str,
    delivery: Delivery,
) -> str:
    """
    Whether an in-doubt delivery is at the platform: "found" (settled), "send"
    (not there: send it again), or "deferred" (no answer yet: released, asked later).
    Pages on while the adapter says a page did not reach far enough, up to LOOKUP_PAGES.
    """
    now = ctx.clock()
    for page in range(LOOKUP_PAGES):
        request = adapter.build_lookup(delivery, dest, now, page)
        if request is None:
            return "send"
        exchange = send_when_allowed(ctx, dest, adapter, request)
        if exchange is None:
            wait = timedelta(seconds=ctx.settings.max_inline_wait)
            _release(ctx, owner, [delivery], now + wait)
            return "deferred"
        found: LeadOutcome | NotSeen | None = None
        failed = (
            exchange.response is None or adapter.throttle_or_failure(exchange.response) is not None
        )
        if not failed and exchange.response is not None:
            try:
                found = adapter.parse_lookup(exchange.response, delivery, dest)
            except Exception:
                failed = True
        with ctx.sessions.begin() as session:
            if failed:
                wait = retry.backoff(delivery.attempt, dest, ctx.rand)
                ledger.release(session, owner, [delivery.id], now + wait, now)
                result = (delivery.id, "lookup_failed", exchange.error)
                _record(ctx, session, dest, "lookup", exchange, [result])
                return "deferred"
            if isinstance(found, NotSeen) and page + 1 < LOOKUP_PAGES:
                result = (delivery.id, "not_on_page", f"not on page {page}; looking further")
                _record(ctx, session, dest, "lookup", exchange, [result])
                continue
            if found is None or isinstance(found, NotSeen):
                why = (
                    "not at the platform; sending again"
                    if found is None
                    else f"not in the newest {LOOKUP_PAGES} pages; sending again, in doubt"
                )
                _record(ctx, session, dest, "lookup", exchange, [(delivery.id, "not_found", why)])
                return "send"
            settlement = retry.settle(delivery, found, dest, now, ctx.rand)
            ledger.settle(session, owner, [settlement], now)
            result = (delivery.id, "found", settlement.detail)
            _record(ctx, session, dest, "lookup", exchange, [result])
        return "found"
    return "send"  # pragma: no cover - the last page always returns above


def _record(
    ctx: WorkerContext,
    session: Any,
    dest: DestinationConfig,
    kind: str,
    exchange: Exchange,
    results: list[tuple[int, str, str]],
) -> None:
    """Write the exchange (redacted) and what it meant for each delivery."""
    response = exchange.response
    ledger.record_attempt(
        session,
        ledger.AttemptRecord(
            destination=dest.name,
            kind=kind,
            at=exchange.at,
            request=redact_request(exchange.request, ctx.secrets),
            status_code=response.status_code if response is not None else None,
            answer=redact_answer(response, ctx.secrets) if response is not None else "",
            error=redact_text(exchange.error, ctx.secrets),
            elapsed_ms=exchange.elapsed_ms,
        ),
        [(d, o, redact_text(t, ctx.secrets)) for d, o, t in results],
    )


def poll(ctx: WorkerContext, destination: str, *, limit: int | None = None) -> Counter[str]:
    """Ask the platform about leads it decides later; settle those whose status is final."""
    from worker import polling

    return polling.poll(ctx, ctx.settings.destination(destination), limit=limit)


__all__ = ["DrainReport", "LeadState", "drain", "poll"]
