"""
Throughput: leads/s delivered to an unthrottled Kuper emulator by
`celery -A worker worker -c 4` (and beat), beside raw Celery draining one
no-op task per item on the same Redis with the same 4 processes. Target: at
least 5×.

    .venv/bin/python -m tests.benchmarks.bench_throughput [N] [--mode both|drain|e2e|backlog]
        [--runs R] [--sandbox thread|process] [--waiting W]

Three measures:

* drain against drain (`--mode drain`): both sides find N items waiting
  before their workers start (ours: N leads accepted and their wake-ups
  queued; the baseline: N delay() calls), then the workers drain them. The
  clock runs from the first item done to the last one done, read from the
  items' own completion times: the ledger's `settled_at` for ours (taken
  when a batch's answer is read, written in its settling transaction), and
  for the baseline the time.time() each no-op task appends to a Redis list
  (one round trip, what the counter it replaces cost). Start-up is outside
  both clocks; the rate counts the items done after the first instant, over
  that span. The wall clock (perf_counter, workers started → the last item
  seen done) is printed beside it, start-up included. Each side runs `R`
  times (default 2), alternating.
* end to end (`--mode e2e`): the workers already up, ours submits N leads
  (validated, committed) and the workers deliver them; the baseline calls
  delay() N times while its workers drain them. The clock (perf_counter)
  runs from the first item handed over to the last one seen done.
* a drain behind a backlog (`--mode backlog`, ours only): the same drain of N
  leads with W queued leads waiting (default 1,000,000) against N waiting, in
  one run, alternating, `R` runs each. Target: the rate with W waiting at
  least 0.67× the rate with N. Every waiting lead, in both runs, is written
  the same way before the workers start: COPY (bench_ledger's `load_pending`,
  Kuper payloads validated by the adapter, as intake stores them, each with
  its own phone), due evenly over the past hour, then the delivery counts
  folded, VACUUM ANALYZE and a CHECKPOINT (so that the load's writes are not
  flushed during the drain), as a restored ledger would be; then the wake-ups
  that accepting N leads through the producer sends. The clock is the
  drain's (`settled_at`), first lead done → N-th lead done: claims go in due
  order, so those N are the oldest of the W (with W = N, all of them), and
  both runs measure the head of the line, which is what a backlog's workers
  take first. The wall clock is printed beside it as above. The workers stop
  once N are delivered (the rest of the W stay queued). Its own database
  (`leadrelay_bench_drain_backlog`) and Redis database (13); the claim's
  EXPLAIN (ANALYZE, BUFFERS) at W waiting is printed after the first large
  drain, when its delivered rows lie at the head of the claim's index.

Ours sends in batches of 50 (Kuper's own advice). The emulator runs in a
thread of this process (`--sandbox thread`, as before) or in a process of its
own (`--sandbox process`: `leadrelay sandbox`), so that its CPU does not
share this process's GIL with the polling below. During each drain the CPU
each process used over the drain is printed (psutil), in cores.

BENCH_PYSPY=<py-spy binary>:<output prefix> samples every worker process over
each drain (`py-spy record --subprocesses --idle`, 50 Hz, collapsed stacks):
where each process's wall time goes, waits included. py-spy itself takes CPU
on the same machine, so a profiled run is slower than the figures above.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import psycopg
import redis
from sqlalchemy import ColumnElement, func, select

from producers.client import Producer, celery_waker
from sandbox import free_port, serve
from sandbox import kuper as kuper_sandbox
from tests.benchmarks._common import fresh_database, fresh_redis
from tests.benchmarks._procs import celery_worker, relay_env
from tests.benchmarks.bench_ledger import BIG, claim_plan, load_pending, vacuum
from tests.factories import kuper_lead, kuper_table
from worker.delivery.context import WorkerContext, build
from worker.intake import Submission
from worker.ledger import counts
from worker.ledger.tables import DeliveryRow
from worker.settings import Settings, load, parse_destinations

#: the drain mode's own database, apart from the other benchmarks' `leadrelay_bench`
DRAIN_DB = "leadrelay_bench_drain"
#: the backlog mode's: its name holds DRAIN_DB's, so the CPU lines count it as ours
BACKLOG_DB = f"{DRAIN_DB}_backlog"
BACKLOG_REDIS = 13
#: leads per producer call in ours_drain, whose wake-ups the backlog mode sends alike
SUBMIT_CHUNK = 5000


# ---------------------------------------------------------------- CPU over a drain


@dataclass
class Cpu:
    """CPU seconds per process group between two snapshots, and the wall between them."""

    start: dict[str, float] = field(default_factory=dict)
    end: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0
    _t0: float = 0.0

    def snap(self, first: bool) -> None:
        if first:
            self.start, self._t0 = _cpu_by_group(), time.perf_counter()
        else:
            self.end, self.wall = _cpu_by_group(), time.perf_counter() - self._t0

    def lines(self) -> list[str]:
        if not self.wall:
            return []
        used = {k: self.end.get(k, 0.0) - self.start.get(k, 0.0) for k in self.end}
        machine = used.pop("machine") / self.wall
        parts = [f"{k} {v / self.wall:.2f}" for k, v in sorted(used.items()) if v > 0.005]
        total = sum(used.values()) / self.wall
        return [
            f"    CPU over the drain, cores: {', '.join(parts)}; sum {total:.2f}",
            f"    machine busy {machine:.2f} of {os.cpu_count()} cores (the rest of it:"
            f" {machine - total:.2f})",
        ]


def _cpu_by_group() -> dict[str, float]:
    """user+system seconds of this process, its descendants, PostgreSQL and Redis."""
    me = psutil.Process()
    times = psutil.cpu_times()
    out: dict[str, float] = {"machine": sum(times) - times.idle - getattr(times, "iowait", 0.0)}

    def add(name: str, proc: psutil.Process) -> None:
        with contextlib.suppress(psutil.Error):  # a process that ended is not counted
            t = proc.cpu_times()
            out[name] = out.get(name, 0.0) + t.user + t.system

    add("bench+sandbox", me)
    for child in me.children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if " beat" in cmd:
            add("beat", child)
        elif "sandbox" in cmd and "celery" not in cmd:
            add("sandbox", child)
        elif child.ppid() == me.pid:
            add("celery-main", child)
        else:
            add(f"pool-{child.pid}", child)
    for proc in psutil.process_iter(["name", "cmdline"]):
        name = proc.info["name"] or ""
        if name.startswith("postgres"):
            cmd = " ".join(proc.info["cmdline"] or [])
            add("postgres(ours)" if DRAIN_DB in cmd else "postgres(rest)", proc)
        elif name.startswith("redis-server"):
            add("redis", proc)
    return out


# ---------------------------------------------------------------- the emulator


@contextmanager
def sandbox(where: str) -> Iterator[str]:
    """The Kuper emulator, in a thread of this process or in a process of its own."""
    if where == "thread":
        with serve(kuper_sandbox.create_app(username="partner", password="kuper-secret-pw")) as url:
            yield url
        return
    port = free_port()
    code = (
        "import threading; from sandbox import serve, kuper\n"
        f"with serve(kuper.create_app(username='partner', password='kuper-secret-pw'),"
        f" port={port}):\n    threading.Event().wait()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, "sandbox"], start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/__sandbox__/log", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the Kuper emulator did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _requests_ok(url: str) -> int:
    return len([e for e in httpx.get(f"{url}/__sandbox__/log").json() if e["status"] == 200])


# ---------------------------------------------------------------- drain against drain


@dataclass
class Drain:
    """One drain: its first-done → last-done span, the items done after the first instant."""

    items: int
    span: float  #: seconds, first item done → last item done (the items' own times)
    after_first: int  #: items done after the first instant (the rate's numerator)
    wall: float  #: seconds, perf_counter, workers started → last item seen done
    cpu: Cpu

    @property
    def rate(self) -> float:
        return self.after_first / self.span


def _span(times: Sequence[float]) -> tuple[float, int]:
    first, last = min(times), max(times)
    return last - first, sum(1 for t in times if t > first)


def _watch(done: int, n: int, cpu: Cpu, seen: list[bool]) -> bool:
    """One poll: snapshot the CPU at the first item seen done and at the last; True when all are."""
    if done and not seen[0]:
        seen[0] = True
        cpu.snap(first=True)
        _profile_start()
    if done >= n:
        cpu.snap(first=False)
        _profile_stop()
        return True
    return False


#: BENCH_PYSPY=<py-spy binary>:<output file>: sample the worker processes over each drain
#: (wall clock, idle included: where each process's time goes, waits too)
_PYSPY = os.environ.get("BENCH_PYSPY", "")
_profiler: list[subprocess.Popen[bytes]] = []


def _profile_start() -> None:
    if not _PYSPY:
        return
    binary, _, out = _PYSPY.partition(":")
    main = [c for c in psutil.Process().children() if " worker " in " ".join(c.cmdline())]
    args = [binary, "record", "--subprocesses", "--idle", "--nonblocking", "--format", "raw"]
    args += ["-r", "50", "-o", f"{out}.{len(_profiler)}", "--pid", str(main[0].pid)]
    _profiler.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def _profile_stop() -> None:
    if _profiler and _profiler[-1].poll() is None:
        _profiler[-1].send_signal(signal.SIGINT)
        _profiler[-1].wait(30)


def ours_drain(n: int, url: str) -> Drain:
    """N leads accepted (and their wake-ups queued) before 4 worker processes and beat start."""
    db, broker = fresh_database(DRAIN_DB), fresh_redis(12)
    tables = {"kuper-bench": kuper_table(url, rate=1000, burst=50, concurrency=8, batch_size=50)}
    env = relay_env(db, broker, tables, Path(tempfile.mkdtemp()))
    ctx = build(load(database_url=db, broker_url=broker, destinations=parse_destinations(tables)))
    producer = Producer(ctx)
    leads = [Submission(kuper_lead()) for _ in range(n)]
    for i in range(0, n, 5000):
        producer.submit_many("kuper-bench", leads[i : i + 5000])
    settled, wall, cpu = _workers_deliver(ctx, env, n, DeliveryRow.state == "delivered")
    ctx.close()
    span, after = _span(settled)
    return Drain(n, span, after, wall, cpu)


def _workers_deliver(
    ctx: WorkerContext, env: dict[str, str], n: int, delivered: ColumnElement[bool]
) -> tuple[list[float], float, Cpu]:
    """
    4 worker processes and beat, until N deliveries match `delivered`: the settled
    times of those that do (sorted), the wall time from the workers' start, the CPU.
    """
    cpu, seen = Cpu(), [False]
    started = time.perf_counter()
    with celery_worker("worker", env, beat=True):
        while True:
            with ctx.sessions() as s:
                done = int(s.scalar(select(func.count()).where(delivered)) or 0)
            if _watch(done, n, cpu, seen):
                break
            time.sleep(0.05)
        wall = time.perf_counter() - started
    with ctx.sessions() as s:
        when: list[datetime] = list(s.scalars(select(DeliveryRow.settled_at).where(delivered)))
    return sorted(t.timestamp() for t in when), wall, cpu


def _baseline_broker() -> tuple[str, dict[str, str]]:
    """The baseline's Redis (emptied, its app pointed at it) and its workers' environment."""
    from tests.benchmarks import baseline_app

    broker = fresh_redis(11)
    baseline_app.app.conf.broker_url = broker
    env = relay_env("sqlite://", broker, {}, Path(tempfile.mkdtemp()))
    return broker, {**env, "BASELINE_BROKER": broker}


def baseline_drain(n: int) -> Drain:
    """N no-op tasks delay()ed before 4 worker processes start."""
    from tests.benchmarks import baseline_app

    broker, env = _baseline_broker()
    r = redis.Redis.from_url(broker)
    for i in range(n):
        baseline_app.noop.delay(i)
    cpu, seen = Cpu(), [False]
    started = time.perf_counter()
    with celery_worker("tests.benchmarks.baseline_app", env, queues="baseline"):
        while not _watch(int(r.llen(baseline_app.NOOP_DONE)), n, cpu, seen):
            time.sleep(0.05)
        wall = time.perf_counter() - started
    span, after = _span([float(t) for t in r.lrange(baseline_app.NOOP_DONE, 0, -1)])
    return Drain(n, span, after, wall, cpu)


def drain_against_drain(n: int, runs: int, where: str, sides: str = "both") -> None:
    print(f"drain against drain, {n:,} items waiting before 4 worker processes start (each side)")
    print("  clock: first item done → last item done (ledger settled_at / the task's time.time());")
    print("  wall: perf_counter, workers started → last item seen done, start-up included")
    ours: list[Drain] = []
    base: list[Drain] = []
    for run in range(1, runs + 1):
        if sides in ("both", "ours"):
            with sandbox(where) as url:
                ours.append(ours_drain(n, url))
                requests = _requests_ok(url)
            _print(
                "leadrelay, to the Kuper emulator", run, ours[-1], "leads", f"{requests} requests"
            )
        if sides in ("both", "baseline"):
            base.append(baseline_drain(n))
            _print("raw Celery, one no-op task per item", run, base[-1], "items")
    if not (ours and base):
        return
    best_ours, best_base = max(d.rate for d in ours), max(d.rate for d in base)
    mean_ours = sum(d.rate for d in ours) / len(ours)
    mean_base = sum(d.rate for d in base) / len(base)
    print(
        f"  ratio, first done → last done: {mean_ours / mean_base:.1f}× (means), "
        f"{best_ours / best_base:.1f}× (bests); target ≥ 5×"
    )


def _print(label: str, run: int, d: Drain, unit: str, more: str = "") -> None:
    print(
        f"  {label:36} run {run}: {d.span:6.2f} s  {d.rate:7,.0f} {unit}/s first→last"
        f"  | wall {d.wall:6.2f} s  {d.items / d.wall:7,.0f} {unit}/s  {more}"
    )
    for line in d.cpu.lines():
        print(line)
    print(f"    load average when done: {os.getloadavg()[0]:.2f}")


# ---------------------------------------------------------------- a drain behind a backlog


def backlog_drain(n: int, waiting: int, url: str, plan: bool = False) -> Drain:
    """
    The first N of `waiting` queued leads (COPY, due over the past hour) delivered by
    4 worker processes and beat, all waiting before the workers start.
    """
    db, broker = fresh_database(BACKLOG_DB), fresh_redis(BACKLOG_REDIS)
    tables = {BIG: kuper_table(url, rate=1000, burst=50, concurrency=8, batch_size=50)}
    env = relay_env(db, broker, tables, Path(tempfile.mkdtemp()))
    settings = load(database_url=db, broker_url=broker, destinations=parse_destinations(tables))
    ctx = build(settings)
    started = time.perf_counter()
    with psycopg.connect(db) as conn:
        load_pending(conn, {BIG: waiting}, datetime.now(UTC))
        conn.execute("SELECT setval('deliveries_id_seq', (SELECT max(id) FROM deliveries))")
    with ctx.sessions.begin() as s:
        counts.fold(s)
    vacuum(db)
    with psycopg.connect(db, autocommit=True) as conn:
        # the load's dirty pages are written now, not by the checkpointer during the drain
        conn.execute("CHECKPOINT")
    took = time.perf_counter() - started
    print(f"    {waiting:,} leads queued (COPY, VACUUM ANALYZE, CHECKPOINT) in {took:.0f} s")
    _wake_as_producer(settings, n)
    mine = (DeliveryRow.destination == BIG) & (DeliveryRow.state == "delivered")
    settled, wall, cpu = _workers_deliver(ctx, env, n, mine)
    if plan:
        print(
            f"    EXPLAIN (ANALYZE, BUFFERS), one claim of 50 with {waiting - len(settled):,} left:"
        )
        print("\n".join(f"      {line}" for line in claim_plan(ctx.sessions).splitlines()))
    ctx.close()
    span, after = _span(settled[:n])
    return Drain(n, span, after, wall, cpu)


def _wake_as_producer(settings: Settings, n: int) -> None:
    """The wake-ups ours_drain's producer sends for N leads accepted SUBMIT_CHUNK at a time."""
    from worker.runtime.app import use_settings

    use_settings(settings)
    dest = settings.destination(BIG)
    for i in range(0, n, SUBMIT_CHUNK):
        chunk = min(SUBMIT_CHUNK, n - i)
        celery_waker(BIG, min(dest.concurrency, math.ceil(chunk / dest.batch_size)))


def drain_behind_backlog(n: int, waiting: int, runs: int, where: str) -> None:
    print(
        f"a drain behind a backlog: the first {n:,} leads delivered by 4 worker processes"
        f" (and beat), with {waiting:,} queued leads waiting against {n:,}"
    )
    print("  clock: first lead done → N-th lead done (ledger settled_at);")
    print("  wall: perf_counter, workers started → N-th lead seen done, start-up included")
    drains: dict[int, list[Drain]] = {n: [], waiting: []}
    for run in range(1, runs + 1):
        for size in (n, waiting):
            with sandbox(where) as url:
                drains[size].append(backlog_drain(n, size, url, plan=run == 1 and size == waiting))
            _print(f"leadrelay, {size:,} waiting", run, drains[size][-1], "leads")
    small, large = drains[n], drains[waiting]
    mean_small = sum(d.rate for d in small) / len(small)
    mean_large = sum(d.rate for d in large) / len(large)
    best_small, best_large = max(d.rate for d in small), max(d.rate for d in large)
    print(
        f"  ratio {waiting:,} waiting / {n:,} waiting, first done → N-th done:"
        f" {mean_large / mean_small:.2f}× (means), {best_large / best_small:.2f}× (bests);"
        " target ≥ 0.67×"
    )


# ---------------------------------------------------------------- end to end


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
    from tests.benchmarks import baseline_app

    broker, env = _baseline_broker()
    counter = redis.Redis.from_url(broker)
    with celery_worker("tests.benchmarks.baseline_app", env, queues="baseline"):
        start = time.perf_counter()
        for i in range(n):
            baseline_app.noop.delay(i)
        while int(counter.llen(baseline_app.NOOP_DONE)) < n:
            time.sleep(0.05)
        return time.perf_counter() - start


def end_to_end(n: int, where: str) -> None:
    with sandbox(where) as url:
        ours_s = ours(n, url)
        requests = _requests_ok(url)
    base_s = baseline(n)
    print(f"end to end, {n:,} items, 4 worker processes each, workers already up")
    print("  clock: perf_counter, first item handed over → last item seen done")
    print(
        f"  leadrelay, delivered to the Kuper emulator  {ours_s:7.2f} s  {n / ours_s:9,.0f} leads/s"
        f"  ({requests} requests)"
    )
    print(
        f"  {'raw Celery, one no-op task per item':44} {base_s:7.2f} s  {n / base_s:9,.0f} items/s"
    )
    print(f"  ratio: {base_s / ours_s:.1f}× (target ≥ 5×)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_throughput")
    parser.add_argument("n", nargs="?", type=int, default=20_000)
    parser.add_argument("--mode", choices=("both", "drain", "e2e", "backlog"), default="both")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--sandbox", choices=("thread", "process"), default="thread")
    parser.add_argument("--sides", choices=("both", "ours", "baseline"), default="both")
    parser.add_argument(
        "--waiting", type=int, default=1_000_000, help="--mode backlog: leads waiting (≥ N)"
    )
    args = parser.parse_args(argv)
    print(f"({os.cpu_count()} CPUs; the emulator in a {args.sandbox})")
    if args.mode in ("both", "drain"):
        drain_against_drain(args.n, args.runs, args.sandbox, args.sides)
    if args.mode in ("both", "e2e"):
        end_to_end(args.n, args.sandbox)
    if args.mode == "backlog":
        if args.waiting < args.n:
            parser.error("--waiting must be at least N")
        drain_behind_backlog(args.n, args.waiting, args.runs, args.sandbox)


if __name__ == "__main__":
    main()
