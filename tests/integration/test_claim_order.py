"""
Claims take in-doubt deliveries first, on a real PostgreSQL and on SQLite.

A lead whose answer was lost must be looked up before newer leads bury it in
the platform's list: behind a backlog of fresh leads, its lookup came minutes
later, too deep to find it, and the lead went out twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text, update
from sqlalchemy.orm import Session, sessionmaker

from worker import ledger
from worker.leads import LeadState
from worker.ledger.store import NewLead
from worker.ledger.tables import DeliveryRow
from worker.outcomes import Settlement

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def lead(i: int) -> NewLead:
    return NewLead(id=f"lead{i:028d}", destination="s", payload={"n": i}, source="test")


def backlog(ledger_sessions: sessionmaker[Session], fresh: int, doubtful: list[int]) -> None:
    """`fresh` leads due at NOW - 1h …; then the leads `doubtful` lost their answer (due later)."""
    with ledger_sessions.begin() as s:
        ledger.insert_leads(s, [lead(i) for i in range(fresh)], NOW - timedelta(hours=1))
        ledger.insert_leads(s, [lead(1000 + i) for i in doubtful], NOW - timedelta(minutes=5))
        claimed = ledger.claim_due(
            s, "s", limit=fresh + len(doubtful), now=NOW, lease=LEASE, owner="w"
        )
        lost = {d.lead_id: d for d in claimed if d.lead_id >= lead(1000).id}
        due = {lead(1000 + i).id: NOW - timedelta(seconds=i) for i in doubtful}
        ledger.settle(
            s,
            "w",
            [
                Settlement(
                    delivery_id=d.id,
                    state=LeadState.RETRY_WAIT,
                    attempts=1,
                    due_at=due[k],
                    detail="lost",
                    external_id=None,
                    data={},
                    in_doubt=True,
                )
                for k, d in lost.items()
            ],
            NOW,
        )
        s.execute(
            update(DeliveryRow)
            .where(DeliveryRow.in_doubt.is_(False))
            .values(state=LeadState.QUEUED, lease_until=None, lease_owner=None)
        )


def test_an_in_doubt_delivery_is_claimed_before_older_fresh_ones(
    ledger_sessions: sessionmaker[Session],
) -> None:
    """500 fresh leads due an hour earlier: the one in doubt still comes first."""
    backlog(ledger_sessions, 500, [1])
    with ledger_sessions.begin() as s:
        (first,) = ledger.claim_due(s, "s", limit=1, now=NOW, lease=LEASE, owner="a")
    assert first.in_doubt
    assert first.lead_id == lead(1001).id


def test_in_doubt_ones_come_by_due_time_then_the_rest_by_due_time(
    ledger_sessions: sessionmaker[Session],
) -> None:
    """In doubt first (oldest due first among them), then the fresh ones, oldest due first."""
    backlog(ledger_sessions, 3, [1, 3, 2])  # due NOW-1s, NOW-3s, NOW-2s
    with ledger_sessions.begin() as s:
        batch = ledger.claim_due(s, "s", limit=4, now=NOW, lease=LEASE, owner="a")
    assert [d.in_doubt for d in batch] == [True, True, True, False]
    with ledger_sessions.begin() as s:
        rest = ledger.claim_due(s, "s", limit=10, now=NOW, lease=LEASE, owner="b")
    assert [d.in_doubt for d in rest] == [False, False]
    assert {d.lead_id for d in batch + rest} == {lead(i).id for i in (0, 1, 2, 1001, 1002, 1003)}


def test_in_doubt_order_among_themselves_is_by_due_time(
    ledger_sessions: sessionmaker[Session],
) -> None:
    """One at a time, the in-doubt leads come oldest due first."""
    backlog(ledger_sessions, 2, [1, 3, 2])
    order = []
    for owner in "abc":
        with ledger_sessions.begin() as s:
            (d,) = ledger.claim_due(s, "s", limit=1, now=NOW, lease=LEASE, owner=owner)
        order.append(d.lead_id)
    assert order == [lead(1003).id, lead(1002).id, lead(1001).id]


def test_an_in_doubt_delivery_not_yet_due_waits_its_turn(
    ledger_sessions: sessionmaker[Session],
) -> None:
    """In doubt comes first only among due rows: its due time still holds."""
    backlog(ledger_sessions, 1, [1])
    with ledger_sessions.begin() as s:
        s.execute(update(DeliveryRow).where(DeliveryRow.in_doubt).values(due_at=NOW + LEASE))
        (first,) = ledger.claim_due(s, "s", limit=1, now=NOW, lease=LEASE, owner="a")
    assert not first.in_doubt


def test_the_in_doubt_rows_have_a_partial_index(ledger_sessions: sessionmaker[Session]) -> None:
    """ix_deliveries_in_doubt_due holds only rows in doubt, on both dialects."""
    with ledger_sessions() as s:
        if s.get_bind().dialect.name == "postgresql":
            sql = s.scalar(
                text(
                    "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_deliveries_in_doubt_due'"
                )
            )
        else:
            sql = s.scalar(
                text("SELECT sql FROM sqlite_master WHERE name = 'ix_deliveries_in_doubt_due'")
            )
    assert sql is not None
    assert "WHERE in_doubt" in sql


def test_the_in_doubt_pass_reads_the_partial_index(ledger_sessions: sessionmaker[Session]) -> None:
    """The planner can serve the first pass from the partial index (seq scans off, PostgreSQL)."""
    backlog(ledger_sessions, 50, [1])
    from worker.ledger.store import _due  # the claim's own first-pass query

    query = _due("s", {LeadState.QUEUED, LeadState.RETRY_WAIT}, NOW, DeliveryRow.in_doubt, 1)
    with ledger_sessions() as s:
        dialect = s.get_bind().dialect.name
        compiled = query.compile(s.get_bind(), compile_kwargs={"literal_binds": True})
        if dialect == "postgresql":
            s.execute(text("SET enable_seqscan = off"))
            s.execute(text("ANALYZE deliveries"))
            plan = "\n".join(s.scalars(text(f"EXPLAIN {compiled}")))
        else:
            plan = "\n".join(str(r) for r in s.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))
    assert "ix_deliveries_in_doubt_due" in plan, plan
