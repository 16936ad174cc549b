"""
Throughput: leads/s delivered end to end to an unthrottled Kuper emulator by
`celery -A worker worker -c 4`, beside raw Celery draining one no-op task per
item on the same Redis with the same 4 processes. Target: at least 5×.

    .venv/bin/python -m tests.benchmarks.bench_throughput [N]

Both clocks run from the first item handed over to the last one done, the
workers already up: ours submits N leads (validated, committed) and the
workers deliver them in batches of 50 (Kuper's own advice); the baseline
calls delay() N times while its workers drain them.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis
from sqlalchemy import func, select

from producers.client import Producer
from sandbox import kuper as kuper_sandbox
from sandbox import serve
from tests.benchmarks._common import fresh_database, fresh_redis
from tests.benchmarks._procs import celery_worker, relay_env
from tests.factories import kuper_lead, kuper_table
from worker.delivery.context import build
from worker.intake import Submission
from worker.ledger.tables import DeliveryRow
from worker.settings import load, parse_destinations


def ours(n: int, url: str) -> float:
    db, broker = fresh_database("leadrelay_bench"), fresh_redis(12)
    tables = {"kuper-bench": kuper_table(url, rate=1000, burst=50, concurrency=8, batch_size=50)}
    env = relay_env(db, broker, tables, Path(tempfile.mkdtemp()))
    ctx = build(load(database_url=db, broker_url=broker, destinations=parse_destinations(tables)))
    leads = [Submission(kuper_lead()) for _ in range(n)]
    with celery_worker("worker", env, beat=True):
        start = time.perf_counter()
        producer = Producer(ctx)
        for i in range(0, n, 5000):
            producer.submit_many("kuper-bench", leads[i : i + 5000])
        while True:
            with ctx.sessions() as s:
                done = s.scalar(select(func.count()).where(DeliveryRow.state == "delivered"))
            if done == n:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
    ctx.close()
    return elapsed


def baseline(n: int) -> float:
    broker = fresh_redis(11)
    env = {
        **relay_env("sqlite://", broker, {}, Path(tempfile.mkdtemp())),
        "BASELINE_BROKER": broker,
    }
    from tests.benchmarks import baseline_app

    baseline_app.app.conf.broker_url = broker
    counter = redis.Redis.from_url(broker)
    with celery_worker("tests.benchmarks.baseline_app", env, queues="baseline"):
        start = time.perf_counter()
        for i in range(n):
            baseline_app.noop.delay(i)
        while int(counter.get("baseline:done") or 0) < n:
            time.sleep(0.05)
        return time.perf_counter() - start


def main(n: int = 20_000) -> None:
    with serve(kuper_sandbox.create_app(username="partner", password="kuper-secret-pw")) as url:
        ours_s = ours(n, url)
        requests = len(
            [e for e in httpx.get(f"{url}/__sandbox__/log").json() if e["status"] == 200]
        )
    base_s = baseline(n)
    print(f"throughput, {n:,} items, 4 worker processes each (same machine, same run)")
    print(
        f"  leadrelay, delivered to the Kuper emulator  {ours_s:7.2f} s  {n / ours_s:9,.0f} leads/s"
        f"  ({requests} requests)"
    )
    print(
        f"  {'raw Celery, one no-op task per item':44} {base_s:7.2f} s  {n / base_s:9,.0f} items/s"
    )
    print(f"  ratio: {base_s / ours_s:.1f}× (target ≥ 5×)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
