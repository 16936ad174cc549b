"""
Revision 0003 on a ledger in use (PostgreSQL and SQLite): the outbox arrives,
every lead and delivery stays as it was, the models and the migrations agree,
and a downgrade takes the outbox away again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import command
from sqlalchemy import func, inspect, select

from worker import ledger
from worker.ledger import migrate
from worker.ledger.db import make_engine, make_sessionmaker
from worker.ledger.store import NewLead
from worker.ledger.tables import DeliveryRow, LeadRow, OutboxRow

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_0003_adds_the_outbox_to_a_ledger_in_use_and_keeps_every_row(empty_url: str) -> None:
    migrate.upgrade(empty_url, "0002")
    engine = make_engine(empty_url)
    sessions = make_sessionmaker(engine)
    assert "outbox" not in inspect(engine).get_table_names()
    leads = [
        NewLead(id=f"lead{i:028d}", destination="k", payload={"n": i}, source="test")
        for i in range(50)
    ]
    with sessions.begin() as s:
        ledger.insert_leads(s, leads, NOW)
        ledger.claim_due(s, "k", limit=10, now=NOW, lease=timedelta(seconds=30), owner="w1")

    migrate.upgrade(empty_url)
    migrate.check(empty_url)  # the models and the migrations agree

    engine.dispose()
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(LeadRow)) == 50
        states = dict(s.execute(select(DeliveryRow.state, func.count()).group_by("state")).all())
        assert states == {"queued": 40, "sending": 10}
        assert s.scalar(select(func.count()).select_from(OutboxRow)) == 0
    indexes = {ix["name"] for ix in inspect(engine).get_indexes("outbox")}
    assert indexes == {"ix_outbox_unsent", "ix_outbox_sent"}

    command.downgrade(migrate.alembic_config(empty_url), "0002")
    engine.dispose()
    assert "outbox" not in inspect(engine).get_table_names()
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(LeadRow)) == 50
    engine.dispose()
