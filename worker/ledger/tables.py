"""
The ledger's tables, as SQLAlchemy 2 typed ORM classes.

* `leads`           one row per accepted lead: its destination, the producer's
                    idempotency key, the normalised payload (the lead's own data)
* `deliveries`      one row per lead per stage (one stage but for staged Admitad
                    applications): state, attempts, due time, lease
* `attempts`        one row per HTTP exchange with a platform: the redacted request,
                    status code, redacted answer, time taken
* `attempt_results` what one exchange meant for each delivery it carried
* `refusals`        intake that failed validation where nobody could be told at once
                    (raw Celery messages), with every field error; never silent
* `pauses`          destinations stopped by ops or by an auth/quota failure; survive restarts
* `outbox`          settlement events for upstream apps, written in the settlement's own
                    transaction and published to Celery afterwards (`worker.delivery.notify`);
                    sent rows are kept a day, so a wiped broker can be given them again
* `delivery_counts` deliveries by destination and state, kept by triggers (migration 0006),
  `delivery_count_changes`  with PostgreSQL's not yet folded in: what `stats` and /metrics read

All times are timezone-aware UTC; SQLite stores them naive, `UTCDateTime` restores the zone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from worker.leads import DUE_STATES


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every dialect (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the ledger stores aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: DUE_STATES as the WHERE of the claim's partial index (ix_deliveries_claim) writes them,
#: in the same order the claim's filter renders them (store._due): SQLite takes a partial
#: index only for a query that repeats its WHERE's terms exactly
DUE_STATES_SQL = "state IN ({})".format(", ".join(f"'{s}'" for s in sorted(DUE_STATES)))

Json = JSON().with_variant(JSONB(), "postgresql")
# SQLite autoincrements INTEGER PRIMARY KEY only, PostgreSQL wants BIGINT for the long run.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: Json}


class LeadRow(Base):
    __tablename__ = "leads"
    __table_args__ = (
        # Partial: leads without a key (most of a bulk import) cost this index nothing.
        Index(
            "uq_leads_destination_key",
            "destination",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
            sqlite_where=text("idempotency_key IS NOT NULL"),
        ),
        # `leadrelay status KEY` without a destination: the key alone, not its suffix
        Index(
            "ix_leads_key",
            "idempotency_key",
            postgresql_where=text("idempotency_key IS NOT NULL"),
            sqlite_where=text("idempotency_key IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    destination: Mapped[str] = mapped_column(String(63))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]]
    source: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    #: set when `leadrelay purge` removed the personal data from payload
    purged_at: Mapped[datetime | None]


class DeliveryRow(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        # claims, sweeps and counts all filter on destination and state first
        Index("ix_deliveries_due", "destination", "state", "due_at"),
        # a send claim's fresh rows (store.claim_due, second pass) in the order it takes them:
        # one walk that stops at the claim's limit. ix_deliveries_due gives no due order
        # across two states, so there each claim read and sorted the whole backlog
        # (1,000,000 due rows: 435 ms a claim)
        Index(
            "ix_deliveries_claim",
            "destination",
            "due_at",
            "id",
            postgresql_where=text(f"{DUE_STATES_SQL} AND NOT in_doubt"),
            sqlite_where=text(f"{DUE_STATES_SQL} AND in_doubt = 0"),
        ),
        # the in-doubt rows claims take first (store.claim_due): few, so a partial index
        Index(
            "ix_deliveries_in_doubt_due",
            "destination",
            "state",
            "due_at",
            postgresql_where=text("in_doubt"),
            sqlite_where=text("in_doubt = 1"),
        ),
        UniqueConstraint("lead_id", "stage", name="uq_deliveries_lead_stage"),
        # stats' and every /metrics scrape's settling rates: a range count per destination
        # of the last hour's settled rows; the pending ones (no settled_at) cost it nothing
        Index(
            "ix_deliveries_settled",
            "destination",
            "settled_at",
            postgresql_where=text("settled_at IS NOT NULL"),
            sqlite_where=text("settled_at IS NOT NULL"),
        ),
        Index(
            "ix_deliveries_external_id",
            "external_id",
            postgresql_where=text("external_id IS NOT NULL"),
            sqlite_where=text("external_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # uq_deliveries_lead_stage (lead_id, stage) serves lookups by lead: no index of its own.
    # No foreign key on PostgreSQL (migration 0008): checking it locked and rewrote the
    # lead at every insert. Intake writes deliveries from their leads, and retention
    # deletes them before their lead (tests/integration/test_lead_integrity.py).
    lead_id: Mapped[str] = mapped_column(String(32))
    destination: Mapped[str] = mapped_column(String(63))
    stage: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(32))
    #: due: a send may have arrived unanswered, so look it up before resending; settled:
    #: kept as the record that a send once went unanswered
    in_doubt: Mapped[bool] = mapped_column(Boolean, default=False)
    external_id: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    settled_at: Mapped[datetime | None]


class AttemptRow(Base):
    __tablename__ = "attempts"
    __table_args__ = (Index("ix_attempts_destination_at", "destination", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    destination: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(10))  # send, lookup, poll, token, settings
    at: Mapped[datetime]
    request: Mapped[dict[str, Any]]  # method, url, headers, body: redacted
    status_code: Mapped[int | None]
    answer: Mapped[str] = mapped_column(Text, default="")  # redacted, truncated
    error: Mapped[str] = mapped_column(Text, default="")
    elapsed_ms: Mapped[int] = mapped_column(Integer, default=0)


class AttemptResultRow(Base):
    __tablename__ = "attempt_results"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # indexed: retention asks whether an exchange still has results, and deleting one
    # makes the database look for its results (ON DELETE CASCADE)
    attempt_id: Mapped[int] = mapped_column(
        ForeignKey("attempts.id", ondelete="CASCADE"), index=True
    )
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    outcome: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str] = mapped_column(Text, default="")


class RefusalRow(Base):
    __tablename__ = "refusals"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(16))
    destination: Mapped[str | None] = mapped_column(String(63))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    errors: Mapped[dict[str, Any]]  # {"errors": [{"field", "rule"}]}: rules, never values


class PauseRow(Base):
    __tablename__ = "pauses"

    destination: Mapped[str] = mapped_column(String(63), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))  # manual, auth, quota
    reason: Mapped[str] = mapped_column(Text)
    since: Mapped[datetime]
    until: Mapped[datetime | None]  # None: until ops resume it


class DeliveryCountRow(Base):
    """How many deliveries of a destination are in a state, as of the last fold."""

    __tablename__ = "delivery_counts"

    destination: Mapped[str] = mapped_column(String(63), primary_key=True)
    state: Mapped[str] = mapped_column(String(20), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class DeliveryCountChangeRow(Base):
    """
    What one statement did to a (destination, state) count, on PostgreSQL: appended by
    the trigger, so settlements never queue on a shared counter row; folded into
    `delivery_counts` by the sweeper.
    """

    __tablename__ = "delivery_count_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    destination: Mapped[str] = mapped_column(String(63))
    state: Mapped[str] = mapped_column(String(20))
    n: Mapped[int] = mapped_column(BigInteger)


class OutboxRow(Base):
    """
    One settlement event for an upstream app's Celery task: written with the
    settlement, published by the flusher, kept a while once sent.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        # the flusher's "unsent, oldest first": few rows at any time, so a partial index
        Index(
            "ix_outbox_unsent",
            "id",
            postgresql_where=text("sent_at IS NULL"),
            sqlite_where=text("sent_at IS NULL"),
        ),
        # sent rows by the broker epoch they went under, then age: the rows to send again
        # after a wipe (another epoch) and the rows old enough to delete (this epoch, sent_at)
        Index(
            "ix_outbox_sent",
            "sent_epoch",
            "sent_at",
            postgresql_where=text("sent_at IS NOT NULL"),
            sqlite_where=text("sent_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # no foreign key: an event is a copy of what it tells, kept and deleted on its own terms
    lead_id: Mapped[str] = mapped_column(String(32))
    destination: Mapped[str] = mapped_column(String(63))
    #: the upstream app's Celery task and queue, as configured when the lead settled
    task: Mapped[str] = mapped_column(String(200))
    queue: Mapped[str] = mapped_column(String(200))
    #: the message's one argument: ids, state, redacted detail, never personal data
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    #: None until published
    sent_at: Mapped[datetime | None]
    #: the broker epoch it was published under: a broker that lost it has another one
    sent_epoch: Mapped[str | None] = mapped_column(String(32))
