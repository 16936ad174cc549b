"""
Status polls at scale: the requests a minute that 10,000 undecided Admitad
applications cost, beside Admitad's limit of 600 a minute per application and
the naive way (one request per application per look, at the same cadence).

    .venv/bin/python -m tests.benchmarks.bench_polls [minutes [applications]]

The Admitad emulator runs in a process of its own (so it does not share our
interpreter), its programs answering `processing` for the whole run. Setup:
10,000 two-stage leads (the document's example `campaigns`) are accepted into a
fresh PostgreSQL ledger and stage 1 of each is sent by the real delivery loop
(`worker.delivery.loop.drain`, in 2 processes, a high `rate` for the setup only),
so the ledger holds 10,000 `awaiting_status` deliveries exactly as the loop
leaves them, due their first look 5 s after their create. The emulator's own
limit is lifted for the setup's sake, so the figures are what the relay sends.

The run does what beat and the workers do, with the example configuration's
values (`rate` 10/s, `poll_interval` 300 s, `first_look` 5 s): every 5 s
(`LEADRELAY_SWEEP_EVERY`) the sweep's own queries (expired leases back,
`poll_due_counts`) and, when polls are due, a poll pass (`worker.delivery.polling.poll`)
on a pool of 4 threads (a worker's `-c 4`). Requests are counted from the
emulator's log, on `time.monotonic` (the emulator's log stamps its requests with
the same system-wide monotonic clock); looks from what each pass settled, and
polls per application from each delivery's `looks` in the ledger.
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from sqlalchemy import func, select

from producers.client import Producer
from sandbox import admitad as admitad_sandbox
from sandbox import free_port, serve
from tests.benchmarks._common import PG_ADMIN, fresh_database, fresh_redis
from tests.factories import admitad_lead, admitad_table
from worker import ledger
from worker.delivery import loop as delivery
from worker.delivery import polling
from worker.delivery.context import WorkerContext, build
from worker.intake import Submission
from worker.leads import LeadState
from worker.ledger.tables import DeliveryRow
from worker.settings import load, parse_destinations

N = 10_000
DATABASE = "leadrelay_bench_polls"
REDIS_DB = 9
SECRET = "admitad-client-secret"
#: Admitad's limit: 600 requests a minute per application
ADMITAD_LIMIT = 600
#: beat's sweep, LEADRELAY_SWEEP_EVERY's default
SWEEP_EVERY = 5.0
#: a worker's `-c 4`: poll tasks that may run at once
WORKER_PROCESSES = 4
#: the example configuration's Admitad values (leadrelay.example.toml)
EXAMPLE = {"poll_interval": 300, "rate": 10}
#: the document's example: stage 1 is polled, stage 2 waits for its verdict
CAMPAIGNS = [{"ids": [17809, 16126], "pause": 0}, {"ids": [17288, 16651], "pause": 150}]
#: seconds the emulator's programs stay `processing`: longer than any run
UNDECIDED = 10.0**7


def _emulator(port: int) -> None:
    """The Admitad emulator on `port` until this process is ended."""
    app = admitad_sandbox.create_app(client_secret=SECRET, decide_after=UNDECIDED, per_minute=10**9)
    with serve(app, port=port):
        while True:
            time.sleep(3600)


def start_emulator() -> tuple[multiprocessing.process.BaseProcess, str]:
    port = free_port()
    proc = multiprocessing.get_context("spawn").Process(target=_emulator, args=(port,), daemon=True)
    proc.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/__sandbox__/log").raise_for_status()
            return proc, url
        except httpx.HTTPError:
            if time.monotonic() > deadline or not proc.is_alive():
                raise RuntimeError("the emulator did not start") from None
            time.sleep(0.1)


def context(db: str, broker: str, url: str, **table: Any) -> WorkerContext:
    tables = {"admitad": admitad_table(url, **table)}
    return build(load(database_url=db, broker_url=broker, destinations=parse_destinations(tables)))


def awaiting(ctx: WorkerContext) -> int:
    with ctx.sessions() as s:
        return int(
            s.scalar(select(func.count()).where(DeliveryRow.state == LeadState.AWAITING_STATUS))
            or 0
        )


#: the setup's own destination table: the example's, with room to create fast
SETUP = {**EXAMPLE, "rate": 1000, "burst": 50, "concurrency": 16}
#: processes that run the delivery loop during the setup
SETUP_PROCESSES = 2


def _drain(db: str, broker: str, url: str) -> None:
    """The delivery loop, as a worker process runs it, until nothing is due."""
    ctx = context(db, broker, url, **SETUP)
    while True:
        done = delivery.drain(ctx, "admitad", budget=30)
        if done.deferred is not None:
            time.sleep(done.deferred.total_seconds())
        elif not (done.more or done.requests):
            break
    ctx.close()


def setup(db: str, broker: str, url: str, n: int) -> float:
    """`n` leads accepted and stage 1 of each created by the delivery loop; its seconds."""
    ctx = context(db, broker, url, **SETUP)
    started = time.monotonic()
    producer = Producer(ctx, waker=None)
    for i in range(0, n, 5000):
        producer.submit_many(
            "admitad",
            [Submission(admitad_lead(campaigns=CAMPAIGNS)) for _ in range(min(5000, n - i))],
        )
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=_drain, args=(db, broker, url)) for _ in range(SETUP_PROCESSES)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    took = time.monotonic() - started
    made = awaiting(ctx)
    ctx.close()
    if made != n:
        raise RuntimeError(f"setup left {made} of {n} deliveries awaiting a status")
    return took


@dataclass(frozen=True, slots=True)
class Pass:
    """One poll pass: when it started and ended (time.monotonic) and how many it looked at."""

    start: float
    end: float
    looks: int


def run(db: str, broker: str, url: str, seconds: float) -> tuple[float, list[Pass], list[int]]:
    """Beat's sweep every 5 s and the poll passes it starts, for `seconds`."""
    ctx = context(db, broker, url, **EXAMPLE)
    dest = ctx.settings.destination("admitad")
    passes: list[Pass] = []
    lock = threading.Lock()

    def one_pass() -> None:
        began = time.monotonic()
        counts: Counter[str] = polling.poll(ctx, dest.name)
        looked = sum(n for k, n in counts.items() if k != "next_stage_now")
        with lock:
            passes.append(Pass(began, time.monotonic(), looked))

    start = time.monotonic()
    running: list[Future[None]] = []
    with ThreadPoolExecutor(WORKER_PROCESSES) as pool:
        tick = start
        while tick < start + seconds:
            now = ctx.clock()
            with ctx.sessions.begin() as session:  # the sweep's part for polls
                ledger.sweep_expired_leases(
                    session, dest.name, now=now, max_attempts=dest.max_attempts
                )
                due = ledger.poll_due_counts(session, now)
            if due.get(dest.name):
                running.append(pool.submit(one_pass))
            tick += SWEEP_EVERY
            time.sleep(max(0.0, tick - time.monotonic()))
        for f in running:
            f.result()  # a pass that raised fails the benchmark
    with ctx.sessions() as s:
        looks = [
            int((data or {}).get("looks", 0))
            for data in s.scalars(select(DeliveryRow.data).where(DeliveryRow.stage == 1))
        ]
    ctx.close()
    return start, sorted(passes, key=lambda p: p.start), looks


def report(
    url: str,
    start: float,
    seconds: float,
    passes: list[Pass],
    looks: list[int],
    setup_s: float,
) -> None:
    log = httpx.get(f"{url}/__sandbox__/log", timeout=60).json()
    minutes = int(seconds // 60)
    asked: list[Counter[str]] = [Counter() for _ in range(minutes)]
    for e in log:
        i = int((float(e["t"]) - start) // 60)
        if 0 <= i < minutes:
            path = str(e["path"])
            kind = "list" if path.endswith("/broker/applications/") else path.strip("/")
            asked[i][kind] += 1
            if e["status"] != 200:
                asked[i]["not 200"] += 1
    naive = [0] * minutes
    for p in passes:
        i = int((p.start - start) // 60)
        if 0 <= i < minutes:
            naive[i] += p.looks
    print(
        f"{len(looks):,} undecided Admitad applications (stage 1 of the document's example, "
        f"`processing` throughout); created by the delivery loop in the {setup_s:.0f} s "
        f"just before the run, each due its first look 5 s after its create"
    )
    print(
        f"clock: time.monotonic (the emulator's log and the run); poll_interval 300 s, "
        f"first_look 5 s, rate 10/s, a sweep every {SWEEP_EVERY:.0f} s, "
        f"{WORKER_PROCESSES} poll tasks at once"
    )
    print(
        f"requests: what the emulator received in each minute of the run; limit: Admitad's "
        f"{ADMITAD_LIMIT}/minute per application; naive: one request per application per look, "
        f"the same looks"
    )
    print(f"\n  {'minute':>6}  {'requests':>8}  {'of them lists':>13}  {'limit':>5}  {'naive':>7}")
    for i in range(minutes):
        total = sum(v for k, v in asked[i].items() if k != "not 200")
        print(
            f"  {i + 1:>6}  {total:>8}  {asked[i]['list']:>13}  {ADMITAD_LIMIT:>5}  "
            f"{naive[i]:>7,}"
            + (f"  ({asked[i]['not 200']} not 200)" if asked[i]["not 200"] else "")
        )
    print(f"\n  poll passes: {len(passes)}")
    for p in passes:
        print(
            f"    at +{p.start - start:6.1f} s, {p.end - p.start:5.1f} s long, "
            f"{p.looks:>6,} applications looked at"
        )
    print(
        f"  polls per application: min {min(looks)}, median {statistics.median(looks):g}, "
        f"max {max(looks)}, total {sum(looks):,} (naive: one request each)"
    )


def drop_database() -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


def main(minutes: float = 3.0, n: int = N) -> None:
    seconds = minutes * 60
    proc, url = start_emulator()
    try:
        db, broker = fresh_database(DATABASE), fresh_redis(REDIS_DB)
        setup_s = setup(db, broker, url, n)
        start, passes, looks = run(db, broker, url, seconds)
        report(url, start, seconds, passes, looks, setup_s)
    finally:
        proc.terminate()
        proc.join(10)
        drop_database()


if __name__ == "__main__":
    args = sys.argv[1:]
    main(float(args[0]) if args else 3.0, int(args[1]) if len(args) > 1 else N)
