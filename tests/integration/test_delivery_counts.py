"""
The delivery counts `stats` and /metrics read (migration 0006, `worker.ledger.counts`)
against a real GROUP BY of `deliveries`, on PostgreSQL and SQLite: through intake,
claims, settlements, a requeue, statements that change nothing, a lead's deletion,
folded or not, from two writers at once, and after an upgrade of a ledger in use.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from tests.factories import new_lead
from worker import ledger
from worker.leads import Delivery, LeadState
from worker.ledger import counts, migrate, reports
from worker.ledger.db import make_engine, make_sessionmaker
from worker.ledger.store import NewLead, RequeueFilter
from worker.ledger.tables import DeliveryCountChangeRow, DeliveryRow, LeadRow
from worker.outcomes import Settlement

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def new(i: int, destination: str = "k", stages: int = 1) -> NewLead:
    return new_lead(f"{destination}{i:027d}", stages=stages, destination=destination)


def scanned(s: Session) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    rows = s.execute(
        select(DeliveryRow.destination, DeliveryRow.state, func.count()).group_by(
            DeliveryRow.destination, DeliveryRow.state
        )
    )
    for dest, state, n in rows:
        out.setdefault(dest, {})[state] = n
    return out


def agree(sessions: sessionmaker[Session]) -> dict[str, dict[str, int]]:
    with sessions() as s:
        kept, truth = counts.by_state(s), scanned(s)
    assert kept == truth
    return kept


def settle_all(s: Session, owner: str, claimed: list[Delivery], state: LeadState) -> None:
    done = [
        Settlement(delivery_id=d.id, state=state, attempts=1, due_at=None, detail="")
        for d in claimed
    ]
    assert ledger.settle(s, owner, done, NOW) == len(done)


def test_counts_follow_every_change_folded_or_not(ledger_sessions: sessionmaker[Session]) -> None:
    with ledger_sessions.begin() as s:
        ledger.insert_leads(s, [new(i) for i in range(40)], NOW)
        ledger.insert_leads(s, [new(i, "s", stages=3) for i in range(5)], NOW)
    assert agree(ledger_sessions) == {"k": {"queued": 40}, "s": {"queued": 5, "held": 10}}

    with ledger_sessions.begin() as s:
        batch = ledger.claim_due(s, "k", limit=25, now=NOW, lease=LEASE, owner="w")
        settle_all(s, "w", batch[:20], LeadState.DELIVERED)
        settle_all(s, "w", batch[20:], LeadState.DEAD)
    assert agree(ledger_sessions) == {
        "k": {"queued": 15, "delivered": 20, "dead": 5},
        "s": {"queued": 5, "held": 10},
    }

    with ledger_sessions.begin() as s:
        counts.fold(s)
        # a statement that moves no state changes no count
        s.execute(update(DeliveryRow).values(detail="touched"))
        ledger.requeue(s, RequeueFilter(destination="k"), NOW)
    assert agree(ledger_sessions)["k"] == {"queued": 20, "delivered": 20}

    with ledger_sessions.begin() as s:  # deleted as retention deletes: deliveries, then leads
        s.execute(delete(DeliveryRow).where(DeliveryRow.destination == "s"))
        s.execute(delete(LeadRow).where(LeadRow.destination == "s"))
    with ledger_sessions.begin() as s:
        counts.fold(s)
        if s.get_bind().dialect.name == "postgresql":
            assert s.scalar(select(func.count()).select_from(DeliveryCountChangeRow)) == 0
    assert agree(ledger_sessions) == {"k": {"queued": 20, "delivered": 20}}
    with ledger_sessions() as s:
        assert reports.stats(s, NOW)["k"].states == {"queued": 20, "delivered": 20}


def test_two_writers_and_a_fold_at_once_lose_no_change(ledger_url: str) -> None:
    sessions = make_sessionmaker(make_engine(ledger_url))
    with sessions.begin() as s:
        ledger.insert_leads(s, [new(i) for i in range(600)], NOW)
    errors: list[BaseException] = []

    def drain(owner: str) -> None:
        try:
            while True:
                with sessions.begin() as s:
                    got = ledger.claim_due(s, "k", limit=7, now=NOW, lease=LEASE, owner=owner)
                    if not got:
                        return
                    settle_all(s, owner, got, LeadState.DELIVERED)
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    def folding(stop: threading.Event) -> None:
        while not stop.is_set():
            with sessions.begin() as s:
                counts.fold(s)

    stop = threading.Event()
    folder = threading.Thread(target=folding, args=(stop,))
    folder.start()
    writers = [threading.Thread(target=drain, args=(f"w{i}",)) for i in range(3)]
    for t in writers:
        t.start()
    for t in writers:
        t.join(60)
    stop.set()
    folder.join(10)
    assert not errors, errors
    assert agree(sessions) == {"k": {"delivered": 600}}
    sessions.kw["bind"].dispose()


def test_the_upgrade_counts_a_ledger_in_use(empty_url: str) -> None:
    migrate.upgrade(empty_url, "0005")
    engine = make_engine(empty_url)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        ledger.insert_leads(s, [new(i) for i in range(30)], NOW)
        batch = ledger.claim_due(s, "k", limit=12, now=NOW, lease=LEASE, owner="w")
        settle_all(s, "w", batch[:10], LeadState.REJECTED)
    migrate.upgrade(empty_url)
    migrate.check(empty_url)
    engine.dispose()
    assert agree(sessions) == {"k": {"queued": 18, "sending": 2, "rejected": 10}}
    with sessions.begin() as s:  # and keeps counting after it
        settle_all(s, "w", batch[10:], LeadState.DELIVERED)
    assert agree(sessions)["k"] == {"queued": 18, "rejected": 10, "delivered": 2}
    engine.dispose()
