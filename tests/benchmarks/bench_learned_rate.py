"""
A learned rate against a platform that moves its limit and never says what it is.

The Kuper emulator behind a hidden limit (a sliding second, as the platforms
count): 8 requests/s, then 3/s, then 8/s, each for one phase (60 s); a request
over it gets 429 with `Retry-After: 1`. Four `celery -A worker worker`
processes and beat deliver one lead a request from a backlog larger than
the three phases can take, three times on the same emulator: `rate = 8` (the
limit of the fast phases), `rate = 20` (a guess too high), and
`rate = "auto"` with `rate_ceiling = 20`.

    .venv/bin/python -m tests.benchmarks.bench_learned_rate [--seconds-per-phase 60] [--out DIR]

Printed per run, over the three phases from the first request: the share of
requests answered 429, the share of the hidden capacity (the leads the
limit would have taken) that was delivered, and the busiest second of
requests sent once each phase has settled (its first third left out) beside
its limit. The learned rate (read from Redis every 100 ms), the hidden
limit and each run's deliveries a second go to `learned_rate.png` in --out.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from producers.client import Producer
from sandbox import kuper as kuper_sandbox
from sandbox import serve
from tests.benchmarks._common import fresh_database, fresh_redis
from tests.benchmarks._procs import celery_worker, relay_env
from tests.factories import kuper_lead, kuper_table
from worker.delivery.context import build
from worker.delivery.limiter import RedisLimiter
from worker.intake import Submission
from worker.settings import load, parse_destinations

#: the hidden limit of each phase, requests in any second
LIMITS = (8, 3, 8)
PATH = "/partner-candidate/v2/leads/import"
#: the Redis database and PostgreSQL database of these runs
REDIS_DB = 12
DATABASE = "leadrelay_bench_learned"
RUNS: dict[str, dict[str, Any]] = {
    "fixed rate = 8": {"rate": 8},
    "fixed rate = 20": {"rate": 20},
    "auto, rate_ceiling = 20": {"rate": "auto", "rate_ceiling": 20},
}


class HiddenLimit:
    """
    ASGI middleware: at most `LIMITS[phase]` requests to PATH in any second, the
    phases `seconds` long from the first request; over it, 429 with Retry-After.
    Every request to PATH is logged as (monotonic time, 429 or not).
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds
        self.started: float | None = None
        self.log: list[tuple[float, bool]] = []
        self._taken: deque[float] = deque()
        self._lock = threading.Lock()

    def limit_at(self, t: float) -> int:
        started = self.started if self.started is not None else t
        phase = int((t - started) // self.seconds)
        return LIMITS[min(phase, len(LIMITS) - 1)]

    def reset(self) -> None:
        with self._lock:
            self.started = None
            self.log.clear()
            self._taken.clear()

    def _admit(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if self.started is None:
                self.started = now
            while self._taken and now - self._taken[0] >= 1.0:
                self._taken.popleft()
            allowed = len(self._taken) < self.limit_at(now)
            if allowed:
                self._taken.append(now)
            self.log.append((now, not allowed))
            return allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") == PATH and not self._admit():
            await Response(
                '{"error": "too many requests"}',
                status_code=429,
                headers={"retry-after": "1", "content-type": "application/json"},
            )(scope, receive, send)
            return
        await self.app(scope, receive, send)


@dataclass
class Run:
    """What one configuration did in the three phases."""

    label: str
    seconds: float
    #: (seconds since the first request, answered 429)
    requests: list[tuple[float, bool]] = field(default_factory=list)
    #: (seconds since the first request, requests/s the limiter held to)
    rates: list[tuple[float, float]] = field(default_factory=list)

    @property
    def capacity(self) -> int:
        return int(sum(LIMITS) * self.seconds)

    @property
    def refused(self) -> int:
        return sum(1 for _, throttled in self.requests if throttled)

    @property
    def delivered(self) -> int:
        return len(self.requests) - self.refused

    def busiest_settled(self, phase: int) -> int:
        """The most requests sent in any second of the phase's last two thirds."""
        start, end = (phase + 1 / 3) * self.seconds, (phase + 1) * self.seconds
        times = [t for t, _ in self.requests if start <= t < end]
        busiest, j = 0, 0
        for i, t in enumerate(times):
            while times[j] <= t - 1.0:
                j += 1
            busiest = max(busiest, i - j + 1)
        return busiest


@contextmanager
def sampling(limiter: RedisLimiter, dest: Any, gate: HiddenLimit, run: Run) -> Iterator[None]:
    """Read the rate the limiter holds to every 100 ms (the fixed one is constant)."""
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            if gate.started is None:
                continue
            rate = limiter.learned(dest)
            run.rates.append((time.monotonic() - gate.started, rate or dest.initial_rate))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def one_run(label: str, rate: dict[str, Any], url: str, gate: HiddenLimit, seconds: float) -> Run:
    db, broker = fresh_database(DATABASE), fresh_redis(REDIS_DB)
    tables = {"bench": kuper_table(url, burst=1, concurrency=4, batch_size=1, **rate)}
    env = relay_env(db, broker, tables, Path(tempfile.mkdtemp()))
    ctx = build(load(database_url=db, broker_url=broker, destinations=parse_destinations(tables)))
    dest = ctx.settings.destination("bench")
    client = redis.Redis.from_url(broker)
    limiter = RedisLimiter(client)
    leads = int(sum(LIMITS) * seconds * 1.3) + 100
    Producer(ctx).submit_many("bench", [Submission(kuper_lead()) for _ in range(leads)])
    gate.reset()
    run = Run(label, seconds)
    with celery_worker("worker", env, beat=True), sampling(limiter, dest, gate, run):
        while gate.started is None:
            time.sleep(0.05)
        time.sleep(max(0.0, gate.started + len(LIMITS) * seconds - time.monotonic()))
        started = gate.started
        end = len(LIMITS) * seconds
        run.requests = [(t - started, r) for t, r in list(gate.log) if t - started < end]
        run.rates = [(t, r) for t, r in run.rates if t < end]
    client.close()
    ctx.close()
    return run


def report(runs: list[Run], seconds: float) -> None:
    limits = ", ".join(f"{limit}/s" for limit in LIMITS)
    print(
        f"learned rate: the Kuper emulator with a hidden limit of {limits} "
        f"({seconds:g} s each), 4 worker processes, one lead a request"
    )
    print(
        f"  {'':26} {'requests':>8} {'429s':>6} {'% 429':>6} {'delivered':>9} "
        f"{'% of capacity':>13}   busiest settled second / limit"
    )
    for run in runs:
        busiest = "  ".join(f"{run.busiest_settled(i)}/{limit}" for i, limit in enumerate(LIMITS))
        print(
            f"  {run.label:26} {len(run.requests):8d} {run.refused:6d} "
            f"{100 * run.refused / max(1, len(run.requests)):6.1f} {run.delivered:9d} "
            f"{100 * run.delivered / run.capacity:13.1f}   {busiest}"
        )


def plot(runs: list[Run], seconds: float, path: Path) -> None:
    """
    The rate each run held to and its deliveries a second, over the hidden limit.
    matplotlib is not among the dev extras (the lock would carry it and numpy for
    one picture): without it the figures are printed and the plot is skipped.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("  plot skipped: matplotlib is not installed (.venv/bin/pip install matplotlib)")
        return
    end = len(LIMITS) * seconds
    steps_t = [i * seconds for i in range(len(LIMITS) + 1)]
    steps_v = [*LIMITS, LIMITS[-1]]
    fig = Figure(figsize=(11, 7))  # no pyplot: no backend, no window
    top, bottom = fig.subplots(2, 1, sharex=True)
    for axes in (top, bottom):
        axes.step(steps_t, steps_v, where="post", color="black", lw=2, label="hidden limit")
        axes.set_xlim(0, end)
        axes.grid(alpha=0.3)
    for run in runs:
        if run.rates:
            top.plot([t for t, _ in run.rates], [r for _, r in run.rates], label=run.label)
        per_second = [0] * int(end)
        for t, throttled in run.requests:
            if not throttled:
                per_second[int(t)] += 1
        bottom.plot(range(int(end)), per_second, lw=1, label=run.label)
    top.set_ylabel("requests/s the limiter held to")
    top.set_ylim(0, 22)
    top.legend(loc="upper right")
    bottom.set_ylabel("leads delivered a second")
    bottom.set_xlabel("seconds since the first request")
    bottom.legend(loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"  plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds-per-phase", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args()
    app = kuper_sandbox.create_app(username="partner", password="kuper-secret-pw")
    gate = HiddenLimit(app, args.seconds_per_phase)
    with serve(gate) as url:
        runs = [
            one_run(label, rate, url, gate, args.seconds_per_phase) for label, rate in RUNS.items()
        ]
    report(runs, args.seconds_per_phase)
    path = args.out / "learned_rate.png"
    plot(runs, args.seconds_per_phase, path)


if __name__ == "__main__":
    main()
