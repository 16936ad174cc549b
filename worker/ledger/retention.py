"""
Retention: settled leads, and the exchanges that carried them, deleted whole.

A destination with `keep_days` keeps each settled lead that long after its last
delivery settled, then the lead's row goes, with its deliveries and their attempt
results (deleted first, in the same transaction), and then every exchange of that
destination older than the cut that no remaining delivery refers to (tokens,
settings, the batches that carried only deleted leads). Nothing pending is ever
touched: a staged lead goes only when its every stage has settled before the cut.

Work goes in small batches, each its own short transaction, so no lock is held
long: a claim reads only due rows, which no batch deletes, and waits on nothing
here. Each batch walks `ix_deliveries_settled` (destination, settled_at) or
`ix_attempts_destination_at` (destination, at) forward from where the last one
stopped, so rows that must stay (a lead with a stage still open) are passed once
per run, never read again by every batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from worker.config import DestinationConfig
from worker.leads import FINAL_STATES
from worker.ledger.tables import AttemptResultRow, AttemptRow, DeliveryRow, LeadRow

#: where the next batch starts: (settled_at or at, id) of the last row seen; None: done
_Cursor = tuple[datetime, int] | None
#: leads (or exchanges) one batch deletes at most
BATCH = 500
FINAL = sorted(str(s) for s in FINAL_STATES)


@dataclass(frozen=True, slots=True)
class Removed:
    """What one run deleted for one destination."""

    destination: str
    leads: int = 0
    attempts: int = 0
    #: False when the run stopped at its time budget with rows still to go
    finished: bool = True


def delete_settled(
    sessions: sessionmaker[Session],
    destination: str,
    *,
    before: datetime,
    batch: int = BATCH,
    deadline: Callable[[], bool] = lambda: False,
    progress: Callable[[Removed], None] = lambda _: None,
    rest: float = 0.0,
) -> Removed:
    """
    Delete `destination`'s leads settled before `before`, then its exchanges older than
    `before` that no delivery refers to, `batch` at a time; `progress` hears after each
    batch. Stops early, with `finished=False`, once `deadline()` says so. `rest`: for
    each second a batch took, this many seconds of pause before the next, so that a
    purge leaves the database's disk and WAL to the claims part of the time.
    """
    counted = {"leads": 0, "attempts": 0}

    def batches(kind: str, step: Callable[[Session, _Cursor], tuple[int, _Cursor]]) -> bool:
        """Run `step` batch after batch until it finds nothing; False at the deadline."""
        cursor: _Cursor = None
        while not deadline():
            began = time.monotonic()
            with sessions.begin() as session:
                gone, cursor = step(session, cursor)
            if cursor is None:
                return True
            time.sleep((time.monotonic() - began) * rest)
            counted[kind] += gone
            progress(Removed(destination, counted["leads"], counted["attempts"], finished=False))
        return False

    finished = batches(
        "leads", lambda s, after: _lead_batch(s, destination, before, after, batch)
    ) and batches("attempts", lambda s, after: _attempt_batch(s, destination, before, after, batch))
    return Removed(destination, counted["leads"], counted["attempts"], finished=finished)


def delete_all(
    sessions: sessionmaker[Session],
    destinations: Iterable[DestinationConfig],
    now: datetime,
    **options: Any,
) -> list[tuple[DestinationConfig, Removed]]:
    """`delete_settled` for each destination with `keep_days`, its cut `keep_days` before `now`."""
    return [
        (
            dest,
            delete_settled(
                sessions, dest.name, before=now - timedelta(days=dest.keep_days), **options
            ),
        )
        for dest in destinations
        if dest.keep_days is not None
    ]


def _lead_batch(
    session: Session,
    destination: str,
    before: datetime,
    after: _Cursor,
    batch: int,
) -> tuple[int, _Cursor]:
    """
    One batch of leads: the next `batch` deliveries settled before the cut, in settling
    order from `after`; of their leads, those with no delivery open or settled since
    the cut are deleted, children first. Returns (leads deleted, where the next batch starts), or
    (0, None) when no settled delivery is left to look at.
    """
    where = [
        DeliveryRow.destination == destination,
        DeliveryRow.settled_at.is_not(None),
        DeliveryRow.settled_at < before,
    ]
    if after is not None:
        at, last_id = after
        where.append(
            (DeliveryRow.settled_at > at)
            | ((DeliveryRow.settled_at == at) & (DeliveryRow.id > last_id))
        )
    rows = session.execute(
        select(DeliveryRow.id, DeliveryRow.lead_id, DeliveryRow.settled_at)
        .where(*where)
        .order_by(DeliveryRow.settled_at, DeliveryRow.id)
        .limit(batch)
    ).all()
    if not rows:
        return 0, None
    candidates = sorted({lead_id for _, lead_id, _ in rows})
    other = aliased(DeliveryRow)
    still_kept = exists().where(
        other.lead_id == LeadRow.id,
        other.settled_at.is_(None) | (other.settled_at >= before) | other.state.not_in(FINAL),
    )
    ids = list(session.scalars(select(LeadRow.id).where(LeadRow.id.in_(candidates), ~still_kept)))
    if ids:
        # Children first, each in one statement: a lead is deleted only once no delivery
        # names it (PostgreSQL has no key to check that, revision 0008), and a cascade
        # would run a statement per delivery, and the delivery counts' trigger with each.
        # Each statement checks the rows again, so a delivery put back since (`retry`)
        # keeps itself and its lead.
        settled_long_ago = (
            DeliveryRow.lead_id.in_(ids),
            DeliveryRow.settled_at < before,
            DeliveryRow.state.in_(FINAL),
        )
        session.execute(
            delete(AttemptResultRow)
            .where(
                AttemptResultRow.delivery_id.in_(
                    select(DeliveryRow.id).where(*settled_long_ago).scalar_subquery()
                )
            )
            .execution_options(synchronize_session=False)
        )
        session.execute(
            delete(DeliveryRow)
            .where(*settled_long_ago)
            .execution_options(synchronize_session=False)
        )
    any_delivery = exists().where(DeliveryRow.lead_id == LeadRow.id)
    result = session.execute(
        delete(LeadRow)
        .where(LeadRow.id.in_(ids), ~any_delivery)
        .execution_options(synchronize_session=False)
    )
    last_id, _, last_at = rows[-1]
    # settled_at is not NULL here: the query asked for settled rows only
    return int(result.rowcount or 0), (cast(datetime, last_at), last_id)  # type: ignore[attr-defined]


def _attempt_batch(
    session: Session,
    destination: str,
    before: datetime,
    after: _Cursor,
    batch: int,
) -> tuple[int, _Cursor]:
    """
    One batch of exchanges older than the cut, in time order from `after`: those no
    delivery's result refers to any more are deleted. Returns (deleted, where the next
    batch starts), or (0, None) when none is left to look at.
    """
    where = [AttemptRow.destination == destination, AttemptRow.at < before]
    if after is not None:
        at, last_id = after
        where.append((AttemptRow.at > at) | ((AttemptRow.at == at) & (AttemptRow.id > last_id)))
    rows = session.execute(
        select(AttemptRow.id, AttemptRow.at)
        .where(*where)
        .order_by(AttemptRow.at, AttemptRow.id)
        .limit(batch)
    ).all()
    if not rows:
        return 0, None
    referred = exists().where(AttemptResultRow.attempt_id == AttemptRow.id)
    result = session.execute(
        delete(AttemptRow)
        .where(AttemptRow.id.in_([i for i, _ in rows]), ~referred)
        .execution_options(synchronize_session=False)
    )
    last_id, last_at = rows[-1]
    return int(result.rowcount or 0), (last_at, last_id)  # type: ignore[attr-defined]
