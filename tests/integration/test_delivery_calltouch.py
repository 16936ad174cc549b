"""
Calltouch through the delivery loop: real PostgreSQL and Redis, the emulator over
a real socket (5 requests/s per IP, 429 beyond, violations, unmatched leads).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from producers.client import Producer
from sandbox import calltouch as calltouch_sandbox
from sandbox import serve
from tests.factories import calltouch_lead, calltouch_table
from worker import ledger
from worker.delivery import loop as delivery
from worker.delivery.context import WorkerContext
from worker.ledger.tables import AttemptRow, DeliveryRow

ADD = "/lead-service/v1/api/customfield/lead/add"
TOKEN = "calltouch-secret-token"


@pytest.fixture(scope="module")
def calltouch_url() -> Iterator[str]:
    app = calltouch_sandbox.create_app(
        site_id="1234", access_token=TOKEN, daily_points=None, known_request_ids=range(1, 900_000)
    )
    with serve(app) as url:
        yield url


@pytest.fixture
def calltouch(calltouch_url: str) -> str:
    httpx.post(f"{calltouch_url}/__sandbox__/reset")
    return calltouch_url


def states(ctx: WorkerContext) -> dict[str, int]:
    with ctx.sessions() as s:
        rows = s.execute(select(DeliveryRow.state, func.count()).group_by(DeliveryRow.state))
        return {state: int(n) for state, n in rows}


def drain_until(
    ctx: WorkerContext, done: Callable[[dict[str, int]], bool], limit: float = 30
) -> None:
    deadline = time.monotonic() + limit
    while not done(states(ctx)):
        assert time.monotonic() < deadline, f"not done in {limit}s: {states(ctx)}"
        report = delivery.drain(ctx, "calltouch", budget=5)
        if report.deferred is not None or not report.requests:
            time.sleep(0.1)


def log(url: str) -> list[dict[str, Any]]:
    return [e for e in httpx.get(f"{url}/__sandbox__/log").json() if e["path"] == ADD]


def test_300_leads_go_in_3_requests_of_100(
    make_ctx: Callable[..., WorkerContext], calltouch: str
) -> None:
    ctx = make_ctx({"calltouch": calltouch_table(calltouch)})
    Producer(ctx, waker=None).submit_many("calltouch", [calltouch_lead() for _ in range(300)])
    drain_until(ctx, lambda s: s == {"delivered": 300})
    assert [e["leads"] for e in log(calltouch)] == [100, 100, 100]


def test_one_violation_refuses_only_its_own_lead(
    make_ctx: Callable[..., WorkerContext], calltouch: str
) -> None:
    """A validationError refuses the whole request: the named lead is rejected, the rest resent."""
    ctx = make_ctx({"calltouch": calltouch_table(calltouch)})
    Producer(ctx, waker=None).submit_many("calltouch", [calltouch_lead() for _ in range(5)])
    # the door is as strict as the emulator, so the platform's refusal is ordered, in its shape
    refusal = {
        "meta": [],
        "data": {
            "type": "validationError",
            "apiErrorData": None,
            "validationErrorData": {
                "violations": [
                    {
                        "fieldPath": "leads[2].addCustomFields.customFields",
                        "message": "This value should not be blank.",
                    }
                ]
            },
        },
    }
    httpx.post(
        f"{calltouch}/__sandbox__/faults", json={"status": 400, "body": json.dumps(refusal)}
    ).raise_for_status()
    drain_until(ctx, lambda s: s.get("delivered", 0) + s.get("rejected", 0) == 5)
    assert states(ctx) == {"delivered": 4, "rejected": 1}
    with ctx.sessions() as s:
        detail = s.scalar(select(DeliveryRow.detail).where(DeliveryRow.state == "rejected"))
    assert "leads[2]" in detail or "customFields" in detail


def test_an_unmatched_lead_is_retried_slowly_then_ends_unmatched(
    make_ctx: Callable[..., WorkerContext], calltouch: str
) -> None:
    ctx = make_ctx(
        {"calltouch": calltouch_table(calltouch, unmatched_retry=0.3, unmatched_horizon=1.5)}
    )
    missing = calltouch_lead(
        matching=[{"type": "request", "requestParams": {"requestId": 950_000}}]
    )
    Producer(ctx, waker=None).submit_many("calltouch", [missing, calltouch_lead()])
    drain_until(ctx, lambda s: s.get("unmatched") == 1, limit=20)
    with ctx.sessions() as s:
        row = s.scalars(select(DeliveryRow).where(DeliveryRow.state == "unmatched")).one()
    assert row.attempts >= 3  # retried on the slow schedule until the horizon
    assert "gave up after" in row.detail
    assert states(ctx) == {"delivered": 1, "unmatched": 1}


def test_destinations_behind_one_ip_share_the_5_per_second_limit(
    make_ctx: Callable[..., WorkerContext], calltouch: str
) -> None:
    tables = {
        "calltouch": calltouch_table(calltouch, batch_size=1, egress="office"),
        "calltouch-2": calltouch_table(calltouch, batch_size=1, egress="office"),
    }
    ctx = make_ctx(tables)
    producer = Producer(ctx, waker=None)
    producer.submit_many("calltouch", [calltouch_lead() for _ in range(12)])
    producer.submit_many("calltouch-2", [calltouch_lead() for _ in range(12)])
    deadline = time.monotonic() + 30
    while states(ctx) != {"delivered": 24}:
        assert time.monotonic() < deadline, states(ctx)
        for name in tables:
            delivery.drain(ctx, name, budget=0.5)
    arrivals = sorted(e["t"] for e in log(calltouch))
    assert all(e["status"] == 200 for e in log(calltouch))  # no 429
    assert max(sum(1 for t in arrivals if a <= t < a + 1) for a in arrivals) <= 5


def test_spent_daily_points_pause_the_destination_until_the_reset(
    make_ctx: Callable[..., WorkerContext], calltouch: str
) -> None:
    ctx = make_ctx({"calltouch": calltouch_table(calltouch, daily_quota=2, batch_size=1)})
    Producer(ctx, waker=None).submit_many("calltouch", [calltouch_lead() for _ in range(5)])
    delivery.drain(ctx, "calltouch", budget=5)
    assert states(ctx) == {"delivered": 2, "queued": 3}
    with ctx.sessions() as s:
        pause = ledger.active_pause(s, "calltouch", ctx.clock())
    assert pause is not None and pause.kind == "quota"
    assert pause.until is not None and pause.until - ctx.clock() <= timedelta(days=1)


def test_a_wrong_token_pauses_and_no_token_reaches_the_records(
    make_ctx: Callable[..., WorkerContext], calltouch: str
) -> None:
    ctx = make_ctx({"calltouch": calltouch_table(calltouch, access_token="wrong-token-value")})
    Producer(ctx, waker=None).submit_many("calltouch", [calltouch_lead() for _ in range(3)])
    delivery.drain(ctx, "calltouch")
    assert states(ctx) == {"queued": 3}
    good = make_ctx({"calltouch": calltouch_table(calltouch)})
    Producer(good, waker=None).submit_many("calltouch", [calltouch_lead()])
    with good.sessions.begin() as s:
        ledger.clear_pause(s, "calltouch")
    drain_until(good, lambda s: s.get("delivered") == 4)
    with good.sessions() as s:
        records = json.dumps(
            [[a.request, a.answer, a.error] for a in s.scalars(select(AttemptRow))]
        )
    assert "wrong-token-value" not in records and TOKEN not in records
    assert '"access-token": "***"' in records.lower()
