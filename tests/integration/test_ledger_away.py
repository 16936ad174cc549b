"""A periodic task that finds the ledger away logs one warning and ends; no traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy import exc as sa_exc

from tests.factories import kuper_table
from worker.delivery import context
from worker.delivery.context import build
from worker.runtime import tasks
from worker.settings import load, parse_destinations

AWAY = "postgresql://postgres:ledger-pw@127.0.0.1:1/leadrelay"


@pytest.fixture
def ledger_away(redis_url: str) -> Iterator[None]:
    table = {
        **kuper_table("http://127.0.0.1:9"),
        "notify_task": "app.lead_settled",
        "notify_queue": "app.events",
    }
    settings = load(
        database_url=AWAY, broker_url=redis_url, destinations=parse_destinations({"k": table})
    )
    ctx = build(settings)
    context.install(ctx)
    yield
    context.install(None)
    ctx.close()


@pytest.mark.parametrize(
    "run",
    [tasks.sweep, tasks.flush_events, lambda: tasks.deliver("k"), lambda: tasks.poll("k")],
    ids=["sweep", "notify", "deliver", "poll"],
)
def test_each_task_says_the_ledger_is_away_in_one_line(
    ledger_away: None, run: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="leadrelay")
    assert run() == {"failed": "ledger away"}  # type: ignore[operator]
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "ledger.away"]
    assert record.exc_info is None
    assert record.error.startswith("OperationalError: ")  # type: ignore[attr-defined]
    assert "ledger-pw" not in record.error  # type: ignore[attr-defined]


def test_the_driver_losing_its_place_reads_as_the_ledger_away(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PgBouncer handing a transaction a restarted server: psycopg's bare InternalError."""

    @tasks.ledger_may_be_away
    def run() -> dict[str, object]:
        raise sa_exc.InternalError(
            "RELEASE SAVEPOINT sa_1", None, psycopg.InternalError("received 2 results from RELEASE")
        )

    caplog.set_level(logging.WARNING, logger="leadrelay")
    assert run() == {"failed": "ledger away"}
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "ledger.away"]
    assert "received 2 results" in record.error  # type: ignore[attr-defined]


def test_an_internal_error_the_server_sent_is_raised(ledger_url: str) -> None:
    """A SQLSTATE means the statement was wrong, not the ledger away: it is not hidden."""
    engine = create_engine(ledger_url)

    @tasks.ledger_may_be_away
    def run() -> dict[str, object]:
        with engine.connect() as conn:
            with pytest.raises(sa_exc.ProgrammingError):
                conn.execute(text("SELECT * FROM no_such_table"))
            conn.execute(text("SELECT 1"))  # the transaction is aborted: 25P02
        return {}

    try:
        with pytest.raises(sa_exc.InternalError) as caught:
            run()
        assert isinstance(caught.value.orig, psycopg.errors.InFailedSqlTransaction)
    finally:
        engine.dispose()
