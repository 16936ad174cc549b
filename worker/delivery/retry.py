"""
Retry as a decision value (procrastinate's `RetryDecision`): what becomes of a
delivery given what its platform answered. Pure: the clock and the dice are
passed in.

Backoff is exponential with equal jitter, capped (in seconds, attempt n ≥ 1):

    base(n) = min(retry_max, retry_initial · 2^(n-1))
    wait(n) = base(n) / 2 + rand() · base(n) / 2

so waits never collapse to zero and workers that failed together spread out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from worker.config import DestinationConfig
from worker.leads import Delivery, LeadState
from worker.outcomes import Delivered, Failed, LeadOutcome, Pending, Rejected, Retry, Settlement

Rand = Callable[[], float]


def backoff(attempt: int, dest: DestinationConfig, rand: Rand) -> timedelta:
    """The wait before send number `attempt + 1`, after `attempt` failed sends."""
    base = min(dest.retry_max, dest.retry_initial * 2 ** max(0, attempt - 1))
    return timedelta(seconds=base / 2 + rand() * base / 2)


def settle(
    delivery: Delivery,
    outcome: LeadOutcome | Failed,
    dest: DestinationConfig,
    now: datetime,
    rand: Rand,
    *,
    follow_up: timedelta | None = None,
) -> Settlement:
    """
    The delivery's next state, due time and record after one counted attempt.
    `follow_up`: for platforms whose delivered leads are reconciled, when to look.
    """
    attempts = delivery.attempt
    match outcome:
        case Delivered(external_id=ext, detail=detail, data=data):
            return Settlement(
                delivery_id=delivery.id,
                state=LeadState.DELIVERED,
                attempts=attempts,
                due_at=now + follow_up if follow_up is not None else None,
                detail=detail,
                external_id=ext or delivery.external_id,
                data={**delivery.data, **data},
                outcome="delivered",
            )
        case Pending(external_id=ext, detail=detail, data=data, state=state, wait=wait):
            return Settlement(
                delivery_id=delivery.id,
                state=state,
                attempts=attempts,
                due_at=now + wait if wait is not None else now,
                detail=detail,
                external_id=ext or delivery.external_id,
                data={**delivery.data, **data},
                outcome="pending",
            )
        case Rejected(reason=reason, data=data, state=state):
            return Settlement(
                delivery_id=delivery.id,
                state=state,
                attempts=attempts,
                due_at=None,
                detail=reason,
                external_id=delivery.external_id,
                data={**delivery.data, **data},
                outcome="rejected",
            )
        case Retry(reason=reason, after=after, horizon=horizon, give_up_as=give_up):
            settlement = _retry(delivery, dest, now, rand, reason, after, horizon, give_up)
            return _replace_doubt(settlement, delivery.in_doubt)
        case Failed(reason=reason, in_doubt=doubt, retry_after=after):
            settlement = _retry(delivery, dest, now, rand, reason, after, None, LeadState.DEAD)
            if doubt and settlement.due_at is not None:
                # a request whose answer was lost may still be queued at the platform:
                # look it up no sooner than one timeout later, or the look can miss it
                floor = now + timedelta(seconds=dest.timeout)
                settlement = replace(settlement, due_at=max(settlement.due_at, floor))
            # once a send may have arrived, the lead stays in doubt until an answer settles it
            return _replace_doubt(settlement, doubt or delivery.in_doubt)
    raise TypeError(f"not an outcome: {type(outcome).__name__}")


def _retry(
    delivery: Delivery,
    dest: DestinationConfig,
    now: datetime,
    rand: Rand,
    reason: str,
    after: timedelta | None,
    horizon: timedelta | None,
    give_up: LeadState,
) -> Settlement:
    attempts = delivery.attempt
    if horizon is not None:
        exhausted = now - delivery.created_at >= horizon
        why = f"{reason} (gave up after {horizon})"
    else:
        exhausted = attempts >= dest.max_attempts
        why = f"{reason} (gave up after {attempts} attempts)"
    if exhausted:
        return Settlement(
            delivery_id=delivery.id,
            state=give_up,
            attempts=attempts,
            due_at=None,
            detail=why,
            external_id=delivery.external_id,
            data=dict(delivery.data),
            outcome="gave_up",
        )
    wait = after if after is not None else backoff(attempts, dest, rand)
    return Settlement(
        delivery_id=delivery.id,
        state=LeadState.RETRY_WAIT,
        attempts=attempts,
        due_at=now + wait,
        detail=reason,
        external_id=delivery.external_id,
        data=dict(delivery.data),
        outcome="retry",
    )


def _replace_doubt(s: Settlement, in_doubt: bool) -> Settlement:
    return replace(s, in_doubt=in_doubt)
