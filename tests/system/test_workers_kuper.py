"""
The promise, with real processes: `celery -A worker worker` (4 prefork
processes) and `celery -A worker beat` against real PostgreSQL and Redis and
the Kuper emulator. Nothing accepted is lost: not to a 429, not to a worker
killed mid-request, not to a Redis that forgets every message. A lead sent
again after its worker died is at Kuper once where the source deduplicates,
and flagged in doubt wherever Kuper may hold it twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import func, select

from producers.client import Producer
from sandbox import kuper as kuper_sandbox
from sandbox import serve
from sandbox.common import SandboxState
from tests.factories import kuper_lead, kuper_table
from tests.system.conftest import Relay
from worker.delivery.context import WorkerContext, build
from worker.ledger.tables import DeliveryRow, LeadRow
from worker.settings import load, parse_destinations

IMPORT = "/partner-candidate/v2/leads/import"


@pytest.fixture(scope="module")
def kuper_url() -> Iterator[str]:
    with serve(kuper_sandbox.create_app(username="partner", password="kuper-secret-pw")) as url:
        yield url


@pytest.fixture
def kuper(kuper_url: str) -> str:
    httpx.post(f"{kuper_url}/__sandbox__/reset")
    return kuper_url


def imports(url: str) -> list[dict[str, Any]]:
    return [e for e in httpx.get(f"{url}/__sandbox__/log").json() if e["path"] == IMPORT]


def created_at_kuper(url: str) -> int:
    return sum(e.get("created", 0) for e in imports(url))


@pytest.fixture
def producer_ctx(
    ledger_url: str, redis_url: str
) -> Iterator[Callable[[dict[str, Any]], WorkerContext]]:
    opened: list[WorkerContext] = []

    def factory(tables: dict[str, Any]) -> WorkerContext:
        settings = load(
            database_url=ledger_url, broker_url=redis_url, destinations=parse_destinations(tables)
        )
        ctx = build(settings)
        opened.append(ctx)
        return ctx

    yield factory
    for ctx in opened:
        ctx.close()


def counts(ctx: WorkerContext) -> dict[str, int]:
    with ctx.sessions() as s:
        rows = s.execute(select(DeliveryRow.state, func.count()).group_by(DeliveryRow.state))
        return {state: int(n) for state, n in rows}


def wait_until(
    ctx: WorkerContext, done: Callable[[dict[str, int]], bool], timeout: float
) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        now = counts(ctx)
        if done(now):
            return now
        if time.monotonic() > deadline:
            raise AssertionError(f"not done in {timeout}s: {now}")
        time.sleep(0.2)


def start(relay: Relay) -> Relay:
    relay.start_worker()
    relay.start_beat()
    return relay


def test_four_worker_processes_deliver_200_leads_in_4_requests_of_50(
    relay_factory: Callable[..., Relay], producer_ctx: Callable[..., WorkerContext], kuper: str
) -> None:
    tables = {"kuper-sys": kuper_table(kuper)}
    start(relay_factory(tables))
    ctx = producer_ctx(tables)
    Producer(ctx).submit_many("kuper-sys", [kuper_lead() for _ in range(200)])

    wait_until(ctx, lambda c: c.get("delivered") == 200, 60)
    assert sorted(e["leads"] for e in imports(kuper)) == [50, 50, 50, 50]


def test_a_429_with_retry_after_2_stops_every_worker_for_2_seconds(
    relay_factory: Callable[..., Relay], producer_ctx: Callable[..., WorkerContext], kuper: str
) -> None:
    tables = {"kuper-sys": kuper_table(kuper, batch_size=10, rate=20, burst=4, concurrency=4)}
    start(relay_factory(tables))
    httpx.post(f"{kuper}/__sandbox__/faults", json={"status": 429, "retry_after": "2"})
    ctx = producer_ctx(tables)
    Producer(ctx).submit_many("kuper-sys", [kuper_lead() for _ in range(200)])

    wait_until(ctx, lambda c: c.get("delivered") == 200, 60)
    log = imports(kuper)
    throttled = next(e["t"] for e in log if e["status"] == 429)
    later = [e["t"] - throttled for e in log if e["t"] > throttled]
    # requests already on the wire when the 429 came back arrive within a few ms; after
    # that, nothing until Retry-After has passed
    in_cooldown = [t for t in later if 0.1 < t < 1.95]
    assert in_cooldown == [], "a worker sent during the cooldown"
    assert any(t >= 1.95 for t in later)
    assert created_at_kuper(kuper) == 200


@pytest.mark.parametrize("deduplicate", [True, False], ids=["deduplicating", "not-deduplicating"])
def test_a_worker_killed_mid_batch_loses_no_lead(
    relay_factory: Callable[..., Relay],
    producer_ctx: Callable[..., WorkerContext],
    deduplicate: bool,
) -> None:
    """
    The source with "Дедублицировать всегда" on: every lead once. Without it:
    every lead delivered, and each one Kuper holds twice (sent again after its
    answer was lost) is flagged in doubt.
    """
    app = kuper_sandbox.create_app(
        username="partner", password="kuper-secret-pw", deduplicate=deduplicate
    )
    with serve(app) as kuper:
        ctx = killed_mid_batch(relay_factory, producer_ctx, kuper, deduplicate)
    state: SandboxState = app.state  # type: ignore[attr-defined]
    with state.lock:
        twice = {key for key, made in state.store["candidates"].items() if len(made) > 1}
    if deduplicate:
        assert not twice  # Kuper deduplicates: a resent lead never doubles
        return
    with ctx.sessions() as s:
        rows = s.execute(
            select(LeadRow.payload, DeliveryRow.in_doubt).join(
                DeliveryRow, DeliveryRow.lead_id == LeadRow.id
            )
        ).all()
    keys = {f"{p['utm']['utm_source']}:{p['phone']}": doubt for p, doubt in rows}
    assert twice, "the lost answers made no lead twice: the test proves nothing"
    assert all(keys[key] for key in twice), "a lead at Kuper twice is not flagged in doubt"


def killed_mid_batch(
    relay_factory: Callable[..., Relay],
    producer_ctx: Callable[..., WorkerContext],
    kuper: str,
    deduplicate: bool,
) -> WorkerContext:
    """
    200 leads, a worker SIGKILLed while it holds leases, another one started;
    two answers lost on the way back.
    """
    table = kuper_table(
        kuper, batch_size=20, timeout=2, rate=50, concurrency=4, deduplicate=deduplicate
    )
    tables = {"kuper-sys": table}
    relay = start(relay_factory(tables))
    httpx.post(f"{kuper}/__sandbox__/faults", json={"delay": 1.5, "handle": True, "count": 4})
    # and two batches whose answers are lost after Kuper took them
    httpx.post(f"{kuper}/__sandbox__/faults", json={"cut": True, "handle": True, "count": 2})
    ctx = producer_ctx(tables)
    Producer(ctx).submit_many("kuper-sys", [kuper_lead() for _ in range(200)])
    deadline = time.monotonic() + 20
    while not counts(ctx).get("sending"):
        assert time.monotonic() < deadline
        time.sleep(0.05)

    relay.kill("w1")  # SIGKILL: the leases it held are all that is left of its work
    assert counts(ctx).get("sending")
    relay.start_worker("w2")

    final = wait_until(ctx, lambda c: c.get("delivered", 0) + c.get("rejected", 0) == 200, 90)
    assert final.get("delivered") == 200
    with ctx.sessions() as s:
        flagged = s.scalar(
            select(func.count()).select_from(DeliveryRow).where(DeliveryRow.in_doubt)
        )
    # every candidate past the 200 is a lead sent again after its answer was lost
    assert 200 <= created_at_kuper(kuper) <= 200 + (0 if deduplicate else flagged or 0)
    return ctx


def test_redis_flushed_mid_run_loses_no_lead(
    relay_factory: Callable[..., Relay],
    producer_ctx: Callable[..., WorkerContext],
    kuper: str,
    redis_url: str,
) -> None:
    tables = {"kuper-sys": kuper_table(kuper, batch_size=10, rate=4, burst=1, concurrency=2)}
    start(relay_factory(tables))
    ctx = producer_ctx(tables)
    Producer(ctx).submit_many("kuper-sys", [kuper_lead() for _ in range(150)])
    wait_until(ctx, lambda c: c.get("delivered", 0) >= 20, 30)

    redis.Redis.from_url(redis_url).flushdb()  # every queued message, cooldown and token: gone

    wait_until(ctx, lambda c: c.get("delivered") == 150, 90)
    assert created_at_kuper(kuper) == 150


def test_a_raw_celery_message_is_validated_and_a_refusal_recorded(
    relay_factory: Callable[..., Relay], producer_ctx: Callable[..., WorkerContext], kuper: str
) -> None:
    """An app with only a Celery client sends `leadrelay.submit`; nothing is dropped in silence."""
    from celery import Celery

    from worker.ledger.tables import RefusalRow

    tables = {"kuper-sys": kuper_table(kuper)}
    relay = relay_factory(tables)
    relay.start_worker()
    ctx = producer_ctx(tables)
    client = Celery(broker=relay.env["LEADRELAY_BROKER_URL"])  # no import of our code
    good = {
        "phone": "8 916 555 44 33",
        "utm": {"utm_source": "app"},
        "vacancy_id": 3,
        "city_id": 53,
    }
    bad = {
        "phone": "8 916 555 44 34",
        "utm": {"utm_source": "app"},
        "vacancy_id": "x",
        "city_id": 53,
    }
    for lead, key in ((good, "app-1"), (bad, "app-2"), (good, "app-1")):
        client.send_task(
            "leadrelay.submit",
            queue="leadrelay.intake",
            kwargs={"destination": "kuper-sys", "lead": lead, "idempotency_key": key},
        )
    client.send_task(
        "leadrelay.submit",
        queue="leadrelay.intake",
        kwargs={"destination": "nowhere", "lead": good},
    )

    wait_until(ctx, lambda c: c.get("delivered") == 1, 60)
    deadline = time.monotonic() + 30
    while True:
        with ctx.sessions() as s:
            refusals = s.scalars(select(RefusalRow).order_by(RefusalRow.id)).all()
        if len(refusals) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {
        (r.destination, r.idempotency_key, r.errors["errors"][0]["field"]) for r in refusals
    } == {("kuper-sys", "app-2", "vacancy_id"), (None, None, "destination")}
    assert "555" not in str([r.errors for r in refusals])
    assert "5554433" not in relay.log("w1")  # the worker's own log never shows the lead's phone
