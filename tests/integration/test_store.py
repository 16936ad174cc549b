"""
The ledger on a real PostgreSQL and on SQLite: idempotent intake, disjoint claims,
leases that expire, and answers that are values, never ORM rows.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from tests.factories import new_lead
from worker import ledger
from worker.leads import LeadState
from worker.ledger import db, reports
from worker.ledger.db import make_engine, make_sessionmaker
from worker.ledger.store import NewLead, _due
from worker.ledger.tables import Base, DeliveryRow, LeadRow
from worker.outcomes import AttemptRecord, Settlement

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def sessions(url: str) -> sessionmaker[Session]:
    return make_sessionmaker(make_engine(url))


def lead(i: int, key: str | None = None, stages: int = 1) -> NewLead:
    return new_lead(i, key, stages)


def test_the_same_key_twice_gives_one_lead_and_the_first_id(
    ledger_sessions: sessionmaker[Session],
) -> None:
    with ledger_sessions.begin() as s:
        first = ledger.insert_leads(s, [lead(1, "order-1"), lead(2, "order-1"), lead(3)], NOW)
    with ledger_sessions.begin() as s:
        again = ledger.insert_leads(s, [lead(4, "order-1")], NOW)
        count = s.scalar(select(func.count()).select_from(DeliveryRow))
    assert first == [(lead(1).id, True), (lead(1).id, False), (lead(3).id, True)]
    assert again == [(lead(1).id, False)]
    assert count == 2


def test_racing_producers_with_one_key_make_one_lead(ledger_url: str) -> None:
    """INSERT … ON CONFLICT, not check-then-insert: eight threads, one key, one lead."""
    ledger_sessions = sessions(ledger_url)
    barrier = threading.Barrier(8)
    ids: list[str] = []

    def produce(i: int) -> None:
        barrier.wait()
        with ledger_sessions.begin() as s:
            ids.append(ledger.insert_leads(s, [lead(100 + i, "same-key")], NOW)[0][0])

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with ledger_sessions() as s:
        assert s.scalar(select(func.count()).select_from(LeadRow)) == 1
    assert len(set(ids)) == 1


def test_concurrent_claims_take_disjoint_batches(ledger_url: str) -> None:
    ledger_sessions = sessions(ledger_url)
    with ledger_sessions.begin() as s:
        ledger.insert_leads(s, [lead(i) for i in range(10)], NOW)
    first, second = ledger_sessions(), ledger_sessions()
    a = ledger.claim_due(first, "k", limit=6, now=NOW, lease=LEASE, owner="a")
    b = ledger.claim_due(
        second, "k", limit=6, now=NOW, lease=LEASE, owner="b"
    )  # while a holds its locks
    first.commit()
    second.commit()
    assert len(a) == 6 and len(b) == 4
    assert not {d.id for d in a} & {d.id for d in b}


def test_only_the_lease_owner_can_settle(ledger_sessions: sessionmaker[Session]) -> None:
    with ledger_sessions.begin() as s:
        ledger.insert_leads(s, [lead(1)], NOW)
        (d,) = ledger.claim_due(s, "k", limit=1, now=NOW, lease=LEASE, owner="a")
    done = Settlement(
        delivery_id=d.id, state=LeadState.DELIVERED, attempts=1, due_at=None, detail="ok"
    )
    with ledger_sessions.begin() as s:
        assert ledger.settle(s, "someone-else", [done], NOW) == 0
        assert ledger.settle(s, "a", [done], NOW) == 1


def test_an_expired_lease_is_swept_back_in_doubt_and_counted(
    ledger_sessions: sessionmaker[Session],
) -> None:
    with ledger_sessions.begin() as s:
        ledger.insert_leads(s, [lead(1)], NOW)
        ledger.claim_due(s, "k", limit=1, now=NOW, lease=LEASE, owner="dead-worker")
    with ledger_sessions.begin() as s:
        assert ledger.sweep_expired_leases(s, "k", now=NOW + LEASE / 2, max_attempts=3) == 0
        assert ledger.sweep_expired_leases(s, "k", now=NOW + LEASE * 2, max_attempts=3) == 1
        (d,) = ledger.claim_due(s, "k", limit=1, now=NOW + LEASE * 2, lease=LEASE, owner="b")
    assert d.in_doubt and d.attempt == 2


def test_a_doubt_clears_while_due_but_stays_on_record_once_settled(
    ledger_sessions: sessionmaker[Session],
) -> None:
    with ledger_sessions.begin() as s:
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
    with ledger_sessions.begin() as s:
        (again,) = ledger.claim_due(s, "k", limit=1, now=NOW, lease=LEASE, owner="b")
        assert again.in_doubt
        found = Settlement(
            delivery_id=a.id, state=LeadState.DELIVERED, attempts=2, due_at=None, detail="found"
        )
        ledger.settle(s, "b", [found], NOW)
    with ledger_sessions() as s:
        doubts = {r.lead_id: r.in_doubt for r in s.execute(select(DeliveryRow)).scalars()}
    assert doubts == {lead(1).id: True, lead(2).id: False}


def test_a_swept_lead_goes_back_to_the_head_of_the_line(
    ledger_sessions: sessionmaker[Session],
) -> None:
    """Its lookup then comes soon, before newer leads bury it in the platform's list."""
    with ledger_sessions.begin() as s:
        ledger.insert_leads(s, [lead(1)], NOW)
        ledger.claim_due(s, "k", limit=1, now=NOW, lease=LEASE, owner="dead-worker")
        ledger.insert_leads(s, [lead(2)], NOW + timedelta(seconds=1))
    later = NOW + LEASE * 2
    with ledger_sessions.begin() as s:
        ledger.sweep_expired_leases(s, "k", now=later, max_attempts=3)
        (first,) = ledger.claim_due(s, "k", limit=1, now=later, lease=LEASE, owner="b")
    assert first.lead_id == lead(1).id and first.in_doubt


def test_a_lead_that_keeps_killing_workers_ends_dead(
    ledger_sessions: sessionmaker[Session],
) -> None:
    with ledger_sessions.begin() as s:
        ledger.insert_leads(s, [lead(1)], NOW)
    t = NOW
    for _ in range(2):
        with ledger_sessions.begin() as s:
            ledger.claim_due(s, "k", limit=1, now=t, lease=LEASE, owner="x")
        t += LEASE * 2
        with ledger_sessions.begin() as s:
            ledger.sweep_expired_leases(s, "k", now=t, max_attempts=2)
    with ledger_sessions() as s:
        assert s.scalar(select(DeliveryRow.state)) == LeadState.DEAD


def test_later_stages_are_held_until_released(ledger_sessions: sessionmaker[Session]) -> None:
    with ledger_sessions.begin() as s:
        ledger.insert_leads(s, [lead(1, stages=3)], NOW)
        due = ledger.claim_due(s, "k", limit=10, now=NOW, lease=LEASE, owner="a")
        assert [d.stage for d in due] == [1]
        assert ledger.release_next_stage(s, lead(1).id, 1, NOW + timedelta(minutes=150), NOW)
    with ledger_sessions.begin() as s:
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
        ledger_sessions = sessions(url)
        with ledger_sessions.begin() as s:
            ledger.insert_leads(s, [lead(7)], NOW)
        with ledger_sessions() as s:
            created = s.scalar(select(LeadRow.created_at))
        assert created == NOW and created is not None and created.tzinfo is not None


def rows_in(value: object) -> list[object]:
    """Every ORM row inside `value`, however deep in containers and dataclasses it sits."""
    if isinstance(value, Base):
        return [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return rows_in([getattr(value, f.name) for f in dataclasses.fields(value)])
    if isinstance(value, Mapping):
        return rows_in([*value.keys(), *value.values()])
    if isinstance(value, list | tuple | set | frozenset):
        return [row for item in value for row in rows_in(item)]
    return []


def test_the_ledger_hands_out_values_never_rows(ledger_sessions: sessionmaker[Session]) -> None:
    """What the store and the reports answer holds no ORM row, however deep."""
    with ledger_sessions.begin() as s:
        answers: list[object] = [ledger.insert_leads(s, [lead(1, "order-1"), lead(2)], NOW)]
        first, second = ledger.claim_due(s, "k", limit=2, now=NOW, lease=LEASE, owner="a")
        answers.append([first, second])
        sent = Settlement(
            delivery_id=first.id,
            state=LeadState.AWAITING_STATUS,
            attempts=1,
            due_at=NOW,
            external_id="app-1",
        )
        answers.append(ledger.settle(s, "a", [sent], NOW))
        exchange = AttemptRecord(
            destination="k",
            kind="send",
            at=NOW,
            request={"method": "POST"},
            status_code=429,
            answer="",
            error="",
            elapsed_ms=5,
        )
        answers.append(ledger.record_attempt(s, exchange, [(first.id, "pending", "")]))
        answers.append(
            ledger.record_refusal(
                s,
                now=NOW,
                source="celery",
                destination="k",
                idempotency_key=None,
                errors=[{"field": "phone", "rule": "11 digits"}],
            )
        )
        ledger.set_pause(s, "k", kind="manual", reason="ops", now=NOW, until=None)
        answers += [ledger.active_pause(s, "k", NOW), ledger.pauses(s, NOW)]
    with ledger_sessions.begin() as s:
        waiting = ledger.lease_waiting(
            s, "app-1", states=[LeadState.AWAITING_STATUS], owner="p", now=NOW, lease=LEASE
        )
        answers.append(waiting)
    with ledger_sessions() as s:
        found = reports.find_lead(s, "order-1")
        assert found is not None
        answers += [
            reports.stats(s, NOW),
            found,
            reports.lead_report(s, found),
            reports.refusals(s),
            reports.requests_by_destination(s),
        ]
    assert waiting is not None and waiting[1].lead_id == lead(1).id
    assert rows_in(answers) == []


def test_a_lead_is_found_by_id_or_key_as_a_value(ledger_sessions: sessionmaker[Session]) -> None:
    """`find_lead` answers the lead's ids and acceptance time, and `lead_report` takes that."""
    with ledger_sessions.begin() as s:
        ledger.insert_leads(s, [lead(1, "order-1")], NOW)
    with ledger_sessions() as s:
        by_id = reports.find_lead(s, lead(1).id)
        by_key = reports.find_lead(s, "order-1")
        missing = reports.find_lead(s, "nobody")
        assert by_id is not None
        report = reports.lead_report(s, by_id)
    expected = reports.AcceptedLead(
        id=lead(1).id, destination="k", idempotency_key="order-1", accepted_at=NOW
    )
    assert by_id == by_key == expected
    assert missing is None
    assert report["accepted_at"] == NOW.isoformat()
    assert [d["state"] for d in report["deliveries"]] == [LeadState.QUEUED]


def test_stats_count_states_and_the_oldest_due_age(ledger_sessions: sessionmaker[Session]) -> None:
    """On SQLite too, the oldest due time comes back aware and its age is seconds."""
    with ledger_sessions.begin() as s:
        ledger.insert_leads(s, [lead(1), lead(2)], NOW - timedelta(minutes=2))
        ledger.insert_leads(s, [lead(3, stages=2)], NOW)
    with ledger_sessions() as s:
        found = reports.stats(s, NOW)
    assert found == {
        "k": reports.DestinationStats(
            destination="k",
            states={"queued": 3, "held": 1},
            oldest_due_s=120.0,
            settled_last_minute=0,
            settled_last_hour=0,
        )
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        found["k"].oldest_due_s = 0.0  # type: ignore[misc]


def test_the_in_doubt_pass_as_claims_write_it_reads_the_partial_index(
    ledger_sessions: sessionmaker[Session],
) -> None:
    """`db.flag_is` writes the flag as the index's WHERE does (seq scans off, PostgreSQL)."""
    with ledger_sessions.begin() as s:
        ledger.insert_leads(s, [lead(i) for i in range(50)], NOW)
    doubt = db.flag_is(DeliveryRow.in_doubt, True)
    query = _due("k", {LeadState.QUEUED, LeadState.RETRY_WAIT}, NOW, doubt, 1)
    with ledger_sessions() as s:
        compiled = query.compile(s.get_bind(), compile_kwargs={"literal_binds": True})
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("SET enable_seqscan = off"))
            s.execute(text("ANALYZE deliveries"))
            plan = "\n".join(s.scalars(text(f"EXPLAIN {compiled}")))
        else:
            plan = "\n".join(str(r) for r in s.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))
    assert "ix_deliveries_in_doubt_due" in plan, plan


def test_a_failed_copy_shows_no_value_of_the_row(ledger_url: str) -> None:
    """COPY runs past SQLAlchemy's hook: its CONTEXT line would quote the row, phone and all."""
    import traceback

    import psycopg

    engine = make_engine(ledger_url)
    row = {
        "id": "lead-copy-fails",
        "destination": None,  # NOT NULL: the server refuses the row and quotes it
        "payload": {"phone": "+7 916 555 77 81"},
        "source": "test",
        "created_at": datetime(2026, 12, 1, tzinfo=UTC),
    }
    try:
        with pytest.raises(psycopg.Error) as info, make_sessionmaker(engine).begin() as session:
            db.bulk_insert(session, LeadRow, [row])
    finally:
        engine.dispose()
    shown = "".join(traceback.format_exception(info.value))
    assert "null value" in shown and "destination" in shown
    assert "5557781" not in shown.replace(" ", "") and "COPY leads, line 1" not in shown
