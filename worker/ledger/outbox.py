"""
Settlement events: the outbox an upstream app's Celery task is told from.

A destination with `notify_task` gets one event each time one of its
deliveries reaches a final state it was not in (delivered, rejected, dead,
unmatched, approved, declined, error, expired): a lead delivered and later
approved gives two. The event is written in the settlement's own transaction
(`store.settle`, `store.sweep_expired_leases`), so it exists exactly when the
settlement committed, and only for rows the settlement really changed: the
rows still leased to the settling worker are read and held first
(`still_leased`), and the events are written for those alone.

An event is one JSON object, the message's one argument, with no personal data:
`lead_id`, `destination`, `idempotency_key`, `state`, `external_id`, `detail`
(redacted of phones, e-mails, credentials and configured secrets, at most
DETAIL_MAX characters) and `settled_at` (ISO 8601, UTC).

The flusher (`worker.delivery.notify`) takes unsent events oldest first
(`unsent`, skipping rows another flusher holds), publishes them and marks them
sent under the broker's epoch (`mark_sent`) in the same transaction. Sent
events are kept (`delete_sent` removes them later), so that events a wiped
broker lost can be sent again (`send_again`: every event sent under another
epoch than the broker's own).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from worker.leads import LeadState
from worker.ledger import db, locks
from worker.ledger.tables import DeliveryRow, LeadRow, OutboxRow
from worker.ops.redact import redact_text

#: the longest `detail` an event carries; the ledger keeps the whole text
DETAIL_MAX = 500
#: the keys of an event, in the order it is written
EVENT_KEYS = (
    "lead_id",
    "destination",
    "idempotency_key",
    "state",
    "external_id",
    "detail",
    "settled_at",
)


@dataclass(frozen=True, slots=True)
class Notify:
    """Where a destination's settlement events go: the upstream app's task and its queue."""

    destination: str
    task: str
    queue: str
    #: every configured secret, masked in an event's detail as in every log and record
    secrets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Settled:
    """A delivery that reached a final state it was not in: what its event tells."""

    lead_id: str
    state: LeadState
    external_id: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    """An unsent event, as the flusher publishes it."""

    id: int
    task: str
    queue: str
    payload: Mapping[str, Any]


def still_leased(session: Session, owner: str, ids: Sequence[int]) -> dict[int, tuple[str, str]]:
    """
    Of the deliveries `ids`, those still leased to `owner`, held until the
    transaction ends: delivery id → (lead id, state before the settlement).
    """
    if not ids:
        return {}
    query = select(DeliveryRow.id, DeliveryRow.lead_id, DeliveryRow.state).where(
        DeliveryRow.id.in_(ids), DeliveryRow.lease_owner == owner
    )
    rows = session.execute(locks.for_update(session, query, DeliveryRow))
    return {i: (lead, state) for i, lead, state in rows}


def record(session: Session, notify: Notify, settled: Sequence[Settled], now: datetime) -> int:
    """Write one unsent event per settled delivery; returns how many."""
    if not settled:
        return 0
    found = session.execute(
        select(LeadRow.id, LeadRow.idempotency_key).where(
            LeadRow.id.in_({s.lead_id for s in settled})
        )
    )
    keys: dict[str, str | None] = dict(found.all())
    rows = [
        {
            "lead_id": s.lead_id,
            "destination": notify.destination,
            "task": notify.task,
            "queue": notify.queue,
            "payload": payload(notify, s, keys.get(s.lead_id), now),
            "created_at": now,
        }
        for s in settled
    ]
    db.bulk_insert(session, OutboxRow, rows)
    return len(rows)


def payload(notify: Notify, s: Settled, key: str | None, now: datetime) -> dict[str, Any]:
    """The message's one argument. Redacted before it is cut, so no cut can hide a phone's shape."""
    return {
        "lead_id": s.lead_id,
        "destination": notify.destination,
        "idempotency_key": key,
        "state": str(s.state),
        "external_id": s.external_id,
        "detail": redact_text(s.detail, notify.secrets)[:DETAIL_MAX],
        "settled_at": now.astimezone(UTC).isoformat(),
    }


def unsent(session: Session, limit: int) -> list[Event]:
    """Up to `limit` unsent events, oldest first, held until commit (rows held elsewhere passed)."""
    query = (
        select(OutboxRow.id, OutboxRow.task, OutboxRow.queue, OutboxRow.payload)
        .where(OutboxRow.sent_at.is_(None))
        .order_by(OutboxRow.id)
        .limit(limit)
    )
    return [Event(i, t, q, p) for i, t, q, p in session.execute(db.skip_locked(query))]


def mark_sent(session: Session, ids: Sequence[int], epoch: str, now: datetime) -> int:
    """The events `ids` were published under the broker epoch `epoch`."""
    if not ids:
        return 0
    result = session.execute(
        update(OutboxRow)
        .where(OutboxRow.id.in_(ids))
        .values(sent_at=now, sent_epoch=epoch)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def send_again(session: Session, epoch: str) -> int:
    """
    Every kept event sent under another epoch than `epoch` is unsent again: the
    broker it went to has been wiped since. Two ranges of ix_outbox_sent
    (below and above `epoch`) rather than `<>`, which no index serves: asked
    on every flush, it finds nothing, at the cost of two index probes.
    """
    result = session.execute(
        update(OutboxRow)
        .where(
            OutboxRow.sent_at.is_not(None),
            or_(OutboxRow.sent_epoch < epoch, OutboxRow.sent_epoch > epoch),
        )
        .values(sent_at=None, sent_epoch=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def send_again_since(session: Session, epoch: str, since: datetime) -> int:
    """
    Every event sent under `epoch` at or after `since` is unsent again: the broker's
    server changed under the epoch (`notify.broker_moved`), and the new one may lack
    what the old one took last. One range of ix_outbox_sent.
    """
    result = session.execute(
        update(OutboxRow)
        .where(OutboxRow.sent_epoch == epoch, OutboxRow.sent_at >= since)
        .values(sent_at=None, sent_epoch=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def delete_sent(session: Session, epoch: str, before: datetime, limit: int) -> int:
    """Delete up to `limit` events sent under `epoch` before `before`; returns how many."""
    old = (
        select(OutboxRow.id)
        .where(
            OutboxRow.sent_at.is_not(None),
            OutboxRow.sent_epoch == epoch,
            OutboxRow.sent_at < before,
        )
        .limit(limit)
    )
    result = session.execute(
        delete(OutboxRow)
        .where(OutboxRow.id.in_(old.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def unsent_counts(session: Session) -> dict[str, int]:
    """Unsent events per destination (a gauge's reading: upstream apps waiting to be told)."""
    rows = session.execute(
        select(OutboxRow.destination, func.count())
        .where(OutboxRow.sent_at.is_(None))
        .group_by(OutboxRow.destination)
    )
    return {d: int(n) for d, n in rows}
