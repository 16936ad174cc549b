"""The ledger on a real PostgreSQL: idempotent intake, disjoint claims, leases that expire."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from worker import ledger
from worker.leads import LeadState
from worker.ledger.db import make_engine, make_sessionmaker
from worker.ledger.store import NewLead
from worker.ledger.tables import DeliveryRow, LeadRow
from worker.outcomes import Settlement

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def sessions(url: str) -> sessionmaker[Session]:
    return make_sessionmaker(make_engine(url))


def lead(i: int, key: str | None = None, stages: int = 1) -> NewLead:
    return NewLead(
        id=f"lead{i:028d}",
        destination="k",
        payload={"n": i},
        source="test",
        idempotency_key=key,
        stages=stages,
    )


def test_the_same_key_twice_gives_one_lead_and_the_first_id(ledger_url: str) -> None:
    make = sessions(ledger_url)
    with make.begin() as s:
        first = ledger.insert_leads(s, [lead(1, "order-1"), lead(2, "order-1"), lead(3)], NOW)
    with make.begin() as s:
        again = ledger.insert_leads(s, [lead(4, "order-1")], NOW)
        count = s.scalar(select(func.count()).select_from(DeliveryRow))
    assert first == [(lead(1).id, True), (lead(1).id, False), (lead(3).id, True)]
    assert again == [(lead(1).id, False)]
    assert count == 2


def test_racing_producers_with_one_key_make_one_lead(ledger_url: str) -> None:
    """INSERT … ON CONFLICT, not check-then-insert: eight threads, one key, one lead."""
    make = sessions(ledger_url)
    barrier = threading.Barrier(8)
    ids: list[str] = []

    def produce(i: int) -> None:
        barrier.wait()
        with make.begin() as s:
            ids.append(ledger.insert_leads(s, [lead(100 + i, "same-key")], NOW)[0][0])

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with make() as s:
        assert s.scalar(select(func.count()).select_from(LeadRow)) == 1
    assert len(set(ids)) == 1


def test_concurrent_claims_take_disjoint_batches(ledger_url: str) -> None:
    make = sessions(ledger_url)
    with make.begin() as s:
        ledger.insert_leads(s, [lead(i) for i in range(10)], NOW)
    first, second = make(), make()
    a = ledger.claim_due(first, "k", limit=6, now=NOW, lease=LEASE, owner="a")
    b = ledger.claim_due(
        second, "k", limit=6, now=NOW, lease=LEASE, owner="b"
    )  # while a holds its locks
    first.commit()
    second.commit()
    assert len(a) == 6 and len(b) == 4
    assert not {d.id for d in a} & {d.id for d in b}


def test_only_the_lease_owner_can_settle(ledger_url: str) -> None:
    make = sessions(ledger_url)
    with make.begin() as s:
        ledger.insert_leads(s, [lead(1)], NOW)
        (d,) = ledger.claim_due(s, "k", limit=1, now=NOW, lease=LEASE, owner="a")
    done = Settlement(
        delivery_id=d.id, state=LeadState.DELIVERED, attempts=1, due_at=None, detail="ok"
    )
    with make.begin() as s:
        assert ledger.settle(s, "someone-else", [done], NOW) == 0
        assert ledger.settle(s, "a", [done], NOW) == 1


def test_an_expired_lease_is_swept_back_in_doubt_and_counted(ledger_url: str) -> None:
    make = sessions(ledger_url)
    with make.begin() as s:
        ledger.insert_leads(s, [lead(1)], NOW)
        ledger.claim_due(s, "k", limit=1, now=NOW, lease=LEASE, owner="dead-worker")
    with make.begin() as s:
        assert ledger.sweep_expired_leases(s, "k", now=NOW + LEASE / 2, max_attempts=3) == 0
        assert ledger.sweep_expired_leases(s, "k", now=NOW + LEASE * 2, max_attempts=3) == 1
        (d,) = ledger.claim_due(s, "k", limit=1, now=NOW + LEASE * 2, lease=LEASE, owner="b")
    assert d.in_doubt and d.attempt == 2


def test_a_doubt_clears_while_due_but_stays_on_record_once_settled(ledger_url: str) -> None:
    make = sessions(ledger_url)
    with make.begin() as s:
        ledger.insert_leads(s, [lead(1), lead(2)], NOW)
        a, b = ledger.claim_due(s, "k", limit=2, now=NOW, lease=LEASE, owner="a")
        lost = Settlement(
            delivery_id=a.id,
            state=LeadState.RETRY_WAIT,
            attempts=1,
            due_at=NOW,
            detail="answer lost",
            in_doubt=True,
        )
        ok = Settlement(
            delivery_id=b.id, state=LeadState.DELIVERED, attempts=1, due_at=None, detail="ok"
        )
        ledger.settle(s, "a", [lost, ok], NOW)
    with make.begin() as s:
        (again,) = ledger.claim_due(s, "k", limit=1, now=NOW, lease=LEASE, owner="b")
        assert again.in_doubt
        found = Settlement(
            delivery_id=a.id, state=LeadState.DELIVERED, attempts=2, due_at=None, detail="found"
        )
        ledger.settle(s, "b", [found], NOW)
    with make() as s:
        doubts = {r.lead_id: r.in_doubt for r in s.execute(select(DeliveryRow)).scalars()}
    assert doubts == {lead(1).id: True, lead(2).id: False}


def test_a_swept_lead_goes_back_to_the_head_of_the_line(ledger_url: str) -> None:
    """Its lookup then comes soon, before newer leads bury it in the platform's list."""
    make = sessions(ledger_url)
    with make.begin() as s:
        ledger.insert_leads(s, [lead(1)], NOW)
        ledger.claim_due(s, "k", limit=1, now=NOW, lease=LEASE, owner="dead-worker")
        ledger.insert_leads(s, [lead(2)], NOW + timedelta(seconds=1))
    later = NOW + LEASE * 2
    with make.begin() as s:
        ledger.sweep_expired_leases(s, "k", now=later, max_attempts=3)
        (first,) = ledger.claim_due(s, "k", limit=1, now=later, lease=LEASE, owner="b")
    assert first.lead_id == lead(1).id and first.in_doubt


def test_a_lead_that_keeps_killing_workers_ends_dead(ledger_url: str) -> None:
    make = sessions(ledger_url)
    with make.begin() as s:
        ledger.insert_leads(s, [lead(1)], NOW)
    t = NOW
    for _ in range(2):
        with make.begin() as s:
            ledger.claim_due(s, "k", limit=1, now=t, lease=LEASE, owner="x")
        t += LEASE * 2
        with make.begin() as s:
            ledger.sweep_expired_leases(s, "k", now=t, max_attempts=2)
    with make() as s:
        assert s.scalar(select(DeliveryRow.state)) == LeadState.DEAD


def test_later_stages_are_held_until_released(ledger_url: str) -> None:
    make = sessions(ledger_url)
    with make.begin() as s:
        ledger.insert_leads(s, [lead(1, stages=3)], NOW)
        due = ledger.claim_due(s, "k", limit=10, now=NOW, lease=LEASE, owner="a")
        assert [d.stage for d in due] == [1]
        assert ledger.release_next_stage(s, lead(1).id, 1, NOW + timedelta(minutes=150), NOW)
    with make.begin() as s:
        assert (
            ledger.claim_due(
                s, "k", limit=10, now=NOW + timedelta(minutes=149), lease=LEASE, owner="b"
            )
            == []
        )
        later = ledger.claim_due(
            s, "k", limit=10, now=NOW + timedelta(minutes=150), lease=LEASE, owner="b"
        )
        assert [d.stage for d in later] == [2]


def test_times_come_back_aware_in_utc_on_postgresql_and_sqlite(
    ledger_url: str, tmp_path: object
) -> None:
    for url in (ledger_url, f"sqlite:///{tmp_path}/t.db"):
        if url.startswith("sqlite"):
            from worker.ledger import migrate

            migrate.upgrade(url)
        make = sessions(url)
        with make.begin() as s:
            ledger.insert_leads(s, [lead(7)], NOW)
        with make() as s:
            created = s.scalar(select(LeadRow.created_at))
        assert created == NOW and created is not None and created.tzinfo is not None
