"""
Intake: `submit_many` of 100,000 leads into the ledger, beside one Celery
`delay()` per lead on the same Redis. Target: at least 15× faster.

    .venv/bin/python -m tests.benchmarks.bench_intake [N]

Both sides do what an upstream app would do to hand the leads over safely:
ours validates every lead (pydantic), commits it to PostgreSQL and sends a
wake-up per destination; the baseline only publishes one message per lead
(no validation, no durable record beyond the broker).
"""

from __future__ import annotations

import sys

from celery import Celery

from producers.client import Producer
from tests.benchmarks._common import fresh_database, fresh_redis, timed
from tests.factories import kuper_lead, kuper_table
from worker.delivery.context import build
from worker.intake import Submission
from worker.settings import load, parse_destinations

CHUNK = 5_000


def main(n: int = 100_000) -> None:
    db = fresh_database("leadrelay_bench")
    broker = fresh_redis(13)
    settings = load(
        database_url=db,
        broker_url=broker,
        destinations=parse_destinations({"kuper-bench": kuper_table("http://127.0.0.1:9")}),
    )
    ctx = build(settings)
    producer = Producer(ctx)
    leads = [kuper_lead() for _ in range(n)]
    results: dict[str, float] = {}

    with timed("leadrelay submit_many", results):
        for start in range(0, n, CHUNK):
            out = producer.submit_many(
                "kuper-bench", [Submission(x) for x in leads[start : start + CHUNK]]
            )
            assert all(r.created for r in out)

    baseline = Celery("baseline", broker=broker)

    @baseline.task(name="baseline.lead")  # type: ignore[untyped-decorator]
    def lead_task(lead: dict[str, object]) -> None:
        """What a naive relay would enqueue: the lead itself, one message each."""

    with timed("celery delay() per lead", results):
        for lead in leads:
            lead_task.delay(lead)

    ours, theirs = results["leadrelay submit_many"], results["celery delay() per lead"]
    print(f"intake of {n:,} leads (same machine, same run)")
    for label, seconds in results.items():
        print(f"  {label:28} {seconds:8.2f} s  {n / seconds:10,.0f} leads/s")
    print(
        f"  ratio: submit_many is {theirs / ours:.1f}× faster than delay() per lead (target ≥ 15×)"
    )
    ctx.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
