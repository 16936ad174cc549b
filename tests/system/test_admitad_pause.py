"""
Admitad's staged algorithm across restarts, with real worker and beat processes:
every process killed during a stage's pause, and stage 3 still goes out once, on time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from sqlalchemy import select

from producers.client import Producer
from sandbox import admitad as admitad_sandbox
from sandbox import serve
from tests.factories import admitad_lead, admitad_table
from tests.system.conftest import Relay
from worker.delivery.context import build
from worker.leads import LeadState
from worker.ledger.tables import DeliveryRow
from worker.settings import load, parse_destinations

MINUTE = 1.0  # one pause minute lasts a second here: scaled, not mocked away


@pytest.fixture
def admitad_url() -> Iterator[str]:
    app = admitad_sandbox.create_app(client_secret="admitad-client-secret", decide_after=0.3)
    with serve(app) as url:
        yield url


def creates(url: str) -> list[dict[str, object]]:
    log = httpx.get(f"{url}/__sandbox__/log").json()
    return [e for e in log if str(e["path"]).endswith("/create/") and e["status"] == 200]


def test_a_restart_of_every_process_during_a_pause_sends_stage_3_once_and_on_time(
    relay_factory: Callable[..., Relay], admitad_url: str, ledger_url: str, redis_url: str
) -> None:
    tables = {"admitad": admitad_table(admitad_url, pause_minute=MINUTE, poll_interval=0.2)}
    relay = relay_factory(tables)
    relay.start_worker()
    relay.start_beat()
    ctx = build(
        load(database_url=ledger_url, broker_url=redis_url, destinations=parse_destinations(tables))
    )
    campaigns = [[17809], {"ids": [16126], "pause": 0}, {"ids": [16633], "pause": 6}]
    Producer(ctx).submit_many("admitad", [admitad_lead(campaigns=campaigns)])

    def stages() -> dict[int, DeliveryRow]:
        with ctx.sessions() as s:
            return {r.stage: r for r in s.scalars(select(DeliveryRow))}

    deadline = time.monotonic() + 60
    while stages()[3].state != LeadState.QUEUED:  # stage 2 decided: stage 3 waits its pause
        assert time.monotonic() < deadline, {k: v.state for k, v in stages().items()}
        time.sleep(0.1)
    released = time.time()
    due = stages()[3].due_at
    assert due is not None
    assert due.timestamp() - released == pytest.approx(6 * MINUTE, abs=1.0)

    relay.kill("w1")  # every process, SIGKILL, in the middle of the pause
    relay.kill("beat")
    time.sleep(1.0)
    relay.start_worker("w2")
    relay.start_beat()

    while len(creates(admitad_url)) < 3:
        assert time.monotonic() < deadline + 30, creates(admitad_url)
        time.sleep(0.1)
    sent_at = time.time()
    assert sent_at >= due.timestamp() - 0.05, "stage 3 went out before its pause was over"
    assert sent_at - due.timestamp() < 4.0, "stage 3 went out late"
    time.sleep(2.0)
    assert len(creates(admitad_url)) == 3  # once: not again after the restart
    ctx.close()
