"""A periodic task that finds the ledger away logs one warning and ends; no traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

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
