"""
Admitad pauses at scale: 100,000 applications waiting for their next stage cost
Redis nothing that grows with their number, because a pause is a `due_at` in
the ledger. Beside it, the naive way: one Celery task per stage with a countdown
(an ETA), which Redis holds and every worker prefetches into memory.

    .venv/bin/python -m tests.benchmarks.bench_pauses [N]

Ours: N three-stage leads are accepted; stage 2 of each is released with a
day-long pause by the ledger's own `release_next_stage` (what the loop calls
when stage 1 is decided); then real `celery -A worker worker` and `beat`
processes run for 20 s. Redis memory and key count, and the worker's resident
memory, are read before and after.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import psutil
import redis
from sqlalchemy import select, update

from producers.client import Producer
from tests.benchmarks._common import fresh_database, fresh_redis
from tests.benchmarks._procs import celery_worker, relay_env
from tests.factories import admitad_lead, admitad_table
from worker.delivery.context import build
from worker.intake import Submission
from worker.leads import LeadState
from worker.ledger.tables import DeliveryRow
from worker.settings import load, parse_destinations

RUN = 20.0


def redis_figures(client: redis.Redis) -> tuple[int, int]:
    return int(client.info("memory")["used_memory"]), int(client.dbsize())


def worker_rss() -> int:
    """Resident memory of every celery worker process on the machine (ours are the only ones)."""
    total = 0
    for proc in psutil.process_iter(["cmdline", "memory_info"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "celery" in cmd and " worker" in cmd:
            total += proc.info["memory_info"].rss
    return total


def ours(n: int) -> tuple[tuple[int, int], tuple[int, int], int]:
    db, broker = fresh_database("leadrelay_bench"), fresh_redis(10)
    tables = {"admitad": admitad_table("http://127.0.0.1:9")}
    ctx = build(load(database_url=db, broker_url=broker, destinations=parse_destinations(tables)))
    client = redis.Redis.from_url(broker)
    before = redis_figures(client)
    campaigns = [[17809], {"ids": [16126], "pause": 1440}, {"ids": [16633], "pause": 1440}]
    producer = Producer(ctx, waker=None)
    for i in range(0, n, 5000):
        producer.submit_many(
            "admitad",
            [Submission(admitad_lead(campaigns=campaigns)) for _ in range(min(5000, n - i))],
        )
    now = ctx.clock()
    with (
        ctx.sessions.begin() as s
    ):  # stage 1 decided (as the loop settles it), stage 2 paused a day
        s.execute(
            update(DeliveryRow)
            .where(DeliveryRow.stage == 1)
            .values(state=LeadState.APPROVED, due_at=None)
        )
        s.execute(
            update(DeliveryRow)
            .where(DeliveryRow.stage == 2)
            .values(state=LeadState.QUEUED, due_at=now + timedelta(minutes=1440))
        )
        waiting = len(s.scalars(select(DeliveryRow.id).where(DeliveryRow.stage == 2)).all())
    env = relay_env(db, broker, tables, Path(tempfile.mkdtemp()))
    with celery_worker("worker", env, beat=True):
        time.sleep(RUN)
        rss = worker_rss()
        after = redis_figures(client)
    ctx.close()
    assert waiting == n
    return before, after, rss


def naive(n: int) -> tuple[tuple[int, int], tuple[int, int], int]:
    broker = fresh_redis(11)
    client = redis.Redis.from_url(broker)
    before = redis_figures(client)
    env = {
        **relay_env("sqlite://", broker, {}, Path(tempfile.mkdtemp())),
        "BASELINE_BROKER": broker,
    }
    from tests.benchmarks import baseline_app

    baseline_app.app.conf.broker_url = broker
    for i in range(n):
        baseline_app.noop.apply_async((i,), countdown=86400)
    with celery_worker("tests.benchmarks.baseline_app", env, queues="baseline"):
        time.sleep(RUN)
        rss = worker_rss()
        after = redis_figures(client)
    return before, after, rss


def main(n: int = 100_000) -> None:
    """Each side twice: with none waiting (the worker's baseline memory), then with n."""
    empty_ours, mine = ours(0), ours(n)
    empty_naive, theirs = naive(0), naive(n)
    print(f"{n:,} applications waiting a day for their next stage (same machine, same run)")
    rows = (
        ("leadrelay: due_at in the ledger", empty_ours, mine),
        ("Celery countdown per stage", empty_naive, theirs),
    )
    for label, empty, full in rows:
        (before, _, rss0), (_, after, rss1) = empty, full
        print(
            f"  {label:34} Redis {before[0] / 2**20:6.1f} → {after[0] / 2**20:6.1f} MiB "
            f"(keys {before[1]} → {after[1]}); workers' RSS {rss0 / 2**20:6.1f} → "
            f"{rss1 / 2**20:6.1f} MiB"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
