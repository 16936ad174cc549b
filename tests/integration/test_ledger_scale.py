"""
The ledger's busiest queries keep their cost as it grows: each reads an index in the
order it answers in, so its plan holds no sort of the backlog (PostgreSQL and SQLite).

These are plan tests, not timings: the figures at millions of rows are
tests/benchmarks/bench_ledger.py's. Behind a backlog of 1,000,000 due leads a claim
that sorted them all took 435 ms; one that reads ix_deliveries_claim stops at its limit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from worker import ledger
from worker.leads import LeadState
from worker.ledger import db, reports
from worker.ledger.tables import DeliveryRow, LeadRow

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
#: enough rows that PostgreSQL's statistics, not its small-table shortcuts, choose the plan
ROWS = 20_000


def fill(sessions: sessionmaker[Session], n: int) -> None:
    """
    `n` deliveries at "k" and 50 at "other", ids from 1: every fourth one delivered
    (id 1, 5, …, one every 30 s going back from NOW), every fourth waiting to retry,
    the rest queued; the due times of both waiting states interleave a second
    apart, the newest due after NOW; ids 8, 12 and 16 are in doubt.
    """
    leads, deliveries = [], []
    for i in range(1, n + 51):
        state = {1: LeadState.DELIVERED, 2: LeadState.RETRY_WAIT}.get(i % 4, LeadState.QUEUED)
        settled = state == LeadState.DELIVERED
        leads.append(
            {
                "id": f"lead{i:028d}",
                "destination": "k" if i <= n else "other",
                "idempotency_key": None,
                "payload": {"n": i},
                "source": "test",
                "created_at": NOW - timedelta(days=1),
            }
        )
        deliveries.append(
            {
                "id": i,
                "lead_id": f"lead{i:028d}",
                "destination": "k" if i <= n else "other",
                "stage": 0,
                "state": str(state),
                "attempts": 1 if settled else 0,
                "due_at": None if settled else NOW + timedelta(seconds=300 - n + i),
                "in_doubt": i in (8, 12, 16),
                "detail": "",
                "data": {},
                "created_at": NOW - timedelta(days=1),
                "updated_at": NOW - timedelta(days=1),
                "settled_at": NOW - timedelta(seconds=30 * i) if settled else None,
            }
        )
    with sessions.begin() as s:
        db.bulk_insert(s, LeadRow, leads)
        db.bulk_insert(s, DeliveryRow, deliveries)


def on_postgresql(sessions: sessionmaker[Session]) -> bool:
    with sessions() as s:
        return s.get_bind().dialect.name == "postgresql"


@contextmanager
def statements(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every statement `engine` sends while the block runs, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def keep(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", keep)


def claim_statements(sessions: sessionmaker[Session], limit: int) -> list[tuple[str, Any]]:
    """
    The UPDATEs one send claim of `limit` runs, rolled back after: on SQLite its two
    passes (the in-doubt rows, then the others), on PostgreSQL one statement whose CTEs
    `doubtful` and `fresh` are the two passes.
    """
    with sessions() as s, statements(s.get_bind()) as seen:  # type: ignore[arg-type]
        claimed = ledger.claim_due(s, "k", limit=limit, now=NOW, lease=LEASE, owner="w")
        s.rollback()
    assert len(claimed) == limit
    updates = [(sql, params) for sql, params in seen if "UPDATE deliveries" in sql]
    expected = 1 if on_postgresql(sessions) else 2
    assert len(updates) == expected, f"a claim is {expected} statement(s): {updates}"
    return updates


def pg_plan(
    sessions: sessionmaker[Session], sql: str, params: Any, subplan: str | None = None
) -> list[dict[str, Any]]:
    """The nodes of PostgreSQL's plan for `sql` (or of its subplan so named), depth first."""
    with sessions() as s:
        raw = s.connection().exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}", params).scalar()
    root = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    if subplan is not None:
        found = [n for n in _walk(root) if n.get("Subplan Name") == subplan]
        assert found, f"no subplan {subplan!r} in the plan"
        root = found[0]
    return _walk(root)


def _walk(root: dict[str, Any]) -> list[dict[str, Any]]:
    nodes, todo = [], [root]
    while todo:
        node = todo.pop()
        nodes.append(node)
        todo += node.get("Plans", [])
    return nodes


def sqlite_plan(sessions: sessionmaker[Session], sql: str, params: Any) -> str:
    with sessions() as s:
        rows = s.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params).all()
    return "\n".join(str(r[-1]) for r in rows)


@pytest.fixture
def big(ledger_sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """A ledger of ROWS deliveries (PostgreSQL, analysed) or a tenth of that (SQLite)."""
    postgres = on_postgresql(ledger_sessions)
    fill(ledger_sessions, ROWS if postgres else ROWS // 10)
    if postgres:
        with ledger_sessions.begin() as s:
            s.execute(text("ANALYZE deliveries"))
            s.execute(text("ANALYZE leads"))
    return ledger_sessions


def test_a_claim_reads_its_rows_in_due_order_from_the_claim_index(
    big: sessionmaker[Session],
) -> None:
    """The fresh pass walks ix_deliveries_claim: no sort node, no scan of the table."""
    *_, (sql, params) = claim_statements(big, 50)
    if on_postgresql(big):
        nodes = pg_plan(big, sql, params, subplan="CTE fresh")
        kinds = [n["Node Type"] for n in nodes]
        assert "ix_deliveries_claim" in [n.get("Index Name") for n in nodes], kinds
        assert not {"Sort", "Incremental Sort", "Seq Scan"} & set(kinds), kinds
        whole = [n["Node Type"] for n in pg_plan(big, sql, params)]
        assert "Seq Scan" not in whole, whole
    else:
        plan = sqlite_plan(big, sql, params)
        assert "ix_deliveries_claim" in plan, plan
        assert "TEMP B-TREE" not in plan, plan


def test_the_in_doubt_pass_still_reads_its_own_index(big: sessionmaker[Session]) -> None:
    """The first pass keeps ix_deliveries_in_doubt_due: the new index holds no row in doubt."""
    (sql, params), *_ = claim_statements(big, 50)
    if on_postgresql(big):
        nodes = pg_plan(big, sql, params, subplan="CTE doubtful")
        names = [n.get("Index Name") for n in nodes]
    else:
        names = [sqlite_plan(big, sql, params)]
    assert any("ix_deliveries_in_doubt_due" in str(n) for n in names), names


def test_a_claim_takes_both_waiting_states_in_one_due_order(
    big: sessionmaker[Session],
) -> None:
    """Queued and retry_wait interleave by (due_at, id) after the rows in doubt, none not due."""
    with big() as s:
        expected = s.execute(
            text(
                "SELECT id, state FROM deliveries WHERE destination = 'k' AND due_at <= :now"
                " AND state IN ('queued', 'retry_wait') AND NOT in_doubt"
                " ORDER BY due_at, id LIMIT 47"
            ),
            {"now": NOW},
        ).all()
    with big.begin() as s:
        batch = ledger.claim_due(s, "k", limit=50, now=NOW, lease=LEASE, owner="w")
    assert [d.in_doubt for d in batch[:3]] == [True] * 3
    fresh = sorted(batch[3:], key=lambda d: d.id)
    assert [d.id for d in fresh] == sorted(r.id for r in expected)
    assert {r.state for r in expected} == {LeadState.QUEUED, LeadState.RETRY_WAIT}


def test_settling_rates_read_the_settled_index(big: sessionmaker[Session]) -> None:
    """stats' last hour of settled rows comes from ix_deliveries_settled, not the whole table."""
    with big() as s, statements(s.get_bind()) as seen:  # type: ignore[arg-type]
        found = reports.stats(s, NOW)
    assert found["k"].settled_last_hour == 30  # ids 1, 5, …, 117: 30 s apart, back from NOW
    (sql, params) = next((q, p) for q, p in seen if "settled_at >=" in q)
    if on_postgresql(big):
        nodes = pg_plan(big, sql, params)
        scans = [n for n in nodes if "Relation Name" in n]
        assert {n.get("Index Name") for n in scans} == {"ix_deliveries_settled"}, nodes
    else:
        plan = sqlite_plan(big, sql, params)
        assert "USING COVERING INDEX ix_deliveries_settled" in plan, plan
        assert "SCAN deliveries" not in plan, plan


def test_the_oldest_due_is_one_index_entry_per_state(big: sessionmaker[Session]) -> None:
    """stats' oldest due delivery: the first entry of each due state's range, not a full read."""
    with big() as s, statements(s.get_bind()) as seen:  # type: ignore[arg-type]
        found = reports.stats(s, NOW)
    assert found["k"].oldest_due_s is not None
    (sql, params) = next((q, p) for q, p in seen if "ORDER BY deliveries.due_at" in q)
    if on_postgresql(big):
        nodes = pg_plan(big, sql, params)
        kinds = [n["Node Type"] for n in nodes]
        assert not {"Sort", "Seq Scan", "Aggregate"} & set(kinds), kinds
    else:
        plan = sqlite_plan(big, sql, params)
        assert "INDEX ix_deliveries_due (destination=? AND state=? AND due_at<?)" in plan, plan
        assert "SCAN deliveries" not in plan, plan
        assert "TEMP B-TREE" not in plan, plan


def test_stats_read_the_kept_counts_not_every_delivery(big: sessionmaker[Session]) -> None:
    """The count by state reads the counts of migration 0006: no statement groups deliveries."""
    with big() as s, statements(s.get_bind()) as seen:  # type: ignore[arg-type]
        found = reports.stats(s, NOW)
    n = ROWS if on_postgresql(big) else ROWS // 10
    assert found["k"].total == n
    assert found["k"].count(LeadState.DELIVERED) == n // 4
    grouped = [q for q, _ in seen if "GROUP BY" in q]
    assert grouped and all("deliveries." not in q for q in grouped), grouped


def test_the_sweeper_s_due_counts_stop_at_their_cap(big: sessionmaker[Session]) -> None:
    later = NOW + timedelta(hours=1)
    with big() as s:
        full = ledger.due_counts(s, later)
        with statements(s.get_bind()) as seen:  # type: ignore[arg-type]
            capped = ledger.due_counts(s, later, ["k", "other", "nothing-here"], cap=100)
    assert full["k"] > 100 and full["other"] < 100
    assert capped == {"k": 100, "other": full["other"]}
    (sql, params) = seen[-1]
    if on_postgresql(big):
        nodes = pg_plan(big, sql, params)
        scans = {n.get("Index Name") for n in nodes if "Relation Name" in n}
        assert scans == {"ix_deliveries_due"}, nodes
        assert "Sort" not in {n["Node Type"] for n in nodes}, nodes
    else:
        plan = sqlite_plan(big, sql, params)
        assert "SCAN deliveries" not in plan, plan
