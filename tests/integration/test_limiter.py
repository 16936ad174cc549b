"""
The limiter, one algorithm on two backends: every test body runs against the shared
Redis limiter (`limiter.lua` on a real Redis) and against `MemoryLimiter`, its copy
for the embedded demo, so the copy cannot drift from the script. Spacing, bursts,
in-flight caps, the platform's window, cooldowns, daily quotas.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from datetime import time as clock

import pytest
import redis

from worker.delivery.limiter import Limiter, MemoryLimiter, RedisLimiter
from worker.platforms.kuper import KuperDestination

#: the longest a refusal for the in-flight cap or the window asks a caller to wait
POLL = timedelta(milliseconds=25)


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


@pytest.fixture(params=["redis", "memory"])
def lim(request: pytest.FixtureRequest) -> Iterator[Limiter]:
    """The limiter under test: the shared Redis one, then the demo's in-memory copy."""
    if request.param == "memory":
        yield MemoryLimiter()
        return
    client: redis.Redis[bytes] = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    yield RedisLimiter(client)
    client.close()


def take(lim: Limiter, d: KuperDestination, n: int) -> list[float]:
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


def test_grants_are_spaced_by_the_rate(lim: Limiter) -> None:
    times = take(lim, dest(rate=20), 11)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.045  # 50 ms apart, give or take the clock's grain
    assert times[-1] - times[0] >= 0.49


def test_the_rate_margin_widens_the_spacing(lim: Limiter) -> None:
    """rate 10/s with a 50% margin: one grant every 150 ms, not 100 ms."""
    d = dest(rate=10, rate_margin=0.5)
    assert lim.acquire(d).granted
    refused = lim.acquire(d)
    assert (refused.granted, refused.why) == (False, "rate")
    assert timedelta(milliseconds=120) < refused.wait <= timedelta(milliseconds=150)


def test_a_burst_goes_at_once_then_the_rate_holds(lim: Limiter) -> None:
    d = dest(rate=5, burst=3)
    granted = [lim.acquire(d).granted for _ in range(4)]
    assert granted == [True, True, True, False]


def test_destinations_sharing_a_limiter_key_share_one_quota(lim: Limiter) -> None:
    a, b = (
        dest(name="a", rate=1, limiter_key="egress-1"),
        dest(name="b", rate=1, limiter_key="egress-1"),
    )
    assert lim.acquire(a).granted
    assert not lim.acquire(b).granted


def test_in_flight_requests_are_capped_until_released(lim: Limiter) -> None:
    d = dest(rate=1000, burst=10, concurrency=2)
    first, second = lim.acquire(d), lim.acquire(d)
    third = lim.acquire(d)
    assert first.granted and second.granted
    assert (third.granted, third.why) == (False, "concurrency")
    assert third.wait == POLL  # the leases run for seconds: poll, do not sleep them out
    lim.release(d, first.holder)
    assert lim.acquire(d).granted


def test_the_in_flight_cap_is_per_destination_even_within_one_scope(lim: Limiter) -> None:
    a, b = (
        dest(name="a", rate=1000, burst=10, concurrency=1, limiter_key="egress-1"),
        dest(name="b", rate=1000, burst=10, concurrency=1, limiter_key="egress-1"),
    )
    held = lim.acquire(a)
    assert held.granted
    assert lim.acquire(a).why == "concurrency"
    assert lim.acquire(b).granted
    lim.release(a, held.holder)
    assert lim.acquire(a).granted


def test_releasing_twice_or_an_unknown_holder_frees_nothing_more(lim: Limiter) -> None:
    d = dest(rate=1000, burst=10, concurrency=1)
    held = lim.acquire(d)
    lim.release(d, held.holder)
    again = lim.acquire(d)
    assert again.granted
    lim.release(d, held.holder)
    lim.release(d, "no-such-holder")
    assert lim.acquire(d).why == "concurrency"


def test_a_cooldown_holds_everyone_and_is_never_shortened(lim: Limiter) -> None:
    d = dest()
    assert lim.cooldown_left(d) == timedelta(0)
    lim.cool_down(d, timedelta(seconds=2))
    lim.cool_down(d, timedelta(milliseconds=10))
    grant = lim.acquire(d)
    assert (grant.granted, grant.why) == (False, "cooldown")
    assert timedelta(seconds=1.5) < grant.wait <= timedelta(seconds=2)
    assert timedelta(seconds=1.5) < lim.cooldown_left(d) <= timedelta(seconds=2)
    lim.cool_down(d, timedelta(seconds=5))
    assert lim.cooldown_left(d) > timedelta(seconds=4)


def test_short_cooldowns_set_at_the_same_moment_never_cut_a_long_one(lim: Limiter) -> None:
    """Workers hitting 429s together: whatever the interleaving, the longest cooldown stands."""

    def hammer(d: KuperDestination, stop: threading.Event) -> None:
        while not stop.is_set():
            lim.cool_down(d, timedelta(milliseconds=50))

    for trial in range(5):  # a fresh scope each time: no cooldown before the race
        d, stop = dest(limiter_key=f"egress-{trial}"), threading.Event()
        workers = [threading.Thread(target=hammer, args=(d, stop)) for _ in range(6)]
        for worker in workers:
            worker.start()
        time.sleep(0.01)
        lim.cool_down(d, timedelta(seconds=5))
        time.sleep(0.05)
        stop.set()
        for worker in workers:
            worker.join()
        assert lim.cooldown_left(d) > timedelta(seconds=4)


def test_a_cooldown_holds_every_destination_of_its_quota_scope(lim: Limiter) -> None:
    """A 429 from Calltouch is about the egress IP: every site behind it waits."""
    a, b = dest(name="a", limiter_key="egress-1"), dest(name="b", limiter_key="egress-1")
    elsewhere = dest(name="c", limiter_key="egress-2")
    lim.cool_down(a, timedelta(seconds=2))
    grant = lim.acquire(b)
    assert (grant.granted, grant.why) == (False, "cooldown")
    assert lim.cooldown_left(b) > timedelta(seconds=1.5)
    assert lim.cooldown_left(elsewhere) == timedelta(0)
    assert lim.acquire(elsewhere).granted


def test_a_cooldown_ends_on_time(lim: Limiter) -> None:
    d = dest()
    lim.cool_down(d, timedelta(milliseconds=100))
    assert lim.acquire(d).why == "cooldown"
    time.sleep(0.12)
    assert lim.cooldown_left(d) == timedelta(0)
    assert lim.acquire(d).granted


def test_a_cooldown_is_shared_by_two_processes(redis_url: str) -> None:
    """
    Redis only: two workers each hold their own client, and a 429 seen by one holds
    the other. `MemoryLimiter` lives in one process and promises nothing of the kind.
    """
    one = RedisLimiter(redis.Redis.from_url(redis_url))
    other_process = RedisLimiter(redis.Redis.from_url(redis_url))
    d = dest()
    one.cool_down(d, timedelta(seconds=2))
    grant = other_process.acquire(d)
    assert (grant.granted, grant.why) == (False, "cooldown")
    assert grant.wait > timedelta(seconds=1.5)


def test_two_processes_share_one_rate_and_one_in_flight_cap(redis_url: str) -> None:
    """Redis only: the quota and the cap are platform-wide, not per worker process."""
    one = RedisLimiter(redis.Redis.from_url(redis_url))
    other_process = RedisLimiter(redis.Redis.from_url(redis_url))
    spaced, capped = dest(name="s", rate=1), dest(name="c", rate=1000, burst=10, concurrency=1)
    assert one.acquire(spaced).granted
    assert not other_process.acquire(spaced).granted
    held = one.acquire(capped)
    assert other_process.acquire(capped).why == "concurrency"
    one.release(capped, held.holder)
    assert other_process.acquire(capped).granted


def test_a_daily_quota_is_counted_per_local_day(lim: Limiter) -> None:
    d = dest(daily_quota=2)
    noon = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    assert [lim.spend_quota(d, noon) for _ in range(3)] == [True, True, False]
    assert lim.spend_quota(d, noon + timedelta(days=1))


def test_a_daily_quota_resets_at_its_local_hour_and_is_per_destination(lim: Limiter) -> None:
    """Reset at 03:00 Moscow (00:00 UTC): 23:30 UTC is still the old day, 00:30 UTC a new one."""
    d = dest(daily_quota=1, quota_resets_at=clock(3, 0), quota_zone="Europe/Moscow")
    other = dest(name="other", daily_quota=1, quota_resets_at=clock(3, 0))
    before = datetime(2026, 11, 22, 23, 30, tzinfo=UTC)
    assert lim.spend_quota(d, before - timedelta(hours=20))
    assert not lim.spend_quota(d, before)
    assert lim.spend_quota(other, before)
    assert lim.spend_quota(d, before + timedelta(hours=1))


def test_no_daily_quota_never_runs_out(lim: Limiter) -> None:
    d = dest()
    noon = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    assert all(lim.spend_quota(d, noon) for _ in range(50))


def test_a_request_counts_in_the_platforms_window_until_a_second_after_its_answer(
    lim: Limiter,
) -> None:
    """A slow request (it may arrive late) holds its place until window_ms after its answer."""
    d = dest(rate=2, burst=2, concurrency=10)
    first, second = lim.acquire(d), lim.acquire(d)
    assert first.granted and second.granted
    time.sleep(1.1)  # both still in flight: they may not have arrived yet
    blocked = lim.acquire(d)
    assert (blocked.granted, blocked.why) == (False, "window")
    assert blocked.wait == POLL  # the window ends at an unknown moment: poll
    lim.release(d, first.holder)
    lim.release(d, second.holder)
    refused = lim.acquire(d)  # answered just now: they may have arrived just now
    assert (refused.granted, refused.why, refused.wait) == (False, "window", POLL)
    time.sleep(1.05)
    assert lim.acquire(d).granted


def test_an_answer_does_not_drop_requests_still_in_flight_from_the_window(lim: Limiter) -> None:
    """
    `a` is answered, `b` is still in flight and may reach the platform any moment, so
    `b` keeps its place in the window for its whole lease, however long after `a`.
    """
    d = dest(rate=2, burst=3, concurrency=10)
    a, b = lim.acquire(d), lim.acquire(d)
    assert a.granted and b.granted
    lim.release(d, a.holder)
    time.sleep(2.1)  # `a` is long out of the window; `b` is not
    assert lim.acquire(d).granted
    refused = lim.acquire(d)
    assert (refused.granted, refused.why) == (False, "window")
