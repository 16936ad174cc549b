"""
Intake: `submit_many` of 100,000 leads into the ledger, beside one Celery
`delay()` per lead on the same Redis. Target: at least 15× faster.

    .venv/bin/python -m tests.benchmarks.bench_intake [N] [--runs R]

Both sides do what an upstream app would do to hand the leads over safely:
ours validates every lead (pydantic), commits it to PostgreSQL and sends a
wake-up per destination; the baseline only publishes one message per lead
(no validation, no durable record beyond the broker). Ours submits in calls
of 5,000, each its own transaction.

Clock: `time.perf_counter`, around the submitting loop on each side. The two
sides alternate `R` times (default 2) in one process; ours starts each run on
a fresh, migrated ledger, after a CHECKPOINT, so that writes left by the
run before are not flushed during its clock. The ratio is given of the means
and of the bests. Each side first hands over 100 other leads outside its
clock, so that one-time costs (imports, connections, the Celery app's set-up)
are outside both clocks: the figure is the rate an app that is up sustains.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import psycopg
from celery import Celery

from producers.client import Producer
from tests.benchmarks._common import fresh_database, fresh_redis, timed
from tests.factories import kuper_lead, kuper_table
from worker.delivery.context import build
from worker.intake import Submission
from worker.settings import load, parse_destinations

CHUNK = 5_000
WARM_UP = 100
OURS, THEIRS = "leadrelay submit_many", "celery delay() per lead"


def ours(n: int, leads: list[dict[str, Any]], broker: str, results: dict[str, float]) -> None:
    db = fresh_database("leadrelay_bench")
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    settings = load(
        database_url=db,
        broker_url=broker,
        destinations=parse_destinations({"kuper-bench": kuper_table("http://127.0.0.1:9")}),
    )
    ctx = build(settings)
    producer = Producer(ctx)
    producer.submit_many("kuper-bench", [Submission(kuper_lead()) for _ in range(WARM_UP)])
    with timed(OURS, results):
        for start in range(0, n, CHUNK):
            out = producer.submit_many(
                "kuper-bench", [Submission(x) for x in leads[start : start + CHUNK]]
            )
            assert all(r.created for r in out)
    ctx.close()


def baseline(leads: list[dict[str, Any]], broker: str, results: dict[str, float]) -> None:
    app = Celery("baseline", broker=broker)

    @app.task(name="baseline.lead")  # type: ignore[untyped-decorator]
    def lead_task(lead: dict[str, object]) -> None:
        """What a naive relay would enqueue: the lead itself, one message each."""

    for _ in range(WARM_UP):
        lead_task.delay(kuper_lead())
    with timed(THEIRS, results):
        for lead in leads:
            lead_task.delay(lead)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_intake")
    parser.add_argument("n", nargs="?", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    n = args.n
    broker = fresh_redis(13)
    leads = [kuper_lead() for _ in range(n)]
    runs: list[dict[str, float]] = []
    print(f"intake of {n:,} leads (same machine, same process; clock: time.perf_counter)")
    for run in range(1, args.runs + 1):
        results: dict[str, float] = {}
        ours(n, leads, broker, results)
        fresh_redis(13)
        baseline(leads, broker, results)
        fresh_redis(13)
        runs.append(results)
        for label, seconds in results.items():
            print(f"  run {run}: {label:24} {seconds:8.2f} s  {n / seconds:10,.0f} leads/s")
        print(f"  run {run}: ratio {results[THEIRS] / results[OURS]:.1f}×")
    mean = {k: sum(r[k] for r in runs) / len(runs) for k in (OURS, THEIRS)}
    best = {k: min(r[k] for r in runs) for k in (OURS, THEIRS)}
    print(
        f"  ratio: submit_many is {mean[THEIRS] / mean[OURS]:.1f}× (means), "
        f"{best[THEIRS] / best[OURS]:.1f}× (bests) faster than delay() per lead (target ≥ 15×)"
    )


if __name__ == "__main__":
    main()
