"""
Read-only questions ops ask of the ledger: per-destination counts, where a lead stands.

Every query here is the same on PostgreSQL and SQLite. Answers are values
(`DestinationStats`, `AcceptedLead`, dicts of plain data), never ORM rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from worker.leads import DUE_STATES, LeadState
from worker.ledger.tables import (
    AttemptResultRow,
    AttemptRow,
    DeliveryRow,
    LeadRow,
    RefusalRow,
)


@dataclass(frozen=True, slots=True)
class DestinationStats:
    """One destination's deliveries: how many in each state, how late, how fast settled."""

    destination: str
    #: deliveries by state name
    states: Mapping[str, int] = field(default_factory=dict)
    #: seconds since the oldest due delivery fell due; None when none is due
    oldest_due_s: float | None = None
    settled_last_minute: int = 0
    settled_last_hour: int = 0

    def count(self, state: LeadState) -> int:
        return self.states.get(str(state), 0)

    @property
    def total(self) -> int:
        return sum(self.states.values())


def stats(session: Session, now: datetime) -> dict[str, DestinationStats]:
    """Deliveries per destination and state, the oldest due one, and recent settling rates."""
    states = _states(session)
    oldest = _oldest_due(session, now)
    settled = _settled(session, now)
    return {
        dest: DestinationStats(
            destination=dest,
            states=by_state,
            oldest_due_s=oldest.get(dest),
            settled_last_minute=settled.get(dest, (0, 0))[0],
            settled_last_hour=settled.get(dest, (0, 0))[1],
        )
        for dest, by_state in states.items()
    }


def _states(session: Session) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for dest, state, n in session.execute(
        select(DeliveryRow.destination, DeliveryRow.state, func.count()).group_by(
            DeliveryRow.destination, DeliveryRow.state
        )
    ):
        out.setdefault(dest, {})[state] = int(n)
    return out


def _oldest_due(session: Session, now: datetime) -> dict[str, float]:
    rows = session.execute(
        select(DeliveryRow.destination, func.min(DeliveryRow.due_at))
        .where(
            DeliveryRow.state.in_([str(s) for s in DUE_STATES]),
            DeliveryRow.due_at <= now,
        )
        .group_by(DeliveryRow.destination)
    )
    # min() keeps the column's type, so SQLite's due times come back aware too
    return {d: max(0.0, (now - oldest).total_seconds()) for d, oldest in rows if oldest is not None}


def _settled(session: Session, now: datetime) -> dict[str, tuple[int, int]]:
    """Deliveries settled per destination: (in the last minute, in the last hour)."""
    rows = session.execute(
        select(
            DeliveryRow.destination,
            func.count().filter(DeliveryRow.settled_at >= now - timedelta(minutes=1)),
            func.count(),
        )
        .where(DeliveryRow.settled_at >= now - timedelta(hours=1))
        .group_by(DeliveryRow.destination)
    )
    return {d: (int(minute), int(hour)) for d, minute, hour in rows}


@dataclass(frozen=True, slots=True)
class AcceptedLead:
    """A lead the ledger holds, by its ids: what `find_lead` answers (not its payload)."""

    id: str
    destination: str
    idempotency_key: str | None
    accepted_at: datetime


def find_lead(session: Session, ref: str) -> AcceptedLead | None:
    """A lead by our id, or by a producer's idempotency key (any destination)."""
    return _accepted(session, LeadRow.id == ref) or _accepted(
        session, LeadRow.idempotency_key == ref
    )


def _accepted(session: Session, where: ColumnElement[bool]) -> AcceptedLead | None:
    row = session.execute(
        select(LeadRow.id, LeadRow.destination, LeadRow.idempotency_key, LeadRow.created_at)
        .where(where)
        .limit(1)
    ).first()
    if row is None:
        return None
    return AcceptedLead(
        id=row.id,
        destination=row.destination,
        idempotency_key=row.idempotency_key,
        accepted_at=row.created_at,
    )


def lead_report(session: Session, lead: AcceptedLead) -> dict[str, Any]:
    """Where a lead stands: each delivery (stage) and its attempts, redacted."""
    deliveries = session.scalars(
        select(DeliveryRow).where(DeliveryRow.lead_id == lead.id).order_by(DeliveryRow.stage)
    ).all()
    out: dict[str, Any] = {
        "lead_id": lead.id,
        "destination": lead.destination,
        "idempotency_key": lead.idempotency_key,
        "accepted_at": lead.accepted_at.isoformat(),
        "deliveries": [],
    }
    for d in deliveries:
        attempts = session.execute(
            select(AttemptRow, AttemptResultRow)
            .join(AttemptResultRow, AttemptResultRow.attempt_id == AttemptRow.id)
            .where(AttemptResultRow.delivery_id == d.id)
            .order_by(AttemptRow.at)
        ).all()
        out["deliveries"].append(
            {
                "stage": d.stage,
                "state": d.state,
                "attempts": d.attempts,
                "due_at": d.due_at.isoformat() if d.due_at else None,
                "external_id": d.external_id,
                "detail": d.detail,
                "data": d.data,
                "history": [
                    {
                        "at": a.at.isoformat(),
                        "kind": a.kind,
                        "status_code": a.status_code,
                        "outcome": r.outcome,
                        "detail": r.detail,
                        "error": a.error,
                        "answer": a.answer,
                        "elapsed_ms": a.elapsed_ms,
                    }
                    for a, r in attempts
                ],
            }
        )
    return out


def refusals(
    session: Session, since: datetime | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Recent refused intakes (raw Celery messages), newest first."""
    stmt = select(RefusalRow).order_by(RefusalRow.id.desc()).limit(limit)
    if since is not None:
        stmt = stmt.where(or_(RefusalRow.at >= since))
    return [
        {
            "id": r.id,
            "at": r.at.isoformat(),
            "source": r.source,
            "destination": r.destination,
            "idempotency_key": r.idempotency_key,
            "errors": r.errors.get("errors", []),
        }
        for r in session.scalars(stmt)
    ]


def requests_by_destination(session: Session) -> dict[str, tuple[int, int]]:
    """HTTP exchanges recorded per destination: (all, answered 429 or 503)."""
    rows = session.execute(
        select(
            AttemptRow.destination,
            func.count(),
            func.count().filter(AttemptRow.status_code.in_((429, 503))),
        ).group_by(AttemptRow.destination)
    )
    return {d: (int(n), int(t)) for d, n, t in rows}
