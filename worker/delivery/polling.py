"""
Status polling: asking a platform about leads it decides later (Admitad's
applications) or reconciling what it did with delivered ones (SalesMan).

A polled delivery's `due_at` is its next look. Each look is one request under
the destination's limiter, like a send; a lead past `poll_horizon` ends
`expired`, and one waiting for an SMS code past its due time expires too.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from worker import ledger
from worker.config import DestinationConfig
from worker.delivery import settle
from worker.delivery.context import WorkerContext
from worker.delivery.exchange import Exchange, Turn, call, read, record
from worker.leads import FINAL_STATES, POLL_STATES, Delivery, LeadState
from worker.outcomes import NotSeen, PollAnswer, Settlement, StatusUpdate
from worker.platforms.base import Adapter

log = logging.getLogger("leadrelay.polling")

#: the most leads one pass asks about one by one, when a batch's answer missed them
ALONE_PER_PASS = 20
#: the most pages of a list one pass reads (an adapter says where its list ends)
MAX_PAGES = 50
#: answers that mean "slower": counted as a pass's throttles
THROTTLE_STATUSES = (429, 503)


class PollReport(Counter[str]):
    """
    What one polling pass did: deliveries by new state, and `next_stage_now`
    when a decided stage made the next one due now (a Counter, as callers
    compare it); beside the counts, the requests it made and how many of
    them were answered 429/503.
    """

    requests: int = 0
    throttles: int = 0


def poll(ctx: WorkerContext, destination: str, *, limit: int | None = None) -> PollReport:
    """
    One polling pass over a destination's due deliveries (at most `limit`, by
    default as many as the adapter reads in one pass), as a `PollReport`.
    """
    turn = Turn.at(ctx, destination)
    dest, adapter = turn.dest, turn.adapter
    limit = adapter.poll_batch if limit is None else limit
    now = ctx.clock()
    with ctx.sessions.begin() as session:
        batch = ledger.claim_due(
            session,
            dest.name,
            limit=limit,
            now=now,
            lease=dest.lease,
            owner=turn.owner,
            states=POLL_STATES,
            keep_state=True,
        )
    if not batch:
        return PollReport()
    expired = [d for d in batch if _expired(d, dest, now)]
    live = [d for d in batch if d not in expired]
    settlements = [_expire(d, dest, now) for d in expired]
    asked: list[tuple[Exchange, set[int]]] = []
    if live:
        updates = _ask(turn, live, asked)
        settlements += [
            _after_look(adapter, d, u, dest, now) for d, u in zip(live, updates, strict=True)
        ]
    by_id = {d.id: d for d in batch}
    with ctx.sessions.begin() as session:
        released = settle.write(
            turn, session, [by_id[s.delivery_id] for s in settlements], settlements, now
        )
        for exchange, about in asked:
            results = [
                (s.delivery_id, s.outcome, s.detail)
                for s in settlements
                if s.outcome and s.delivery_id in about
            ]
            record(turn, session, exchange, results)
    report = PollReport(str(s.state) for s in settlements)
    if released:
        report["next_stage_now"] = released
    report.requests = len(asked)
    report.throttles = sum(
        e.response is not None and e.response.status_code in THROTTLE_STATUSES for e, _ in asked
    )
    return report


def _expired(delivery: Delivery, dest: DestinationConfig, now: datetime) -> bool:
    if delivery.state == LeadState.WAITING_CODE:
        return True  # its due time was the code's deadline
    return now - delivery.created_at >= dest.poll_horizon or _code_lapsed(delivery, dest, now)


def _code_lapsed(delivery: Delivery, dest: DestinationConfig, now: datetime) -> bool:
    """
    A confirmed application that still waits for verification a poll interval
    after its code expired: no right code came, and none can come now.
    """
    until = delivery.data.get("code_until")
    if delivery.state != LeadState.AWAITING_STATUS or not isinstance(until, str):
        return False
    if delivery.data.get("responses"):
        return False
    return now >= datetime.fromisoformat(until) + timedelta(seconds=dest.poll_interval)


def _expire(delivery: Delivery, dest: DestinationConfig, now: datetime) -> Settlement:
    if delivery.state == LeadState.DELIVERED:  # reconciliation stops; the lead stays delivered
        return Settlement(
            delivery_id=delivery.id,
            state=LeadState.DELIVERED,
            attempts=delivery.attempt - 1,
            due_at=None,
            detail="status follow-up ended",
            external_id=delivery.external_id,
            data=dict(delivery.data),
        )
    if delivery.state == LeadState.WAITING_CODE:
        why = "no SMS code in time"
    elif _code_lapsed(delivery, dest, now):
        why = "no right SMS code in time: the application still waits for verification"
    else:
        why = "no final status within the polling horizon"
    return Settlement(
        delivery_id=delivery.id,
        state=LeadState.EXPIRED,
        attempts=delivery.attempt - 1,
        due_at=None,
        detail=why,
        external_id=delivery.external_id,
        data=dict(delivery.data),
        outcome="expired",
    )


class _Unasked:
    """A look that never reached the platform: no slot, a failed or unreadable answer."""


UNASKED = _Unasked()
#: what one look says of one delivery
Look = PollAnswer | _Unasked


def _ask(
    turn: Turn,
    batch: Sequence[Delivery],
    asked: list[tuple[Exchange, set[int]]],
) -> list[Look]:
    """
    What the platform says of each delivery. One request for the batch, then
    the next pages for those it did not reach, for as long as the adapter has
    a page to offer (`build_poll(…, page=n)` is None past the last), then one
    request each (at most ALONE_PER_PASS) for those no page reached. Every
    exchange is appended to `asked` with the deliveries it was about. A
    delivery no answer covered stays NotSeen; one whose request failed, UNASKED.
    """
    answers = _ask_once(turn, batch, asked) or [UNASKED] * len(batch)
    page = 1
    while page < MAX_PAGES and len(unseen := _unseen(answers, paging=True)) > 1:
        more = _ask_once(turn, [batch[i] for i in unseen], asked, page=page)
        if more is None:
            break
        for i, answer in zip(unseen, more, strict=True):
            answers[i] = answer
        page += 1
    if len(batch) > 1:
        for i in _unseen(answers)[:ALONE_PER_PASS]:
            alone = _ask_once(turn, [batch[i]], asked)
            answers[i] = alone[0] if alone is not None else UNASKED
    return answers


def _unseen(answers: Sequence[Look], *, paging: bool = False) -> list[int]:
    """Which answers did not cover their delivery (`paging`: and a later page may)."""
    return [i for i, a in enumerate(answers) if isinstance(a, NotSeen) and not (paging and a.last)]


def _ask_once(
    turn: Turn,
    batch: Sequence[Delivery],
    asked: list[tuple[Exchange, set[int]]],
    *,
    page: int = 0,
) -> list[Look] | None:
    """
    One poll request about `batch` (page `page` of a list); the answer per
    delivery, UNASKED each when the request failed, or None when the adapter
    has no such page.
    """
    nothing: list[Look] = [UNASKED] * len(batch)
    request = turn.adapter.build_poll(batch, turn.dest, turn.now(), page)
    if request is None:
        return None if page else nothing
    exchange = call(turn, request, kind="poll")
    if not isinstance(exchange, Exchange):
        return nothing
    asked.append((exchange, {d.id for d in batch}))
    answer = read(exchange, lambda r: turn.adapter.parse_poll(r, batch, turn.dest))
    # an answer we cannot read, or none, is a look without news, never a dead task
    if not isinstance(answer, Sequence) or len(answer) != len(batch):
        return nothing
    return list(answer)


def _after_look(
    adapter: Adapter[Any],
    delivery: Delivery,
    look: Look,
    dest: DestinationConfig,
    now: datetime,
) -> Settlement:
    """
    The delivery after one look: its new state and data (`looks` counts the
    looks that reached it in its current state: one that did not leaves the
    cadence where it was), and the next look when it is not final, as soon as
    the adapter asks (an undecided Admitad stage) or `poll_interval`.
    """
    attempts = delivery.attempt - 1  # a look is not a send
    update = look if isinstance(look, StatusUpdate) else None
    state = delivery.state if update is None else update.state
    looks = int(delivery.data.get("looks", 0)) if state == delivery.state else 0
    seen = look is None or update is not None
    data = {**delivery.data, **(update.data if update else {}), "looks": looks + seen}
    next_look = now + adapter.next_look(delivery, dest, state, data)
    if update is None:
        return Settlement(
            delivery_id=delivery.id,
            state=state,
            attempts=attempts,
            due_at=next_look,
            detail="",
            external_id=delivery.external_id,
            data=data,
        )
    due = None if state in FINAL_STATES and state != LeadState.DELIVERED else next_look
    outcome = (
        "status"
        if update.state != delivery.state or update.data != delivery.data.get("status")
        else ""
    )
    return Settlement(
        delivery_id=delivery.id,
        state=update.state,
        attempts=attempts,
        due_at=due,
        detail=update.detail,
        external_id=delivery.external_id,
        data=data,
        outcome=outcome,
    )
