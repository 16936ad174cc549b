"""
Status polling: asking a platform about leads it decides later (Admitad's
applications) or reconciling what it did with delivered ones (SalesMan).

A polled delivery's `due_at` is its next look. Each look is one request under
the destination's limiter, like a send; a lead past `poll_horizon` ends
`expired`, and one waiting for an SMS code past its due time expires too.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from worker import delivery as loop
from worker import ledger
from worker.config import DestinationConfig
from worker.context import WorkerContext
from worker.leads import FINAL_STATES, POLL_STATES, Delivery, LeadState
from worker.ledger.store import Settlement
from worker.outcomes import NotSeen, PollAnswer, StatusUpdate
from worker.platforms import adapter_for
from worker.platforms.base import Adapter

log = logging.getLogger("leadrelay.polling")

#: the most leads one pass asks about one by one, when a batch's answer missed them
ALONE_PER_PASS = 20


def poll(ctx: WorkerContext, dest: DestinationConfig, *, limit: int = 100) -> Counter[str]:
    """One polling pass over a destination's due deliveries; returns counts by new state."""
    adapter = adapter_for(dest)
    now = ctx.clock()
    owner = uuid.uuid4().hex
    with ctx.sessions.begin() as session:
        batch = ledger.claim_due(
            session,
            dest.name,
            limit=limit,
            now=now,
            lease=dest.lease,
            owner=owner,
            states=POLL_STATES,
            keep_state=True,
        )
    if not batch:
        return Counter()
    expired = [d for d in batch if _expired(d, dest, now)]
    live = [d for d in batch if d not in expired]
    settlements = [_expire(d) for d in expired]
    asked: list[tuple[loop.Exchange, set[int]]] = []
    if live:
        updates = _ask(ctx, dest, adapter, live, asked)
        settlements += [_after_look(d, u, dest, now) for d, u in zip(live, updates, strict=True)]
    with ctx.sessions.begin() as session:
        ledger.settle(session, owner, settlements, now)
        for exchange, about in asked:
            loop._record(
                ctx,
                session,
                dest,
                "poll",
                exchange,
                [
                    (s.delivery_id, s.outcome, s.detail)
                    for s in settlements
                    if s.outcome and s.delivery_id in about
                ],
            )
        by_id = {d.id: d for d in batch}
        loop.advance_stages(
            session,
            adapter,
            dest,
            [by_id[s.delivery_id] for s in settlements],
            settlements,
            now,
        )
    return Counter(str(s.state) for s in settlements)


def _expired(delivery: Delivery, dest: DestinationConfig, now: datetime) -> bool:
    if delivery.state == LeadState.WAITING_CODE:
        return True  # its due time was the code's deadline
    return now - delivery.created_at >= dest.poll_horizon


def _expire(delivery: Delivery) -> Settlement:
    if delivery.state == LeadState.DELIVERED:  # reconciliation stops; the lead stays delivered
        return Settlement(
            delivery.id,
            LeadState.DELIVERED,
            delivery.attempt - 1,
            None,
            "status follow-up ended",
            delivery.external_id,
            dict(delivery.data),
        )
    why = (
        "no SMS code in time"
        if delivery.state == LeadState.WAITING_CODE
        else "no final status within the polling horizon"
    )
    return Settlement(
        delivery.id,
        LeadState.EXPIRED,
        delivery.attempt - 1,
        None,
        why,
        delivery.external_id,
        dict(delivery.data),
        outcome="expired",
    )


def _ask(
    ctx: WorkerContext,
    dest: DestinationConfig,
    adapter: Adapter[Any],
    batch: Sequence[Delivery],
    asked: list[tuple[loop.Exchange, set[int]]],
) -> list[StatusUpdate | None]:
    """
    What the platform says of each delivery: one request for the batch, then
    one each (at most ALONE_PER_PASS) for those its answer did not cover.
    Every exchange is appended to `asked` with the deliveries it was about.
    """
    answers = _ask_once(ctx, dest, adapter, batch, asked)
    unseen = [i for i, a in enumerate(answers) if isinstance(a, NotSeen)]
    if len(batch) > 1:
        for i in unseen[:ALONE_PER_PASS]:
            answers[i] = _ask_once(ctx, dest, adapter, [batch[i]], asked)[0]
    return [a if isinstance(a, StatusUpdate) else None for a in answers]


def _ask_once(
    ctx: WorkerContext,
    dest: DestinationConfig,
    adapter: Adapter[Any],
    batch: Sequence[Delivery],
    asked: list[tuple[loop.Exchange, set[int]]],
) -> list[PollAnswer]:
    nothing: list[PollAnswer] = [None] * len(batch)
    request = adapter.build_poll(batch, dest, ctx.clock())
    if request is None:
        return nothing
    exchange = loop.send_when_allowed(ctx, dest, adapter, request)
    if exchange is None:
        return nothing
    asked.append((exchange, {d.id for d in batch}))
    if exchange.response is None:
        return nothing
    try:
        answer = adapter.parse_poll(exchange.response, batch, dest)
    except Exception:  # an answer we cannot read is a look without news, never a dead task
        log.exception(
            "unreadable poll answer", extra={"event": "poll.unreadable", "destination": dest.name}
        )
        return nothing
    if not isinstance(answer, Sequence) or len(answer) != len(batch):
        return nothing
    return list(answer)


def _after_look(
    delivery: Delivery,
    update: StatusUpdate | None,
    dest: DestinationConfig,
    now: datetime,
) -> Settlement:
    attempts = delivery.attempt - 1  # a look is not a send
    next_look = now + timedelta(seconds=dest.poll_interval)
    if update is None:
        return Settlement(
            delivery.id,
            delivery.state,
            attempts,
            next_look,
            "",
            delivery.external_id,
            dict(delivery.data),
        )
    data = {**delivery.data, **update.data}
    due = (
        None if update.state in FINAL_STATES and update.state != LeadState.DELIVERED else next_look
    )
    if update.state == LeadState.DELIVERED and delivery.state == LeadState.DELIVERED:
        due = next_look
    outcome = (
        "status"
        if update.state != delivery.state or update.data != delivery.data.get("status")
        else ""
    )
    return Settlement(
        delivery.id,
        update.state,
        attempts,
        due,
        update.detail,
        delivery.external_id,
        data,
        outcome=outcome,
    )
