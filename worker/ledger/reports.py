"""Read-only questions ops ask of the ledger: per-destination counts, where a lead stands."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from worker.leads import DUE_STATES, LeadState
from worker.ledger.tables import (
    AttemptResultRow,
    AttemptRow,
    DeliveryRow,
    LeadRow,
    RefusalRow,
)


@dataclass
class DestinationStats:
    destination: str
    states: dict[str, int] = field(default_factory=dict)
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
    out: dict[str, DestinationStats] = {}
    for dest, state, n in session.execute(
        select(DeliveryRow.destination, DeliveryRow.state, func.count()).group_by(
            DeliveryRow.destination, DeliveryRow.state
        )
    ):
        out.setdefault(dest, DestinationStats(dest)).states[state] = int(n)
    for dest, oldest in session.execute(
        select(DeliveryRow.destination, func.min(DeliveryRow.due_at))
        .where(
            DeliveryRow.state.in_([str(s) for s in DUE_STATES]),
            DeliveryRow.due_at <= now,
        )
        .group_by(DeliveryRow.destination)
    ):
        if oldest is not None:
            if oldest.tzinfo is None:  # min() over SQLite bypasses the column type
                oldest = datetime.fromisoformat(str(oldest)).replace(tzinfo=now.tzinfo)
            out[dest].oldest_due_s = max(0.0, (now - oldest).total_seconds())
    for dest, minute, hour in session.execute(
        select(
            DeliveryRow.destination,
            func.count().filter(DeliveryRow.settled_at >= now - timedelta(minutes=1)),
            func.count(),
        )
        .where(DeliveryRow.settled_at >= now - timedelta(hours=1))
        .group_by(DeliveryRow.destination)
    ):
        out[dest].settled_last_minute = int(minute)
        out[dest].settled_last_hour = int(hour)
    return out


def find_lead(session: Session, ref: str) -> LeadRow | None:
    """A lead by our id, or by a producer's idempotency key (any destination)."""
    row = session.get(LeadRow, ref)
    if row is not None:
        return row
    return session.scalars(select(LeadRow).where(LeadRow.idempotency_key == ref).limit(1)).first()


def lead_report(session: Session, lead: LeadRow) -> dict[str, Any]:
    """Where a lead stands: each delivery (stage) and its attempts, redacted."""
    deliveries = session.scalars(
        select(DeliveryRow).where(DeliveryRow.lead_id == lead.id).order_by(DeliveryRow.stage)
    ).all()
    out: dict[str, Any] = {
        "lead_id": lead.id,
        "destination": lead.destination,
        "idempotency_key": lead.idempotency_key,
        "accepted_at": lead.created_at.isoformat(),
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
