"""
How many worker processes one PostgreSQL serves: claims per second against worker
processes, 1 to 8, side by side in one run.

    .venv/bin/python -m tests.benchmarks.bench_scale_out [--seconds 10] [--leads 300000]

A fresh PostgreSQL ledger holds `--leads` queued Kuper leads at one destination.
Each round starts N processes (multiprocessing, spawn) that run a worker's ledger
cycle for `--seconds`, all at once: claim 50 (`ledger.claim_due`, committed), then
in a second transaction the exchange's attempt record (`ledger.record_attempt`,
with a result per lead) and the settlement of all 50 as delivered
(`ledger.settle`). No HTTP: this is the ledger's share of a drain, what every
worker process asks of the one database, so the figure is the ceiling the
database puts on a fleet, whatever the platforms allow. Between rounds the
delivered leads are queued again and the tables vacuumed, so each round starts
alike.

Clocks: each process times its own cycles on `time.perf_counter`; a round's rate
is the claims all processes finished inside the window over the window's length.
The machine is shared and has 2 cores, which PostgreSQL and the processes share:
read the ratios between rounds, not the absolute figures.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from tests.benchmarks._common import fresh_database
from worker import ledger
from worker.leads import LeadState
from worker.ledger.db import make_engine, make_sessionmaker
from worker.ledger.store import NewLead
from worker.outcomes import AttemptRecord, Settlement

DATABASE = "leadrelay_bench_scale"
DESTINATION = "kuper-scale"
BATCH = 50
ROUNDS = (1, 2, 4, 8)


def load(url: str, n: int) -> None:
    sessions = make_sessionmaker(make_engine(url))
    now = datetime.now(UTC) - timedelta(hours=1)
    payload = {"phone": "79160000000", "first_name": "Тест", "vacancy_id": 3, "city_id": 53}
    for start in range(0, n, 5_000):
        leads = [
            NewLead(id=uuid.uuid4().hex, destination=DESTINATION, payload=payload, source="api")
            for _ in range(min(5_000, n - start))
        ]
        with sessions.begin() as s:
            ledger.insert_leads(s, leads, now)
    sessions.kw["bind"].dispose()
    vacuum(url)


def vacuum(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for table in ("leads", "deliveries", "attempts", "attempt_results"):
            conn.execute(f"VACUUM (ANALYZE) {table}")


def requeue(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE deliveries SET state = 'queued', settled_at = NULL, lease_until = NULL,"
            " lease_owner = NULL, attempts = 0 WHERE state <> 'queued'"
        )
        conn.execute("TRUNCATE attempt_results, attempts")
    vacuum(url)


def cycle_loop(url: str, owner: str, start_at: float, seconds: float, out: Any) -> None:
    """One worker process: claim, record, settle until the window closes."""
    sessions = make_sessionmaker(make_engine(url, pool_size=1, max_overflow=0))
    lease = timedelta(seconds=60)
    samples: list[float] = []
    leads = 0
    while time.time() < start_at:
        time.sleep(0.001)
    end = time.perf_counter() + seconds
    while True:
        began = time.perf_counter()
        if began >= end:
            break
        now = datetime.now(UTC)
        with sessions.begin() as s:
            got = ledger.claim_due(s, DESTINATION, limit=BATCH, now=now, lease=lease, owner=owner)
        if not got:
            break
        record = AttemptRecord(
            destination=DESTINATION,
            kind="send",
            at=now,
            request={"method": "POST", "url": "https://api.kuper.ru/", "body": "***"},
            status_code=200,
            answer='{"status": "success"}',
            error="",
            elapsed_ms=12,
        )
        done = [
            Settlement(
                delivery_id=d.id, state=LeadState.DELIVERED, attempts=1, due_at=None, detail=""
            )
            for d in got
        ]
        with sessions.begin() as s:
            ledger.record_attempt(s, record, [(d.id, "delivered", "") for d in got])
            ledger.settle(s, owner, done, now)
        finished = time.perf_counter()
        if finished <= end:
            samples.append(finished - began)
            leads += len(got)
    sessions.kw["bind"].dispose()
    out.put((samples, leads))


def run_round(url: str, processes: int, seconds: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    results: Any = ctx.Queue()
    start_at = time.time() + 3.0  # every process has imported and connected by then
    procs = [
        ctx.Process(target=cycle_loop, args=(url, f"p{i}", start_at, seconds, results))
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    gathered = [results.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join(30)
    samples = [s for each, _ in gathered for s in each]
    leads = sum(n for _, n in gathered)
    return {
        "processes": processes,
        "claims_s": len(samples) / seconds,
        "leads_s": leads / seconds,
        "p50": statistics.median(samples) if samples else float("nan"),
        "p99": sorted(samples)[int(0.99 * (len(samples) - 1))] if samples else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--leads", type=int, default=300_000)
    args = parser.parse_args()
    url = fresh_database(DATABASE)
    started = time.perf_counter()
    load(url, args.leads)
    print(f"loaded {args.leads:,} queued leads in {time.perf_counter() - started:.0f} s")
    rows = []
    for n in ROUNDS:
        requeue(url)
        rows.append(run_round(url, n, args.seconds))
        r = rows[-1]
        print(f"  {n} process(es): {r['claims_s']:,.0f} claims/s", flush=True)
    print(
        f"\none PostgreSQL, claims of {BATCH} with their attempt record and settlement,"
        f" {args.seconds:.0f} s a round (time.perf_counter in each process)"
    )
    print(
        f"{'processes':>10} {'claims/s':>10} {'leads/s':>10} {'vs 1':>6} {'cycle p50':>10}"
        f" {'cycle p99':>10}"
    )
    one = rows[0]["claims_s"] or 1.0
    for r in rows:
        print(
            f"{r['processes']:>10} {r['claims_s']:>10,.0f} {r['leads_s']:>10,.0f}"
            f" {r['claims_s'] / one:>5.2f}x {r['p50'] * 1000:>8.1f} ms {r['p99'] * 1000:>8.1f} ms"
        )
    with psycopg.connect(url.rpartition("/")[0] + "/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


if __name__ == "__main__":
    main()
