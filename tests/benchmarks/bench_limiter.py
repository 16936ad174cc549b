"""
Limiter fidelity: 4 worker processes against a 5 requests/s limit, measured
where it matters, at the platform's emulator: the busiest 1-second window and
the sustained rate. Beside it, Celery's own `rate_limit="5/s"` on the same
work (one request per item) with the same 4 processes.

    .venv/bin/python -m tests.benchmarks.bench_limiter [N] [platform]

`platform` is `kuper` (default) or `calltouch` (its emulator enforces 5/s per
IP with 429s, so a breach shows as 429s too).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import func, select

from producers.client import Producer
from sandbox import calltouch as calltouch_sandbox
from sandbox import kuper as kuper_sandbox
from sandbox import serve
from tests.benchmarks._common import fresh_database, fresh_redis
from tests.benchmarks._procs import celery_worker, relay_env
from tests.factories import calltouch_lead, calltouch_table, kuper_lead, kuper_table
from worker.delivery.context import build
from worker.intake import Submission
from worker.ledger.tables import DeliveryRow
from worker.settings import load, parse_destinations

LIMIT = 5.0


def figures(times: list[float]) -> tuple[int, float]:
    """(the most requests in any 1-second window, the sustained rate first to last)."""
    times = sorted(times)
    busiest, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        busiest = max(busiest, i - j + 1)
    sustained = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    return busiest, sustained


def arrivals(url: str, path: str) -> list[dict[str, Any]]:
    return [e for e in httpx.get(f"{url}/__sandbox__/log").json() if e["path"] == path]


def ours(n: int, url: str, table: dict[str, Any], lead: Any, path: str) -> list[dict[str, Any]]:
    db, broker = fresh_database("leadrelay_bench"), fresh_redis(12)
    tables = {"bench": table}
    env = relay_env(db, broker, tables, Path(tempfile.mkdtemp()))
    ctx = build(load(database_url=db, broker_url=broker, destinations=parse_destinations(tables)))
    httpx.post(f"{url}/__sandbox__/reset")
    with celery_worker("worker", env, beat=True):
        Producer(ctx).submit_many("bench", [Submission(lead()) for _ in range(n)])
        while True:
            with ctx.sessions() as s:
                left = s.scalar(
                    select(func.count()).where(
                        DeliveryRow.state.in_(["queued", "sending", "retry_wait"])
                    )
                )
            if not left:
                break
            time.sleep(0.2)
    ctx.close()
    return arrivals(url, path)


def baseline(n: int, url: str, path: str, platform: str) -> list[dict[str, Any]]:
    broker = fresh_redis(11)
    env = {
        **relay_env("sqlite://", broker, {}, Path(tempfile.mkdtemp())),
        "BASELINE_BROKER": broker,
        "BASELINE_URL": url,
    }
    from tests.benchmarks import baseline_app

    baseline_app.app.conf.broker_url = broker
    counter = redis.Redis.from_url(broker)
    httpx.post(f"{url}/__sandbox__/reset")
    with celery_worker("tests.benchmarks.baseline_app", env, queues="baseline"):
        for _ in range(n):
            if platform == "calltouch":
                baseline_app.post_calltouch.delay(calltouch_lead())
                continue
            lead = kuper_lead()
            lead["phone"] = "7" + "".join(c for c in lead["phone"] if c.isdigit())[1:]
            baseline_app.post.delay(lead)
        while int(counter.get("baseline:done") or 0) < n:
            time.sleep(0.1)
    return arrivals(url, path)


def report(label: str, log: list[dict[str, Any]]) -> None:
    busiest, sustained = figures([e["t"] for e in log])
    refused = sum(1 for e in log if e["status"] == 429)
    print(
        f"  {label:44} busiest 1 s: {busiest:2d}   sustained {sustained:5.2f}/s "
        f"({100 * sustained / LIMIT:5.1f} % of {LIMIT:g})   429s: {refused}"
    )


def main(n: int = 150, platform: str = "kuper") -> None:
    if platform == "calltouch":
        path = "/lead-service/v1/api/customfield/lead/add"
        app = calltouch_sandbox.create_app(site_id="1234", access_token="calltouch-secret-token")
        table_of, lead = calltouch_table, calltouch_lead
    else:
        path = "/partner-candidate/v2/leads/import"
        app = kuper_sandbox.create_app(username="partner", password="kuper-secret-pw")
        table_of, lead = kuper_table, kuper_lead
    with serve(app) as url:
        table = table_of(url, rate=LIMIT, burst=1, concurrency=4, batch_size=1)
        mine = ours(n, url, table, lead, path)
        theirs = baseline(n, url, path, platform)
    print(
        f"limiter on the {platform} emulator: {n} requests, 4 worker processes, "
        f"limit {LIMIT:g} requests/s (same run)"
    )
    report("leadrelay shared Redis limiter", mine)
    report("Celery rate_limit='5/s' (per process)", theirs)


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 150,
        sys.argv[2] if len(sys.argv) > 2 else "kuper",
    )
