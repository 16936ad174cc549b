"""
What a deliver or a poll task returns, and so what Flower shows as its result:
the drain's requests, throttles (429/503 answers) and outcomes, and the backlog
it left (`ledger.backlog`: queued and retry_wait deliveries, counted up to a
cap, and how long the oldest due one has waited). The query on PostgreSQL and
SQLite; the tasks in process against the Kuper and SalesMan emulators.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from producers.client import Producer
from sandbox import kuper as kuper_sandbox
from sandbox import salesman as salesman_sandbox
from sandbox import serve
from tests.factories import kuper_lead, kuper_table, salesman_lead, salesman_table
from worker import ledger
from worker.delivery import context
from worker.delivery.context import WorkerContext
from worker.leads import LeadState
from worker.ledger.store import NewLead
from worker.ledger.tables import DeliveryRow
from worker.runtime import tasks
from worker.runtime.app import use_settings

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def accept(sessions: sessionmaker[Session], n: int, at: datetime, dest: str = "k") -> list[str]:
    """`n` leads for `dest` accepted (and due) at `at`; their ids."""
    leads = [
        NewLead(id=f"{dest}{at:%H%M%S}{i:020d}", destination=dest, payload={}, source="test")
        for i in range(n)
    ]
    with sessions.begin() as s:
        ledger.insert_leads(s, leads, at)
    return [lead.id for lead in leads]


def move(
    sessions: sessionmaker[Session], lead_id: str, state: LeadState, due_at: datetime | None
) -> None:
    with sessions.begin() as s:
        s.execute(
            update(DeliveryRow)
            .where(DeliveryRow.lead_id == lead_id)
            .values(state=str(state), due_at=due_at)
        )


def backlog(sessions: sessionmaker[Session], now: datetime, **cap: int) -> ledger.Backlog:
    with sessions() as s:
        return ledger.backlog(s, "k", now, **cap)


def test_the_backlog_is_the_queued_and_retry_wait_deliveries_of_one_destination(
    ledger_sessions: sessionmaker[Session],
) -> None:
    delivered, sending, retrying, _ = accept(ledger_sessions, 4, NOW - timedelta(seconds=90))
    accept(ledger_sessions, 1, NOW - timedelta(seconds=30))
    accept(ledger_sessions, 2, NOW - timedelta(hours=1), dest="other")
    move(ledger_sessions, delivered, LeadState.DELIVERED, None)
    move(ledger_sessions, sending, LeadState.SENDING, NOW - timedelta(seconds=90))
    move(ledger_sessions, retrying, LeadState.RETRY_WAIT, NOW + timedelta(minutes=1))

    left = backlog(ledger_sessions, NOW)

    # one queued since 90 s, one since 30 s, one retrying in a minute: all three wait
    assert left == ledger.Backlog(waiting=3, capped=False, oldest_due_s=90.0)


def test_the_oldest_due_age_counts_only_what_is_due(
    ledger_sessions: sessionmaker[Session],
) -> None:
    (first,) = accept(ledger_sessions, 1, NOW - timedelta(seconds=90))
    move(ledger_sessions, first, LeadState.RETRY_WAIT, NOW - timedelta(seconds=5))
    accept(ledger_sessions, 1, NOW + timedelta(seconds=10))

    assert backlog(ledger_sessions, NOW).oldest_due_s == 5.0  # the retry, due 5 s ago
    assert backlog(ledger_sessions, NOW - timedelta(seconds=6)).oldest_due_s is None
    assert backlog(ledger_sessions, NOW - timedelta(seconds=6)).waiting == 2


def test_the_count_stops_at_its_cap_and_says_so(
    ledger_sessions: sessionmaker[Session],
) -> None:
    accept(ledger_sessions, 7, NOW)

    assert backlog(ledger_sessions, NOW, cap=5) == ledger.Backlog(5, True, 0.0)
    assert backlog(ledger_sessions, NOW, cap=7) == ledger.Backlog(7, False, 0.0)
    assert ledger.reports.BACKLOG_CAP == 10_000


def test_an_unknown_destination_has_no_backlog(ledger_sessions: sessionmaker[Session]) -> None:
    assert backlog(ledger_sessions, NOW) == ledger.Backlog(0, False, None)


@pytest.fixture(scope="module")
def kuper_url() -> Iterator[str]:
    with serve(kuper_sandbox.create_app(username="partner", password="kuper-secret-pw")) as url:
        yield url


@pytest.fixture
def kuper(kuper_url: str) -> str:
    httpx.post(f"{kuper_url}/__sandbox__/reset")
    return kuper_url


@pytest.fixture
def installed(make_ctx: Callable[..., WorkerContext]) -> Iterator[Callable[..., WorkerContext]]:
    """A worker context installed as this process's, and Celery on its settings (wake-ups)."""

    def install(tables: dict[str, dict[str, Any]]) -> WorkerContext:
        ctx = make_ctx(tables)
        use_settings(ctx.settings)
        context.install(ctx)
        return ctx

    yield install
    context.install(None)


def as_json(result: dict[str, Any]) -> dict[str, Any]:
    """The result as a JSON consumer reads it: it must survive the trip unchanged."""
    decoded: dict[str, Any] = json.loads(json.dumps(result))
    return decoded


def test_a_deliver_task_returns_its_drain_s_summary(
    installed: Callable[..., WorkerContext], kuper: str
) -> None:
    ctx = installed({"kuper": kuper_table(kuper)})
    Producer(ctx, waker=None).submit_many("kuper", [kuper_lead() for _ in range(120)])

    result = tasks.deliver("kuper")

    assert as_json(result) == {
        "requests": 3,
        "throttles": 0,
        "outcomes": {"delivered": 120},
        "backlog": 0,
        "backlog_capped": False,
        "oldest_due_s": None,
    }


def test_a_throttled_drain_counts_the_429_and_leaves_its_leads_in_the_backlog(
    installed: Callable[..., WorkerContext], kuper: str
) -> None:
    ctx = installed({"kuper": kuper_table(kuper)})
    Producer(ctx, waker=None).submit_many("kuper", [kuper_lead() for _ in range(60)])
    httpx.post(f"{kuper}/__sandbox__/faults", json={"status": 429, "retry_after": "2"})

    result = as_json(tasks.deliver("kuper"))

    assert (result["requests"], result["throttles"]) == (1, 1)
    assert result["outcomes"] == {"throttled": 50}
    assert (result["backlog"], result["backlog_capped"]) == (60, False)
    assert result["oldest_due_s"] >= 0  # ten were never claimed: due since they came


@pytest.fixture(scope="module")
def salesman_url() -> Iterator[str]:
    app = salesman_sandbox.create_app(login="manager@example.com", api_key="salesman-apikey")
    with serve(app) as url:
        yield url


def test_a_poll_task_returns_its_pass_s_summary(
    installed: Callable[..., WorkerContext], salesman_url: str
) -> None:
    httpx.post(f"{salesman_url}/__sandbox__/reset")
    table = salesman_table(salesman_url, api_key="salesman-apikey", poll_interval=0.01)
    ctx = installed({"salesman": table})
    Producer(ctx, waker=None).submit_many("salesman", [salesman_lead() for _ in range(2)])
    assert tasks.deliver("salesman")["outcomes"] == {"delivered": 2}
    time.sleep(0.05)  # their first look falls due

    looked = as_json(tasks.poll("salesman"))
    time.sleep(0.05)
    httpx.post(f"{salesman_url}/__sandbox__/faults", json={"status": 429, "count": 1})
    throttled = as_json(tasks.poll("salesman"))

    assert looked == {
        "requests": 1,
        "throttles": 0,
        "outcomes": {"delivered": 2},  # reconciled: still delivered, looked at again later
        "backlog": 0,
        "backlog_capped": False,
        "oldest_due_s": None,
    }
    assert (throttled["requests"], throttled["throttles"]) == (1, 1)
