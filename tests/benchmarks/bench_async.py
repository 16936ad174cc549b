"""
The event loop under `asubmit_many`: how long 10,000 leads going into the
ledger hold an asyncio app's loop, beside the sync `submit_many` called on the
loop (as a careless handler would call it), and beside one broker publish (the
wake-up), the yardstick: nothing should hold the loop longer than a publish.

    .venv/bin/python tests/benchmarks/bench_async.py [-n 10000] [--chunk 500] [--runs 3]

Every figure is wall time on `time.perf_counter`. A ticker task sleeps 1 ms in
a loop beside the work; a stall is the gap between two of its wake-ups (an idle
loop shows a little over 1 ms). The collector's pauses are caught with
`gc.callbacks` and taken out of each gap for the "less GC" column. As a
long-running server does, the process freezes its start-up objects
(`gc.freeze()`) before the runs, so a collection scans what the requests made.

The ledger is a fresh PostgreSQL database, created here and dropped at the end,
emptied before each case; wake-ups go through the Celery app to a real Redis
(database 14 unless told). One producer of each kind serves every run, warmed
up first (its pool connected, its first wake-up sent), as in a server. Each run
measures the publish in a fresh interpreter: its first publish (the app
configures itself and opens the connection), then `--publishes` more.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# run as a file, the script's own folder would lead sys.path, not the project
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg

from producers.aio import AsyncProducer
from producers.client import Producer
from tests.benchmarks._common import PG_ADMIN, fresh_database, fresh_redis
from tests.factories import kuper_lead, kuper_table
from tests.stalls import Stalls, watch
from worker.intake import Accepted
from worker.ledger.tables import Base
from worker.settings import Settings, load, parse_destinations

ROOT = Path(__file__).resolve().parents[2]
DESTINATION = "kuper"

# One publish in a fresh interpreter: the producer's modules are loaded and the app is
# given its settings, as `Producer.wake` does; the clock runs around `wake()` only.
PUBLISH = """
import json, statistics, sys, time
from tests.factories import kuper_table
from worker.runtime.app import use_settings
from worker.runtime.wakeups import wake
from worker.settings import load, parse_destinations
use_settings(load(database_url=sys.argv[1], broker_url=sys.argv[2],
             destinations=parse_destinations({"kuper": kuper_table("http://127.0.0.1:9")})))
def once():
    start = time.perf_counter()
    wake("kuper")
    return time.perf_counter() - start
first = once()
warm = [once() for _ in range(int(sys.argv[3]))]
print(json.dumps({"first": first, "median": statistics.median(warm),
                  "p99": statistics.quantiles(warm, n=100, method="inclusive")[98]}))
"""

Submit = Callable[[Sequence[dict[str, Any]]], Awaitable[list[Accepted]]]


@dataclass(frozen=True)
class Case:
    """One way of handing N leads over from the loop."""

    label: str
    chunk: int  #: leads per call
    blocking: bool  #: the sync `submit_many`, called on the loop


@dataclass(frozen=True)
class Seen:
    """What one run of a case gave."""

    stalls: Stalls
    leads_per_s: float


@dataclass
class Figures:
    """Every run's figures: each case's, and the publish's."""

    cases: list[list[Seen]]
    publishes: list[dict[str, float]]


def cases(n: int, chunk: int) -> list[Case]:
    calls = math.ceil(n / chunk)
    return [
        Case(f"asubmit_many, {calls} calls of {chunk:,}", chunk, blocking=False),
        Case(f"asubmit_many, 1 call of {n:,}", n, blocking=False),
        Case(f"submit_many on the loop, {calls} × {chunk:,}", chunk, blocking=True),
        Case(f"submit_many on the loop, 1 × {n:,}", n, blocking=True),
    ]


async def feed(submit: Submit, leads: Sequence[dict[str, Any]], chunk: int) -> float:
    """Hand `leads` over `chunk` at a time, one call after another; the seconds it took."""
    started = time.perf_counter()
    for start in range(0, len(leads), chunk):
        results = await submit(leads[start : start + chunk])
        assert all(r.created for r in results)
        await asyncio.sleep(0)  # the loop serves its other tasks between two requests
    return time.perf_counter() - started


def empty_ledger(url: str) -> None:
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


def publish_run(database_url: str, broker_url: str, publishes: int) -> dict[str, float]:
    """The first publish of a fresh interpreter, then the median and p99 of `publishes` more."""
    done = subprocess.run(
        [sys.executable, "-c", PUBLISH, database_url, broker_url, str(publishes)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


async def measure(settings: Settings, plan: list[Case], args: argparse.Namespace) -> Figures:
    """
    Each case, then the publish, `args.runs` times over, so that a busy neighbour
    weighs on every figure alike; one long-lived producer of each kind throughout.
    """
    sync = Producer.from_settings(settings)

    async def blocking(part: Sequence[dict[str, Any]]) -> list[Accepted]:
        return sync.submit_many(DESTINATION, part)  # holds the loop for the whole call

    figures = Figures([[] for _ in plan], [])
    async with AsyncProducer(settings) as producer:

        async def nonblocking(part: Sequence[dict[str, Any]]) -> list[Accepted]:
            return await producer.submit_many(DESTINATION, part)

        for submit in (blocking, nonblocking):  # pools connected, first wake-ups sent
            await submit([kuper_lead() for _ in range(100)])
        gc.collect()
        gc.freeze()
        try:
            for _ in range(args.runs):
                for case, seen in zip(plan, figures.cases, strict=True):
                    empty_ledger(settings.database_url)
                    leads = [kuper_lead() for _ in range(args.leads)]
                    submit = blocking if case.blocking else nonblocking
                    took, stalls = await watch(feed(submit, leads, case.chunk))
                    seen.append(Seen(stalls, args.leads / took))
                figures.publishes.append(
                    publish_run(settings.database_url, settings.broker_url, args.publishes)
                )
        finally:
            gc.unfreeze()
            sync.close()
    return figures


def span(values: Sequence[float], scale: float = 1000.0, digits: int = 1) -> str:
    """'min–max' of `values` (seconds, shown in ms unless `scale` says otherwise)."""
    return f"{min(values) * scale:,.{digits}f}–{max(values) * scale:,.{digits}f}"


def report(plan: list[Case], figures: Figures, args: argparse.Namespace) -> None:
    print(
        f"\n{args.leads:,} leads into a fresh PostgreSQL ledger, wake-ups to Redis db "
        f"{args.redis_db}; {args.runs} runs, min–max"
    )
    print("clock: time.perf_counter (wall time); stall = gap between wake-ups of a 1 ms ticker")
    print(
        f"{'case':36} {'longest stall':>18} {'less GC':>18} {'p99 gap':>18}"
        f" {'longest GC':>14} {'leads/s':>14}"
    )
    for case, runs in zip(plan, figures.cases, strict=True):
        stalls = [r.stalls for r in runs]
        print(
            f"{case.label:36}"
            f" {span([s.longest_s for s in stalls]):>15} ms"
            f" {span([s.longest_but_gc_s for s in stalls]):>15} ms"
            f" {span([s.p99_s for s in stalls]):>15} ms"
            f" {span([s.longest_gc_s for s in stalls]):>11} ms"
            f" {span([r.leads_per_s for r in runs], scale=1, digits=0):>14}"
        )
    publishes = figures.publishes
    print(
        f"\none broker publish (the wake-up: Celery app → Redis), perf_counter around wake();"
        f" {args.publishes:,} a run, each run in a fresh interpreter"
    )
    for key, label in (
        ("median", "median"),
        ("p99", "p99"),
        ("first", "first (cold: the app configures, connects)"),
    ):
        print(f"  {label:44} {span([p[key] for p in publishes], digits=2):>14} ms")
    ours = [
        r.stalls.longest_but_gc_s
        for case, runs in zip(plan, figures.cases, strict=True)
        if not case.blocking
        for r in runs
    ]
    print(
        f"\nasubmit_many's longest stall less GC, worst of all runs ({max(ours) * 1000:.1f} ms),"
        f" is {max(ours) / max(p['p99'] for p in publishes):.1f}× the highest warm publish p99"
        f" and {max(ours) / min(p['first'] for p in publishes):.2f}× the quickest cold first"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The event loop under asubmit_many.")
    parser.add_argument("-n", "--leads", type=int, default=10_000, help="leads per case")
    parser.add_argument("--chunk", type=int, default=500, help="leads per call, as a web app")
    parser.add_argument("--runs", type=int, default=3, help="runs of every measurement")
    parser.add_argument("--publishes", type=int, default=1000, help="warm publishes a run")
    parser.add_argument("--redis-db", type=int, default=14, help="Redis database for wake-ups")
    parser.add_argument("--database", default="leadrelay_bench_async", help="created, dropped")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    load_before = os.getloadavg()[0]
    db, broker = fresh_database(args.database), fresh_redis(args.redis_db)
    try:
        settings = load(
            database_url=db,
            broker_url=broker,
            destinations=parse_destinations({DESTINATION: kuper_table("http://127.0.0.1:9")}),
        )
        plan = cases(args.leads, args.chunk)
        figures = asyncio.run(measure(settings, plan, args))
        report(plan, figures, args)
        print(f"load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}")
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")
        fresh_redis(args.redis_db)  # the wake-ups sent, left for no worker


if __name__ == "__main__":
    main()
