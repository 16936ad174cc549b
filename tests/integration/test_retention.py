"""
Retention (`worker.ledger.retention`, `keep_days`) on PostgreSQL and SQLite: whole
settled leads past the cut go, with their deliveries, their results and the
exchanges that carried only them; nothing pending, nothing settled since the cut,
no staged lead with a stage still open, no other destination's rows. Small batches
walk forward, a time budget stops a run and the next one finishes, and the
delivery counts follow the deletions.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from worker import ledger
from worker.leads import Delivery, LeadState
from worker.ledger import counts
from worker.ledger.retention import Removed, delete_settled
from worker.ledger.store import NewLead
from worker.ledger.tables import (
    AttemptResultRow,
    AttemptRow,
    DeliveryCountChangeRow,
    DeliveryRow,
    LeadRow,
)
from worker.outcomes import AttemptRecord, Settlement
from worker.runtime.beat import schedule
from worker.settings import load, parse_destinations

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=100)
RECENT = NOW - timedelta(days=10)
CUT = NOW - timedelta(days=30)
LEASE = timedelta(seconds=30)


def lead(name: str, destination: str = "k", stages: int = 1) -> NewLead:
    return NewLead(
        id=f"{name:0>32}", destination=destination, payload={}, source="t", stages=stages
    )


def settle(
    s: Session, destination: str, at: datetime, n: int, state: LeadState = LeadState.DELIVERED
) -> list[Delivery]:
    got = ledger.claim_due(s, destination, limit=n, now=at, lease=LEASE, owner="w")
    done = [
        Settlement(delivery_id=d.id, state=state, attempts=1, due_at=None, detail="") for d in got
    ]
    assert ledger.settle(s, "w", done, at) == len(got)
    return got


def exchange(
    s: Session, destination: str, at: datetime, carried: list[Delivery], kind: str = "send"
) -> int:
    record = AttemptRecord(
        destination=destination,
        kind=kind,
        at=at,
        request={},
        status_code=200,
        answer="",
        error="",
        elapsed_ms=1,
    )
    return ledger.record_attempt(s, record, [(d.id, "delivered", "") for d in carried])


def test_settled_leads_past_the_cut_go_whole_and_nothing_else_does(
    ledger_sessions: sessionmaker[Session],
) -> None:
    with ledger_sessions.begin() as s:
        # old, settled one at a time so each has its own settled_at: a1..a5 delivered
        for i in range(5):
            ledger.insert_leads(s, [lead(f"a{i}")], OLD)
        old = [settle(s, "k", OLD + timedelta(minutes=i), 1)[0] for i in range(5)]
        # staged: stage 1 settled long ago, stage 2 still held: the lead stays
        ledger.insert_leads(s, [lead("staged", stages=2)], OLD)
        (stage1,) = settle(s, "k", OLD + timedelta(hours=1), 1)
        ledger.insert_leads(s, [lead("recent")], RECENT)
        settle(s, "k", RECENT, 1, LeadState.REJECTED)
        ledger.insert_leads(s, [lead("waiting")], OLD)  # never sent: pending for 100 days
        ledger.insert_leads(s, [lead("other", destination="o")], OLD)
        settle(s, "o", OLD, 1)

        only_old = exchange(s, "k", OLD, old[:3])  # carried deleted leads only: goes
        mixed = exchange(s, "k", OLD, [old[3], stage1])  # carried the staged lead too: stays
        token = exchange(s, "k", OLD, [], kind="token")  # no lead at all, old: goes
        fresh_token = exchange(s, "k", RECENT, [], kind="token")  # after the cut: stays
        exchange(s, "o", OLD, [])  # another destination's: stays

    heard: list[Removed] = []
    removed = delete_settled(ledger_sessions, "k", before=CUT, batch=2, progress=heard.append)

    assert (removed.leads, removed.attempts, removed.finished) == (5, 2, True)
    assert len(heard) >= 3, "a batch of 2 reports as it goes"
    with ledger_sessions() as s:
        left = set(s.scalars(select(LeadRow.id)))
        assert left == {f"{n:0>32}" for n in ("staged", "recent", "waiting", "other")}
        attempts = set(s.scalars(select(AttemptRow.id).where(AttemptRow.destination == "k")))
        assert attempts == {mixed, fresh_token}
        assert only_old not in attempts and token not in attempts
        assert s.scalar(select(func.count()).select_from(AttemptRow)) == 3
        # the results of the deleted deliveries went with them; the staged lead's stayed
        results = s.execute(select(AttemptResultRow.attempt_id, AttemptResultRow.delivery_id))
        assert set(results) == {(mixed, stage1.id)}
        assert counts.by_state(s) == {
            "k": {"delivered": 1, "held": 1, "rejected": 1, "queued": 1},
            "o": {"delivered": 1},
        }
        assert s.scalar(select(func.count()).select_from(DeliveryRow)) == 5


def test_a_run_stops_at_its_budget_and_the_next_finishes(
    ledger_sessions: sessionmaker[Session],
) -> None:
    with ledger_sessions.begin() as s:
        for i in range(7):
            ledger.insert_leads(s, [lead(f"b{i}")], OLD)
            settle(s, "k", OLD + timedelta(seconds=i), 1)
    batches = iter(range(100))
    first = delete_settled(
        ledger_sessions, "k", before=CUT, batch=3, deadline=lambda: next(batches) >= 1
    )
    assert (first.leads, first.finished) == (3, False)
    second = delete_settled(ledger_sessions, "k", before=CUT, batch=3)
    assert (second.leads, second.finished) == (4, True)
    with ledger_sessions() as s:
        assert s.scalar(select(func.count()).select_from(LeadRow)) == 0
        assert counts.by_state(s) == {}


def test_many_leads_settled_at_one_instant_all_go_in_small_batches(
    ledger_sessions: sessionmaker[Session],
) -> None:
    """A batch that ends inside a run of equal settled_at values carries on past it."""
    with ledger_sessions.begin() as s:
        ledger.insert_leads(s, [lead(f"c{i}") for i in range(11)], OLD)
        settle(s, "k", OLD, 11)
    with ledger_sessions() as s:
        changes = s.scalar(select(func.count()).select_from(DeliveryCountChangeRow))
    removed = delete_settled(ledger_sessions, "k", before=CUT, batch=4)
    assert (removed.leads, removed.finished) == (11, True)
    with ledger_sessions() as s:
        added = s.scalar(select(func.count()).select_from(DeliveryCountChangeRow)) - changes
        assert counts.by_state(s) == {}
    # one count change per batch's statement, not one per lead (PostgreSQL keeps changes)
    assert added <= (3 if on_postgresql(ledger_sessions) else 0)


def on_postgresql(sessions: sessionmaker[Session]) -> bool:
    with sessions() as s:
        return s.get_bind().dialect.name == "postgresql"


def test_beat_runs_retention_only_where_a_destination_keeps_days() -> None:
    table = {"platform": "kuper", "base_url": "http://x", "username": "u", "password": "p"}
    kept = load(destinations=parse_destinations({"k": {**table, "keep_days": 30}}))
    forever = load(destinations=parse_destinations({"k": table}))
    assert schedule(kept)["retention"]["task"] == "leadrelay.retention"
    assert "retention" not in schedule(forever)
