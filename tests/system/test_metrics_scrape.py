"""
Scrapes as Prometheus makes them, linted by Prometheus's own `promtool check
metrics`: a live worker's /metrics (two prefork children summed through
PROMETHEUS_MULTIPROC_DIR) after it delivered leads and took a 429, and the
`leadrelay metrics` service's /metrics on a PostgreSQL ledger holding
delivered leads, a paused destination's queued ones and unsent settlement
events.

promtool must exit 0 and print nothing. No lint warning is let through:
everything we and prometheus_client write (the `_total` counters, base units
in seconds, HELP on every family, the process and GC collectors) passes today,
so a new warning is a change to look at, not known noise.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from producers.client import Producer
from sandbox import free_port, serve
from sandbox import kuper as kuper_sandbox
from tests.factories import kuper_lead, kuper_table
from tests.system.conftest import Relay
from worker import ledger
from worker.delivery.context import WorkerContext, build
from worker.ops import metrics
from worker.settings import load, parse_destinations

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def kuper_url() -> Iterator[str]:
    with serve(kuper_sandbox.create_app(username="partner", password="kuper-secret-pw")) as url:
        yield url


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: apt-get install prometheus (Debian's package)")
    return path


@pytest.fixture
def ctx_for(ledger_url: str, redis_url: str) -> Iterator[Callable[[dict[str, Any]], WorkerContext]]:
    opened: list[WorkerContext] = []

    def factory(tables: dict[str, Any]) -> WorkerContext:
        settings = load(
            database_url=ledger_url, broker_url=redis_url, destinations=parse_destinations(tables)
        )
        opened.append(build(settings))
        return opened[-1]

    yield factory
    for ctx in opened:
        ctx.close()


def scrape(port: int, timeout: float = 30) -> str:
    """GET /metrics, waiting for the server to come up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
            response.raise_for_status()
            return response.text
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def lint(promtool: str, text: str) -> None:
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    said = (checked.stdout + checked.stderr).strip()
    assert checked.returncode == 0 and not said, f"promtool exit {checked.returncode}: {said}"


def samples(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def get(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_delivered(ctx: WorkerContext, destination: str, n: int, timeout: float) -> None:
    from worker.ledger import reports

    deadline = time.monotonic() + timeout
    while True:
        with ctx.sessions() as session:
            stats = reports.stats(session, ctx.clock()).get(destination)
        if stats is not None and stats.states.get("delivered", 0) == n:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not {n} delivered in {timeout}s: {stats}")
        time.sleep(0.2)


@pytest.mark.timeout(180)
def test_a_worker_and_the_ledger_service_scrape_clean_through_promtool(
    relay_factory: Callable[..., Relay],
    ctx_for: Callable[[dict[str, Any]], WorkerContext],
    kuper_url: str,
    tmp_path: Path,
    promtool: str,
) -> None:
    httpx.post(f"{kuper_url}/__sandbox__/reset")
    tables = {
        "scrape-kuper": kuper_table(
            kuper_url, batch_size=10, notify_task="crm.lead_settled", notify_queue="crm"
        ),
        "scrape-paused": kuper_table(kuper_url, worker_group="slow"),
    }
    worker_port, service_port = free_port(), free_port()
    relay = relay_factory(tables, metrics_port=str(worker_port))
    relay.env[metrics.MULTIPROC_VAR] = str(tmp_path / "prom")
    ctx = ctx_for(tables)
    with ctx.sessions.begin() as session:
        ledger.set_pause(
            session, "scrape-paused", kind="auth", reason="401", now=datetime.now(UTC), until=None
        )
    httpx.post(
        f"{kuper_url}/__sandbox__/faults", json={"status": 429, "retry_after": "1", "count": 1}
    )
    relay.start_worker(concurrency=2)  # no beat: nothing flushes the outbox
    Producer(ctx).submit_many("scrape-paused", [kuper_lead() for _ in range(2)])
    Producer(ctx).submit_many("scrape-kuper", [kuper_lead() for _ in range(30)])
    wait_delivered(ctx, "scrape-kuper", 30, 90)

    service = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "producers",
            "metrics",
            "--host=127.0.0.1",
            f"--port={service_port}",
        ],
        env={k: v for k, v in relay.env.items() if k != metrics.MULTIPROC_VAR},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from_worker = scrape(worker_port)
        from_ledger = scrape(service_port)
    finally:
        service.terminate()
        service.wait(10)

    lint(promtool, from_worker)
    lint(promtool, from_ledger)

    worker = samples(from_worker)
    assert get(
        worker, "leadrelay_deliveries_total", destination="scrape-kuper", outcome="delivered"
    )
    assert get(worker, "leadrelay_requests_total", destination="scrape-kuper", status="429") == 1
    assert get(worker, "leadrelay_requests_total", destination="scrape-kuper", status="2xx") >= 3
    assert get(worker, "leadrelay_throttled_total", destination="scrape-kuper") == 1
    assert get(worker, "leadrelay_limiter_wait_seconds_count", destination="scrape-kuper") >= 4
    for name in tables:  # a worker without -Q or a group drains every destination
        assert get(worker, "leadrelay_rate_limit", destination=name) == 50

    ledger_view = samples(from_ledger)
    assert (
        get(ledger_view, "leadrelay_backlog", destination="scrape-kuper", state="delivered") == 30
    )
    assert get(ledger_view, "leadrelay_backlog", destination="scrape-paused", state="queued") == 2
    assert get(ledger_view, "leadrelay_paused", destination="scrape-paused", kind="auth") == 1
    assert get(ledger_view, "leadrelay_paused", destination="scrape-kuper", kind="auth") == 0
    assert get(ledger_view, "leadrelay_events_unsent", destination="scrape-kuper") == 30
    assert get(ledger_view, "leadrelay_oldest_due_seconds", destination="scrape-paused") > 0
    info = {"platform": "kuper", "worker_group": "slow"}
    assert get(ledger_view, "leadrelay_destination_info", destination="scrape-paused", **info) == 1
