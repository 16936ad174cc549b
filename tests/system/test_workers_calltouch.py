"""Calltouch with real worker processes: 1,000 leads, 4 processes, 5 requests/s per IP."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from sqlalchemy import func, select

from producers.client import Producer
from sandbox import calltouch as calltouch_sandbox
from sandbox import serve
from tests.factories import calltouch_lead, calltouch_table
from tests.system.conftest import Relay
from worker.delivery.context import WorkerContext, build
from worker.ledger.tables import DeliveryRow
from worker.settings import load, parse_destinations

ADD = "/lead-service/v1/api/customfield/lead/add"


@pytest.fixture(scope="module")
def calltouch_url() -> Iterator[str]:
    app = calltouch_sandbox.create_app(site_id="1234", access_token="calltouch-secret-token")
    with serve(app) as url:
        yield url


def test_1000_leads_from_4_processes_arrive_in_10_requests_never_above_5_a_second(
    relay_factory: Callable[..., Relay], calltouch_url: str, ledger_url: str, redis_url: str
) -> None:
    httpx.post(f"{calltouch_url}/__sandbox__/reset")
    tables = {"calltouch-sys": calltouch_table(calltouch_url, concurrency=4)}
    relay = relay_factory(tables)
    relay.start_worker(concurrency=4)
    relay.start_beat()
    settings = load(
        database_url=ledger_url, broker_url=redis_url, destinations=parse_destinations(tables)
    )
    ctx: WorkerContext = build(settings)
    try:
        Producer(ctx).submit_many("calltouch-sys", [calltouch_lead() for _ in range(1000)])
        deadline = time.monotonic() + 60
        while True:
            with ctx.sessions() as s:
                done = s.scalar(select(func.count()).where(DeliveryRow.state == "delivered"))
            if done == 1000:
                break
            assert time.monotonic() < deadline, f"{done} delivered"
            time.sleep(0.2)
    finally:
        ctx.close()
    log = [e for e in httpx.get(f"{calltouch_url}/__sandbox__/log").json() if e["path"] == ADD]
    assert [e["status"] for e in log] == [200] * 10, [
        (round(e["t"] - log[0]["t"], 3), e["status"]) for e in log
    ]  # no 429
    assert sorted(e["leads"] for e in log) == [100] * 10
    arrivals = sorted(e["t"] for e in log)
    assert max(sum(1 for t in arrivals if a <= t < a + 1) for a in arrivals) <= 5
