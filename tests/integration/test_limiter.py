"""The shared limiter on a real Redis: spacing, bursts, in-flight caps, cooldowns, quotas."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta

import redis

from worker.limiter import RedisLimiter
from worker.platforms.kuper import KuperDestination


def dest(**overrides: object) -> KuperDestination:
    table = {
        "name": "k",
        "platform": "kuper",
        "base_url": "http://x",
        "username": "u",
        "password": "p",
        "rate": 10,
        "burst": 1,
        "concurrency": 50,
        **overrides,
    }
    return KuperDestination.model_validate(table)


def limiter(redis_url: str) -> RedisLimiter:
    return RedisLimiter(redis.Redis.from_url(redis_url))


def take(lim: RedisLimiter, d: KuperDestination, n: int) -> list[float]:
    """Acquire n slots the way the loop does (sleeping out short waits); returns grant times."""
    times = []
    while len(times) < n:
        grant = lim.acquire(d)
        if grant.granted:
            times.append(time.monotonic())
            lim.release(d, grant.holder)
        else:
            time.sleep(grant.wait.total_seconds())
    return times


def test_grants_are_spaced_by_the_rate(redis_url: str) -> None:
    times = take(limiter(redis_url), dest(rate=20), 11)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.045  # 50 ms apart, give or take the clock's grain
    assert times[-1] - times[0] >= 0.49


def test_a_burst_goes_at_once_then_the_rate_holds(redis_url: str) -> None:
    lim, d = limiter(redis_url), dest(rate=5, burst=3)
    granted = [lim.acquire(d).granted for _ in range(4)]
    assert granted == [True, True, True, False]


def test_destinations_sharing_a_limiter_key_share_one_quota(redis_url: str) -> None:
    lim = limiter(redis_url)
    a, b = (
        dest(name="a", rate=1, limiter_key="egress-1"),
        dest(name="b", rate=1, limiter_key="egress-1"),
    )
    assert lim.acquire(a).granted
    assert not lim.acquire(b).granted


def test_in_flight_requests_are_capped_until_released(redis_url: str) -> None:
    lim, d = limiter(redis_url), dest(rate=1000, burst=10, concurrency=2)
    first, second = lim.acquire(d), lim.acquire(d)
    third = lim.acquire(d)
    assert first.granted and second.granted
    assert (third.granted, third.why) == (False, "concurrency")
    lim.release(d, first.holder)
    assert lim.acquire(d).granted


def test_a_cooldown_holds_everyone_and_is_never_shortened(redis_url: str) -> None:
    lim, other_process = limiter(redis_url), limiter(redis_url)
    d = dest()
    lim.cool_down(d, timedelta(seconds=2))
    lim.cool_down(d, timedelta(milliseconds=10))
    grant = other_process.acquire(d)
    assert (grant.granted, grant.why) == (False, "cooldown")
    assert grant.wait > timedelta(seconds=1.5)


def test_a_daily_quota_is_counted_per_local_day(redis_url: str) -> None:
    lim, d = limiter(redis_url), dest(daily_quota=2)
    noon = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    assert [lim.spend_quota(d, noon) for _ in range(3)] == [True, True, False]
    assert lim.spend_quota(d, noon + timedelta(days=1))


def test_a_request_counts_in_the_platforms_window_until_a_second_after_its_answer(
    redis_url: str,
) -> None:
    """A slow request (it may arrive late) holds its place until window_ms after its answer."""
    lim, d = limiter(redis_url), dest(rate=2, burst=2, concurrency=10)
    first, second = lim.acquire(d), lim.acquire(d)
    assert first.granted and second.granted
    time.sleep(1.1)  # both still in flight: they may not have arrived yet
    blocked = lim.acquire(d)
    assert (blocked.granted, blocked.why) == (False, "window")
    lim.release(d, first.holder)
    lim.release(d, second.holder)
    assert not lim.acquire(d).granted  # answered just now: they may have arrived just now
    time.sleep(1.05)
    assert lim.acquire(d).granted
