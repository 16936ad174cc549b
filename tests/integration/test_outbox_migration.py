"""
Revision 0003 on a ledger in use (PostgreSQL and SQLite): the outbox arrives,
every lead and delivery stays as it was, the models and the migrations agree,
and a downgrade takes the outbox away again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from alembic import command
from sqlalchemy import func, inspect, select

from tests.conftest import PG_ADMIN, _pg_url
from worker import ledger
from worker.ledger import migrate
from worker.ledger.db import make_engine, make_sessionmaker
from worker.ledger.store import NewLead
from worker.ledger.tables import DeliveryRow, LeadRow, OutboxRow

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A ledger with no schema yet: a database of its own, or a SQLite file."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.db"
        return
    name = f"leadrelay_test_outbox_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    yield _pg_url(name)
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


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
