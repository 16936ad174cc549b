"""
Writing back what became of claimed deliveries, in the caller's transaction:
the settlements, then the next stage of each staged lead whose stage they
decided. The loop, the lookups and the polls all settle through `write`, so a
stage decided by any of them releases the next one the same way, and a
destination that tells its upstream app of settlements gets its events from
every one of them, in the same transaction (`worker.delivery.notify`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from worker import ledger
from worker.delivery import notify
from worker.delivery.exchange import Turn
from worker.leads import Delivery
from worker.outcomes import Settlement


def write(
    turn: Turn,
    session: Session,
    batch: Sequence[Delivery],
    settlements: Sequence[Settlement],
    now: datetime,
) -> int:
    """
    Settle `batch` (claimed by `turn.owner`) as `settlements` say, one for each
    delivery in order; returns how many next stages this made due now (the
    caller wakes the destination for them).
    """
    target = notify.target(turn.dest, turn.ctx.secrets)
    ledger.settle(session, turn.owner, settlements, now, target)
    return advance_stages(turn, session, batch, settlements, now)


def advance_stages(
    turn: Turn,
    session: Session,
    batch: Sequence[Delivery],
    settlements: Sequence[Settlement],
    now: datetime,
) -> int:
    """
    Release the next stage of staged leads whose stage is decided; returns how
    many were released due now. Asked after every settlement of a stage:
    releasing is idempotent (only a held stage moves).
    """
    due_now = 0
    for delivery, settlement in zip(batch, settlements, strict=True):
        if delivery.stage <= 0:
            continue
        due = turn.adapter.next_stage_due(
            delivery, turn.dest, settlement.state, settlement.data, now
        )
        if due is not None and ledger.release_next_stage(
            session, delivery.lead_id, delivery.stage, due, now
        ):
            due_now += due <= now
    return due_now


def release(turn: Turn, batch: Sequence[Delivery], due: datetime) -> None:
    """Give claimed deliveries back unsettled, due again at `due` (their own transaction)."""
    with turn.ctx.sessions.begin() as session:
        ledger.release(session, turn.owner, [d.id for d in batch], due, turn.now())
