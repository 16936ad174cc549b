"""
Every delivery has its lead, though PostgreSQL no longer checks it (revision 0008):
intake writes deliveries from the leads it wrote, retention deletes them before their
lead. And 0008 on a ledger in use: every row stays, the key goes on PostgreSQL only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import command
from sqlalchemy import delete, exists, func, inspect, select
from sqlalchemy.orm import Session, sessionmaker

from tests.factories import new_lead
from worker import ledger
from worker.leads import LeadState
from worker.ledger import migrate
from worker.ledger.db import make_engine, make_sessionmaker
from worker.ledger.retention import delete_settled
from worker.ledger.store import NewLead
from worker.ledger.tables import DeliveryRow, LeadRow
from worker.outcomes import Settlement

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def lead(name: str, key: str | None = None, stages: int = 1, delay: int = 0) -> NewLead:
    return new_lead(name, key, stages, timedelta(seconds=delay))


def orphans(s: Session) -> int:
    has_lead = exists().where(LeadRow.id == DeliveryRow.lead_id)
    return int(s.scalar(select(func.count()).select_from(DeliveryRow).where(~has_lead)) or 0)


def test_intake_and_retention_leave_no_delivery_without_its_lead(
    ledger_sessions: sessionmaker[Session],
) -> None:
    old = NOW - timedelta(days=100)
    with ledger_sessions.begin() as s:
        ledger.insert_leads(
            s,
            [lead("a"), lead("b", key="kb"), lead("staged", stages=3), lead("later", delay=60)],
            old,
        )
        # a key seen before, in another chunk and within this one: no second lead, no delivery
        again = ledger.insert_leads(s, [lead("b2", key="kb"), lead("c", key="kc")], old)
        assert [created for _, created in again] == [False, True]
        ledger.insert_leads(s, [lead("c2", key="kc")], old)
    with ledger_sessions() as s:
        per_lead = select(DeliveryRow.lead_id, func.count()).group_by(DeliveryRow.lead_id)
        stages = dict(s.execute(per_lead).all())
        assert stages == {
            f"lead{n:0>28}": m for n, m in {"a": 1, "b": 1, "staged": 3, "later": 1, "c": 1}.items()
        }
        assert orphans(s) == 0

    with ledger_sessions.begin() as s:  # every due delivery delivered long ago
        got = ledger.claim_due(
            s, "k", limit=100, now=old + timedelta(hours=1), lease=LEASE, owner="w"
        )
        done = [Settlement(d.id, LeadState.DELIVERED, 1, None, "") for d in got]
        ledger.settle(s, "w", done, old + timedelta(hours=1))
    removed = delete_settled(ledger_sessions, "k", before=NOW - timedelta(days=30), batch=2)

    with ledger_sessions() as s:
        # the staged lead keeps its held stages, and so itself; the rest went whole
        assert set(s.scalars(select(LeadRow.id))) == {f"lead{'staged':0>28}"}
        assert removed.leads == 4
        assert s.scalar(select(func.count()).select_from(DeliveryRow)) == 3
        assert orphans(s) == 0


def test_0008_drops_the_key_on_postgresql_and_keeps_every_row(empty_url: str) -> None:
    migrate.upgrade(empty_url, "0007")
    engine = make_engine(empty_url)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        ledger.insert_leads(s, [lead(f"l{i}") for i in range(30)], NOW)
        ledger.claim_due(s, "k", limit=10, now=NOW, lease=LEASE, owner="w1")
    postgresql = engine.dialect.name == "postgresql"

    def keys() -> list[list[str]]:
        engine.dispose()
        return [fk["constrained_columns"] for fk in inspect(engine).get_foreign_keys("deliveries")]

    assert keys() == [["lead_id"]]
    migrate.upgrade(empty_url)
    migrate.check(empty_url)  # the models and the migrations agree, on both
    assert keys() == ([] if postgresql else [["lead_id"]])
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(LeadRow)) == 30
        states = dict(s.execute(select(DeliveryRow.state, func.count()).group_by("state")).all())
        assert states == {"queued": 20, "sending": 10}

    command.downgrade(migrate.alembic_config(empty_url), "0007")
    assert keys() == [["lead_id"]]
    if postgresql:  # the key is back, checked, and cascades as before
        with sessions.begin() as s:
            s.execute(delete(LeadRow).where(LeadRow.id == f"lead{'l0':0>28}"))
        with sessions() as s:
            assert s.scalar(select(func.count()).select_from(DeliveryRow)) == 29
    engine.dispose()
