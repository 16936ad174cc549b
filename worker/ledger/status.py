"""
Where one lead stands, for the code that submitted it: the lead, its deliveries, its attempts.

Three reads, whatever the number of stages: the lead, its deliveries (one, or one
per stage of a staged Admitad application), and every exchange that carried one
of them. Nothing here reads `leads.payload`, an attempt's request or the
platform's raw answer: the values that come back hold ids, states, times,
counts and the platforms' short words, never the lead's personal data.

The queries are the same on PostgreSQL and SQLite, and are plain functions of a
`Session`, so an `AsyncSession` runs them too (`await session.run_sync(lead_status, …)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from worker.ledger.tables import AttemptResultRow, AttemptRow, DeliveryRow, LeadRow


@dataclass(frozen=True, slots=True)
class AttemptSeen:
    """One exchange with the platform, as it touched one delivery of the lead."""

    stage: int  #: the delivery it carried (0 for a lead of one delivery)
    kind: str  #: send, check, lookup, poll, confirm
    at: datetime
    status_code: int | None  #: None when no answer came (a timeout, a cut connection)
    outcome: str  #: what it meant for this delivery (delivered, retry, throttled, …)
    detail: str  #: the platform's words for this delivery, or why the exchange failed
    elapsed_ms: int


@dataclass(frozen=True, slots=True)
class DeliverySeen:
    """One delivery of the lead: the whole lead, or one stage of a staged application."""

    stage: int
    state: str
    attempts: int
    in_doubt: bool
    due_at: datetime | None
    settled_at: datetime | None
    external_id: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class LeadSeen:
    """A lead by its ids, with its deliveries (by stage) and attempts (by time)."""

    id: str
    destination: str
    idempotency_key: str | None
    source: str
    accepted_at: datetime
    deliveries: tuple[DeliverySeen, ...]
    attempts: tuple[AttemptSeen, ...]


def lead_status(session: Session, lead_id: str) -> LeadSeen | None:
    """The lead with our id `lead_id`, or None when the ledger holds no such lead."""
    return _lead(session, LeadRow.id == lead_id)


def lead_status_by_key(session: Session, destination: str, key: str) -> LeadSeen | None:
    """The lead a producer submitted to `destination` with idempotency key `key`, or None."""
    # (destination, idempotency_key) is the unique index uq_leads_destination_key
    where = (LeadRow.destination == destination) & (LeadRow.idempotency_key == key)
    return _lead(session, where)


def _lead(session: Session, where: ColumnElement[bool]) -> LeadSeen | None:
    row = session.execute(
        select(
            LeadRow.id,
            LeadRow.destination,
            LeadRow.idempotency_key,
            LeadRow.source,
            LeadRow.created_at,
        ).where(where)
    ).first()
    if row is None:
        return None
    return LeadSeen(
        id=row.id,
        destination=row.destination,
        idempotency_key=row.idempotency_key,
        source=row.source,
        accepted_at=row.created_at,
        deliveries=_deliveries(session, row.id),
        attempts=_attempts(session, row.id),
    )


def _deliveries(session: Session, lead_id: str) -> tuple[DeliverySeen, ...]:
    rows = session.execute(
        select(
            DeliveryRow.stage,
            DeliveryRow.state,
            DeliveryRow.attempts,
            DeliveryRow.in_doubt,
            DeliveryRow.due_at,
            DeliveryRow.settled_at,
            DeliveryRow.external_id,
            DeliveryRow.detail,
        )
        .where(DeliveryRow.lead_id == lead_id)
        .order_by(DeliveryRow.stage)
    )
    return tuple(
        DeliverySeen(
            stage=r.stage,
            state=r.state,
            attempts=r.attempts,
            in_doubt=r.in_doubt,
            due_at=r.due_at,
            settled_at=r.settled_at,
            external_id=r.external_id,
            detail=r.detail,
        )
        for r in rows
    )


def _attempts(session: Session, lead_id: str) -> tuple[AttemptSeen, ...]:
    rows = session.execute(
        select(
            DeliveryRow.stage,
            AttemptRow.kind,
            AttemptRow.at,
            AttemptRow.status_code,
            AttemptResultRow.outcome,
            AttemptResultRow.detail,
            AttemptRow.error,
            AttemptRow.elapsed_ms,
        )
        .join(AttemptResultRow, AttemptResultRow.delivery_id == DeliveryRow.id)
        .join(AttemptRow, AttemptRow.id == AttemptResultRow.attempt_id)
        .where(DeliveryRow.lead_id == lead_id)
        .order_by(AttemptRow.at, AttemptRow.id, DeliveryRow.stage)
    )
    return tuple(
        AttemptSeen(
            stage=r.stage,
            kind=r.kind,
            at=r.at,
            status_code=r.status_code,
            outcome=r.outcome,
            detail=r.detail or r.error,
            elapsed_ms=r.elapsed_ms,
        )
        for r in rows
    )
