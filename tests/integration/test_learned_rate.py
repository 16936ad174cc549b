"""
A learned rate (`rate = "auto"`): its settings, and its steps on both limiter
backends (the shared Redis one, `limiter_learn.lua`, and the demo's in-memory
copy): it climbs on answers to the ceiling, is cut on a 429 and never below
the floor, is shared by every worker, and one burst of 429s cuts it once.
The exchange tells it each answer. Timing under a real platform-like limit is
in tests/benchmarks/bench_learned_rate.py.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client import REGISTRY

from tests.factories import kuper_table
from tests.system.conftest import write_config
from worker.config import DestinationConfig, RateBounds
from worker.delivery import learned_rate
from worker.delivery.context import WorkerContext
from worker.delivery.exchange import Turn, call
from worker.delivery.limiter import Grant, Limiter, MemoryLimiter, RedisLimiter
from worker.errors import ConfigError
from worker.keys import learned_key
from worker.platforms.kuper import KuperDestination
from worker.settings import parse_destinations


def dest(**overrides: object) -> KuperDestination:
    table = {
        "name": "k",
        "platform": "kuper",
        "base_url": "http://x",
        "username": "u",
        "password": "p",
        "rate": "auto",
        "rate_ceiling": 20,
        "rate_floor": 1,
        "rate_start": 10,
        "burst": 1,
        "concurrency": 50,
        **overrides,
    }
    return KuperDestination.model_validate(table)


@pytest.fixture(params=["redis", "memory"])
def lim(request: pytest.FixtureRequest) -> Iterator[Limiter]:
    """The limiter under test: the shared Redis one, then the demo's in-memory copy."""
    if request.param == "memory":
        yield MemoryLimiter()
        return
    client: redis.Redis[bytes] = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    yield RedisLimiter(client)
    client.close()


def granted(lim: Limiter, d: DestinationConfig) -> Grant:
    """A slot, sleeping out the limiter's short waits as the exchange does."""
    while True:
        grant = lim.acquire(d)
        if grant.granted:
            lim.release(d, grant.holder)
            return grant
        time.sleep(grant.wait.total_seconds())


def answered(lim: Limiter, d: KuperDestination, times: int) -> float:
    """
    `times` requests granted together now and answered without a throttle; the
    learned rate after them (one grant stands for them all: only its time counts).
    """
    grant, rate = granted(lim, d), None
    for _ in range(times):
        rate = lim.learn(d, grant, throttled=False)
    assert rate is not None
    return rate


# ---------------------------------------------------------------- settings


KUPER = {"platform": "kuper", "base_url": "https://k", "username": "u", "password": "p"}


@pytest.mark.parametrize(
    ("table", "key", "problem"),
    [
        ({"rate": "auto"}, "destinations.k.rate_ceiling", 'required with rate = "auto"'),
        ({"rate": 5, "rate_ceiling": 20}, "destinations.k.rate_ceiling", "only with"),
        ({"rate_floor": 1}, "destinations.k.rate_floor", "only with"),
        ({"rate": "fast"}, "destinations.k.rate", 'a positive number of requests/s, or "auto"'),
        ({"rate": -1}, "destinations.k.rate", "positive number"),
        ({"rate": "auto", "rate_ceiling": 0}, "destinations.k.rate_ceiling", "greater than 0"),
        (
            {"rate": "auto", "rate_ceiling": 10, "rate_floor": 12},
            "destinations.k.rate_floor",
            "must not exceed rate_ceiling (10)",
        ),
        (
            {"rate": "auto", "rate_ceiling": 10, "rate_floor": 2, "rate_start": 1},
            "destinations.k.rate_start",
            "must not be under rate_floor (2)",
        ),
    ],
)
def test_a_wrong_rate_setting_fails_naming_its_key(
    table: dict[str, Any], key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_destinations({"k": {**KUPER, **table}})
    assert info.value.key == key
    assert problem in info.value.problem


def test_auto_takes_a_twentieth_of_the_ceiling_as_floor_and_starts_there() -> None:
    auto = parse_destinations({"k": {**KUPER, "rate": "auto", "rate_ceiling": 20}})["k"]
    assert auto.rate_bounds == RateBounds(floor=1.0, start=1.0, ceiling=20.0)
    assert auto.initial_rate == 1.0
    started = {**KUPER, "rate": "auto", "rate_ceiling": 20, "rate_start": 4}
    assert parse_destinations({"k": started})["k"].rate_bounds == RateBounds(1.0, 4.0, 20.0)


def test_a_fixed_rate_reads_as_before_and_learns_nothing() -> None:
    fixed = parse_destinations({"k": {**KUPER, "rate": "2.5"}})["k"]  # a ${VAR} arrives as text
    assert (fixed.rate, fixed.rate_bounds, fixed.initial_rate) == (2.5, None, 2.5)


def test_salesman_may_learn_its_rate() -> None:
    table = {
        "platform": "salesman",
        "base_url": "https://crm",
        "login": "l",
        "api_key": "k",
        "rate": "auto",
        "rate_ceiling": 5,
    }
    assert parse_destinations({"s": table})["s"].rate_bounds == RateBounds(0.25, 0.25, 5.0)


# ---------------------------------------------------------------- the steps


def test_a_learned_rate_starts_at_its_start_and_climbs_on_answers_to_the_ceiling(
    lim: Limiter,
) -> None:
    d = dest(rate_start=1, rate_ceiling=4)
    assert lim.learned(d) == 1.0
    first = answered(lim, d, 1)
    assert first == pytest.approx(2.0)  # RECOVER / rate: one whole request/s at 1/s
    rates = [answered(lim, d, 1) for _ in range(12)]
    assert rates == sorted(rates)
    assert rates[-1] == 4.0
    assert lim.learned(d) == 4.0


def test_a_throttle_cuts_the_rate_to_seven_tenths_and_never_below_the_floor(
    lim: Limiter,
) -> None:
    d = dest(rate_start=10, rate_floor=3)
    cuts = [lim.learn(d, granted(lim, d), throttled=True) for _ in range(5)]
    assert cuts == pytest.approx([7.0, 4.9, 3.43, 3.0, 3.0])
    assert lim.learned(d) == pytest.approx(3.0)


def test_the_learned_rate_spaces_the_grants(lim: Limiter) -> None:
    """Cut from 10/s to 7/s: the next grant is followed by 146 ms (1.02/7 s), not 102 ms."""
    d = dest(rate_start=10)
    lim.learn(d, granted(lim, d), throttled=True)
    granted(lim, d)
    refused = lim.acquire(d)
    assert (refused.granted, refused.why) == (False, "rate")
    assert timedelta(milliseconds=120) < refused.wait <= timedelta(milliseconds=146)


def test_near_the_rate_last_throttled_the_climb_slows_to_a_probe(lim: Limiter) -> None:
    d = dest(rate_start=10)
    lim.learn(d, granted(lim, d), throttled=True)  # at 10/s: 7/s, 10 remembered
    grant = granted(lim, d)
    rates = [lim.learn(d, grant, throttled=False) or 0.0 for _ in range(30)]
    assert rates[2] == pytest.approx(7 + 1 / 7 + 1 / 7.143 + 1 / 7.283, abs=1e-3)
    near = [(a, b) for a, b in itertools.pairwise(rates) if a >= learned_rate.NEAR * 10]
    assert len(near) > 5
    for before, after in near:
        assert after - before == pytest.approx(learned_rate.PROBE / before)


def test_a_climb_past_the_rate_last_throttled_forgets_it() -> None:
    """The platform's limit went up: past the old throttle point, the climb is fast again."""
    bounds = RateBounds(1, 10, 20)
    state = learned_rate.LearnedRate(10.01, throttled_at=10.0, cut_at=5)
    after = state.answered(bounds, granted_at=6)
    assert after.throttled_at == 0
    assert after.rate == pytest.approx(10.01 + learned_rate.RECOVER / 10.01)


def test_throttles_of_requests_granted_before_a_cut_count_once(lim: Limiter) -> None:
    """Four requests in flight at 10/s all get 429s: the rate falls once, to 7/s."""
    d = dest(rate_start=10, burst=4)
    grants = [lim.acquire(d) for _ in range(4)]
    assert all(g.granted for g in grants)
    threads = [
        threading.Thread(target=lim.learn, args=(d, g), kwargs={"throttled": True}) for g in grants
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert lim.learned(d) == pytest.approx(7.0)
    for g in grants:  # their answers speak of the old rate: no climb either
        assert lim.learn(d, g, throttled=False) == pytest.approx(7.0)
    time.sleep(0.002)  # a grant in the cut's own millisecond counts as before it
    assert lim.learn(d, granted(lim, d), throttled=True) == pytest.approx(4.9)


def test_destinations_sharing_a_limiter_key_learn_one_rate(lim: Limiter) -> None:
    a, b = dest(name="a", limiter_key="egress-1"), dest(name="b", limiter_key="egress-1")
    elsewhere = dest(name="c", limiter_key="egress-2")
    lim.learn(a, granted(lim, a), throttled=True)
    assert lim.learned(b) == pytest.approx(7.0)
    assert lim.learned(elsewhere) == 10.0


def test_a_fixed_rate_learns_nothing(lim: Limiter) -> None:
    d = dest(rate=5, rate_ceiling=None, rate_floor=None, rate_start=None)
    grant = granted(lim, d)
    assert lim.learn(d, grant, throttled=True) is None
    assert lim.learned(d) is None


def test_bounds_changed_in_the_file_hold_what_was_learned(lim: Limiter) -> None:
    """A ceiling lowered under the learned rate holds it at once, before any answer."""
    lim.learn(dest(), granted(lim, dest()), throttled=False)
    assert lim.learned(dest(rate_ceiling=6, rate_start=5)) == 6.0


# ---------------------------------------------------------------- shared by every worker


def test_two_workers_share_one_learned_rate(redis_url: str) -> None:
    """Redis only: what one worker's answers teach, the other sends at, and builds on."""
    one = RedisLimiter(redis.Redis.from_url(redis_url))
    other_worker = RedisLimiter(redis.Redis.from_url(redis_url))
    d = dest(rate_start=10)
    one.learn(d, granted(one, d), throttled=True)
    assert other_worker.learned(d) == pytest.approx(7.0)
    climbed = other_worker.learn(d, granted(other_worker, d), throttled=False)
    assert climbed == pytest.approx(7 + 1 / 7)
    assert one.learned(d) == pytest.approx(climbed)
    stored = one.redis.hgetall(learned_key(d.limiter_scope))
    assert float(stored[b"throttled_at"]) == pytest.approx(10.0)
    assert 0 < one.redis.pttl(learned_key(d.limiter_scope)) <= 7 * 86_400_000


def test_one_burst_of_throttles_from_many_workers_cuts_once(redis_url: str) -> None:
    """Redis only: six worker processes' clients, each with a request of the same burst."""
    workers = [RedisLimiter(redis.Redis.from_url(redis_url)) for _ in range(6)]
    d = dest(rate_start=10, burst=6)
    grants = [w.acquire(d) for w in workers]
    assert all(g.granted for g in grants)
    barrier = threading.Barrier(len(workers))

    def throttled(worker: RedisLimiter, grant: Grant) -> None:
        barrier.wait()
        worker.learn(d, grant, throttled=True)

    threads = [
        threading.Thread(target=throttled, args=p) for p in zip(workers, grants, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert workers[0].learned(d) == pytest.approx(7.0)


# ---------------------------------------------------------------- the exchange tells it


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("status", "learned"),
    [(200, 10.1), (400, 10.1), (429, 7.0), (503, 7.0), (500, 10.0)],
)
def test_each_answer_moves_the_learned_rate_and_its_gauge(
    make_ctx: Callable[..., WorkerContext], status: int, learned: float
) -> None:
    """2xx and 4xx: the rate held; 429 and 503: too fast; another 5xx says nothing of it."""
    name = f"auto-{status}"
    table = kuper_table("http://127.0.0.1:9", rate="auto", rate_ceiling=20, rate_start=10)
    ctx = make_ctx({name: {**table, "burst": 1}})
    http = httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(status)))
    turn = Turn.at(replace(ctx, http=http), name)
    with http:
        call(turn, httpx.Request("POST", "http://127.0.0.1:9/import"), kind="send")
    assert ctx.limiter.learned(ctx.settings.destination(name)) == pytest.approx(learned)
    if status != 500:
        assert value("leadrelay_rate_limit", destination=name) == pytest.approx(learned)


def test_stats_shows_the_rate_learned_and_the_rate_fixed(
    ledger_url: str, redis_url: str, tmp_path: Path
) -> None:
    tables = {
        "auto": kuper_table("http://127.0.0.1:9", rate="auto", rate_ceiling=20, rate_start=10),
        "fixed": kuper_table("http://127.0.0.1:9", rate=5),
    }
    config = write_config(tmp_path / "leadrelay.toml", tables)
    limiter = RedisLimiter(redis.Redis.from_url(redis_url))
    learning = parse_destinations(tables)["auto"]
    limiter.learn(learning, granted(limiter, learning), throttled=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADRELAY_")}
    env |= {
        "LEADRELAY_DATABASE_URL": ledger_url,
        "LEADRELAY_BROKER_URL": redis_url,
        "LEADRELAY_CONFIG": str(config),
    }

    def stats(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "producers", "stats", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout

    rows = {r["destination"]: r for r in json.loads(stats("--json"))}
    assert (rows["auto"]["rate"], rows["auto"]["rate_auto"]) == (pytest.approx(7.0), True)
    assert (rows["fixed"]["rate"], rows["fixed"]["rate_auto"]) == (5.0, False)
    lines = stats().splitlines()
    assert "auto: learned rate 7.00/s" in lines
    assert not any(line.startswith("fixed: learned") for line in lines)
