"""
The worker's probes, with real processes: liveness reads the worker's own
heartbeat and stays green through a Redis outage longer than its window, while
the worker reconnects by itself and delivers what was accepted meanwhile;
readiness says the broker is away; a wedged worker (its main process stopped)
fails liveness.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from producers.client import Producer
from sandbox import kuper as kuper_sandbox
from sandbox import serve
from tests.factories import kuper_lead, kuper_table
from tests.system.conftest import Relay
from tests.system.test_chaos import RedisServer
from worker.delivery.context import build
from worker.ledger.tables import DeliveryRow
from worker.runtime import heartbeat
from worker.settings import load, parse_destinations

#: seconds between heartbeats here: the liveness window is STALE_AFTER of them
EVERY = 1.0
WINDOW = heartbeat.STALE_AFTER * EVERY
#: how long Redis stays down: well past the liveness window
OUTAGE_S = 4 * WINDOW


@pytest.fixture
def kuper_url() -> Iterator[str]:
    with serve(kuper_sandbox.create_app(username="partner", password="kuper-secret-pw")) as url:
        yield url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def probe(relay: Relay, check: str) -> subprocess.CompletedProcess[str]:
    """The probe as the kubelet runs it: a command in the worker's environment."""
    return subprocess.run(
        [sys.executable, "-m", "worker.runtime.probe", check],
        env=relay.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def delivered(url: str) -> int:
    with httpx.Client() as client:
        log = client.get(f"{url}/__sandbox__/log").json()
    return sum(e.get("created", 0) for e in log)


@pytest.mark.timeout(180)
def test_liveness_stays_green_through_a_redis_outage_and_the_worker_recovers_by_itself(
    relay_factory: Callable[..., Relay],
    own_redis: RedisServer,
    kuper_url: str,
    ledger_url: str,
    tmp_path: Path,
) -> None:
    tables = {"kuper": kuper_table(kuper_url)}
    relay = relay_factory(
        tables,
        broker_url=own_redis.url,
        heartbeat_file=str(tmp_path / "heartbeat"),
        heartbeat_every=str(EVERY),
    )
    relay.start_worker("w1", concurrency=2)
    relay.start_beat()
    worker_pid = relay.procs["w1"].pid
    assert probe(relay, "live").returncode == 0
    ready = probe(relay, "ready")
    assert ready.returncode == 0, ready.stdout

    own_redis.stop()
    seen: list[tuple[int, str]] = []
    ready_while_down = probe(relay, "ready")
    deadline = time.monotonic() + OUTAGE_S
    while time.monotonic() < deadline:
        result = probe(relay, "live")
        seen.append((result.returncode, result.stdout.strip()))
        time.sleep(EVERY / 2)
    assert len(seen) >= OUTAGE_S / EVERY
    assert all(code == 0 for code, _ in seen), seen
    assert ready_while_down.returncode == 1
    assert "broker unreachable" in ready_while_down.stdout
    assert relay.procs["w1"].poll() is None, "the worker exited during the outage"

    # leads accepted while Redis is still down are safe in the ledger; the wake-up is lost
    settings = load(
        database_url=ledger_url, broker_url=own_redis.url, destinations=parse_destinations(tables)
    )
    ctx = build(settings)
    try:
        ids = [Producer(ctx).submit("kuper", kuper_lead()) for _ in range(5)]
        own_redis.start()  # the same port, empty: every message of before is gone
        assert probe(relay, "ready").returncode == 0
        deadline = time.monotonic() + 60
        while delivered(kuper_url) < len(ids):
            assert time.monotonic() < deadline, relay.log("w1")[-3000:]
            time.sleep(0.2)
        with ctx.sessions() as s:
            states = dict(
                s.execute(
                    select(DeliveryRow.state, func.count())
                    .where(DeliveryRow.lead_id.in_(ids))
                    .group_by(DeliveryRow.state)
                ).all()
            )
    finally:
        ctx.close()
    assert states == {"delivered": len(ids)}
    assert relay.procs["w1"].pid == worker_pid and relay.procs["w1"].poll() is None
    assert probe(relay, "live").returncode == 0


@pytest.mark.timeout(120)
def test_liveness_fails_when_the_worker_is_wedged_and_after_it_stops(
    relay_factory: Callable[..., Relay], kuper_url: str, tmp_path: Path
) -> None:
    beat_file = tmp_path / "heartbeat"
    relay = relay_factory(
        {"kuper": kuper_table(kuper_url)},
        heartbeat_file=str(beat_file),
        heartbeat_every=str(EVERY),
    )
    relay.start_worker("w1", concurrency=1)
    assert probe(relay, "live").returncode == 0
    pid = relay.procs["w1"].pid
    os.kill(pid, signal.SIGSTOP)  # every thread of the main process stops: a wedged worker
    try:
        time.sleep(WINDOW + 2 * EVERY)
        wedged = probe(relay, "live")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert wedged.returncode == 1 and "old (stale after" in wedged.stdout, wedged.stdout
    deadline = time.monotonic() + 3 * EVERY
    while probe(relay, "live").returncode != 0:
        assert time.monotonic() < deadline, "the heartbeat did not resume"
    relay.stop()
    assert not beat_file.exists()  # a worker that shut down leaves no heartbeat to trust
    gone = probe(relay, "live")
    assert gone.returncode == 1 and "no heartbeat" in gone.stdout
