"""
The shared limiter: how fast, how many at once, and whether a destination cools down.

Celery's `rate_limit` is per worker process and cannot hold a platform-wide
quota, so every worker asks Redis instead (`limiter.lua`, one atomic script):
a GCRA token bucket per quota scope (`DestinationConfig.limiter_scope`: per
account, or per egress IP for Calltouch), an in-flight cap per destination,
and a cooldown per quota scope set by a 429/503 that every worker honours.
With `rate = "auto"` the bucket's rate is the scope's learned rate, read in
the same step and moved by each answer (`learn`, `limiter_learn.lua`; the
algorithm is `worker.delivery.learned_rate`).

`MemoryLimiter` is the same algorithm inside one process, for the embedded
demo only; it is not shared and says so. One test suite runs against both.

The limiter's Redis keys, like every other key lead relay names (Celery's
queues are kombu's), come from `worker.keys`.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import Protocol
from zoneinfo import ZoneInfo

import redis

from worker.config import DestinationConfig, RateBounds
from worker.delivery import learned_rate
from worker.delivery.learned_rate import LearnedRate
from worker.keys import (
    cooldown_key,
    inflight_key,
    learned_key,
    quota_key,
    tat_key,
    window_key,
)


@dataclass(frozen=True, slots=True)
class Grant:
    """The limiter's answer: `wait` is zero when the caller holds a slot as `holder`."""

    wait: timedelta
    why: str = ""
    holder: str = ""
    #: when the slot was granted, ms on the limiter's clock (what `learn` is told)
    at: int = 0

    @property
    def granted(self) -> bool:
        return self.wait <= timedelta(0)


class Limiter(Protocol):
    """What the delivery loop asks before and after each request."""

    def acquire(self, dest: DestinationConfig) -> Grant: ...

    def release(self, dest: DestinationConfig, holder: str) -> None: ...

    def learn(self, dest: DestinationConfig, grant: Grant, *, throttled: bool) -> float | None: ...

    def learned(self, dest: DestinationConfig) -> float | None: ...

    def cool_down(self, dest: DestinationConfig, wait: timedelta) -> None: ...

    def cooldown_left(self, dest: DestinationConfig) -> timedelta: ...

    def spend_quota(self, dest: DestinationConfig, now: datetime) -> bool: ...


def _interval_ms(dest: DestinationConfig) -> int:
    """
    The GCRA emission interval: 1/rate, widened by the destination's rate_margin
    (for a learned rate, its start's; limiter.lua spaces by the rate learned so far).
    """
    return max(1, round(1000 * (1 + dest.rate_margin) / dest.initial_rate))


def _lease_ms(dest: DestinationConfig) -> int:
    return int(dest.timeout * 1000) + 5000


def window(dest: DestinationConfig) -> tuple[int, int]:
    """
    The platform's window as (ms, requests): `rate` requests a second, or for a
    rate under 1/s, one request every 1/rate seconds. For a learned rate, the
    widest its window can be (at the floor): the script reads the rest.
    """
    rate = dest.rate_bounds.floor if dest.rate_bounds else dest.initial_rate
    if rate >= 1:
        return 1000, int(rate)
    return round(1000 / rate), 1


#: how long a scope's learned rate outlives its last change (then it starts again)
LEARNED_TTL_MS = 7 * 86_400_000
#: the answers that say "slower": they cut a learned rate
THROTTLE_STATUSES = frozenset({429, 503})


def _learned_args(dest: DestinationConfig) -> list[str | float]:
    """limiter.lua's ARGV[8:]: "auto" and the bounds for a learned rate; nothing read else."""
    bounds = dest.rate_bounds
    if bounds is None:
        return ["", 0, 0, 0, 0]
    return ["auto", dest.rate_margin, bounds.floor, bounds.start, bounds.ceiling]


def quota_day(dest: DestinationConfig, now: datetime) -> str:
    """The quota day `now` falls in: days start at `quota_resets_at` in `quota_zone`."""
    local = now.astimezone(ZoneInfo(dest.quota_zone))
    reset = local.replace(
        hour=dest.quota_resets_at.hour,
        minute=dest.quota_resets_at.minute,
        second=0,
        microsecond=0,
    )
    day = local.date() if local >= reset else (local - timedelta(days=1)).date()
    return day.isoformat()


def next_quota_reset(dest: DestinationConfig, now: datetime) -> datetime:
    """When the destination's daily quota next resets."""
    local = now.astimezone(ZoneInfo(dest.quota_zone))
    reset = local.replace(
        hour=dest.quota_resets_at.hour,
        minute=dest.quota_resets_at.minute,
        second=0,
        microsecond=0,
    )
    if reset <= local:
        reset += timedelta(days=1)
    return reset.astimezone(now.tzinfo)


class RedisLimiter:
    """The limiter shared by every worker process and host, through one Redis."""

    def __init__(self, client: redis.Redis[bytes]) -> None:
        self.redis = client
        scripts = resources.files("worker.delivery")
        self._acquire = client.register_script(scripts.joinpath("limiter.lua").read_text("utf-8"))
        self._release = client.register_script(
            scripts.joinpath("limiter_release.lua").read_text("utf-8")
        )
        self._learn = client.register_script(
            scripts.joinpath("limiter_learn.lua").read_text("utf-8")
        )

    def acquire(self, dest: DestinationConfig) -> Grant:
        holder = uuid.uuid4().hex
        window_ms, window_limit = window(dest)
        wait_ms, why, *granted_at = self._acquire(
            keys=[
                tat_key(dest.limiter_scope),
                cooldown_key(dest.limiter_scope),
                inflight_key(dest.name),
                window_key(dest.limiter_scope),
                learned_key(dest.limiter_scope),
            ],
            args=[
                _interval_ms(dest),
                dest.burst,
                dest.concurrency,
                _lease_ms(dest),
                holder,
                window_ms,
                window_limit,
                *_learned_args(dest),
            ],
        )
        if int(wait_ms) > 0:
            reason = why.decode() if isinstance(why, bytes) else str(why)
            return Grant(timedelta(milliseconds=int(wait_ms)), reason)
        return Grant(timedelta(0), "", holder, int(granted_at[0]))

    def release(self, dest: DestinationConfig, holder: str) -> None:
        """The request got its answer (or failed): free its slot, start its window's end."""
        self._release(
            keys=[inflight_key(dest.name), window_key(dest.limiter_scope)],
            args=[holder, window(dest)[0]],
        )

    def learn(self, dest: DestinationConfig, grant: Grant, *, throttled: bool) -> float | None:
        """
        The request of `grant` got an answer, a 429/503 when `throttled`: move the
        scope's learned rate and return it. A fixed rate learns nothing (None, no I/O).
        """
        bounds = dest.rate_bounds
        if bounds is None:
            return None
        rate = self._learn(
            keys=[learned_key(dest.limiter_scope)],
            args=[
                "1" if throttled else "0",
                grant.at,
                bounds.floor,
                bounds.start,
                bounds.ceiling,
                learned_rate.DECREASE,
                learned_rate.RECOVER,
                learned_rate.PROBE,
                learned_rate.NEAR,
                LEARNED_TTL_MS,
            ],
        )
        return float(rate)

    def learned(self, dest: DestinationConfig) -> float | None:
        """The scope's learned rate now (its start before any answer); None for a fixed rate."""
        bounds = dest.rate_bounds
        if bounds is None:
            return None
        rate = self.redis.hget(learned_key(dest.limiter_scope), "rate")
        return LearnedRate(float(rate) if rate else bounds.start).within(bounds).rate

    def cool_down(self, dest: DestinationConfig, wait: timedelta) -> None:
        """
        Hold every worker off `dest` for `wait`, unless a longer cooldown is already set.

        One transaction (set if absent, else only lengthen), not a read then a write:
        two workers seeing 429s at once must not cut each other's cooldown short.
        """
        ms = max(1, int(wait.total_seconds() * 1000))
        key = cooldown_key(dest.limiter_scope)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(key, "1", px=ms, nx=True)
        pipe.pexpire(key, ms, gt=True)
        pipe.execute()

    def cooldown_left(self, dest: DestinationConfig) -> timedelta:
        ms = int(self.redis.pttl(cooldown_key(dest.limiter_scope)))
        return timedelta(milliseconds=max(0, ms))

    def spend_quota(self, dest: DestinationConfig, now: datetime) -> bool:
        """Count one request against the daily quota; False when the quota is spent."""
        if dest.daily_quota is None:
            return True
        key = quota_key(dest.name, quota_day(dest, now))
        pipe = self.redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, 2 * 86400)
        used, _ = pipe.execute()
        return int(used) <= dest.daily_quota


#: how long a refusal for the in-flight cap or the window asks the caller to wait, at most
POLL_MS = 25
#: how long a day's quota counter outlives its first request (Redis: EXPIRE 2 days)
QUOTA_TTL_MS = 2 * 86_400_000


def _clock_ms() -> int:
    """Milliseconds on this process's monotonic clock (Redis's TIME, in `limiter.lua`)."""
    return time.monotonic_ns() // 1_000_000


def _poll(ms: int) -> int:
    """A short wait for a slot that frees at an unknown moment: 1..POLL_MS ms, as limiter.lua."""
    return max(1, min(POLL_MS, ms))


def _ms(ms: int) -> timedelta:
    return timedelta(milliseconds=ms)


class MemoryLimiter:
    """
    The same contract in one process (the embedded demo): not shared between processes.

    A step-for-step copy of `limiter.lua` and `limiter_release.lua` (the same checks
    in the same order, integer milliseconds, the same waits and reasons), and one test
    suite (tests/integration/test_limiter.py) runs against both. Sorted sets become
    dicts of holder -> score; a key's expiry becomes dropping what it would have dropped.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tat: dict[str, int] = {}
        self._cooldown: dict[str, int] = {}
        self._inflight: dict[str, dict[str, int]] = {}
        self._window: dict[str, dict[str, int]] = {}
        self._quota: dict[tuple[str, str], tuple[int, int]] = {}
        self._learned: dict[str, LearnedRate] = {}

    def acquire(self, dest: DestinationConfig) -> Grant:
        scope, lease = dest.limiter_scope, _lease_ms(dest)
        with self._lock:
            interval, window_ms, window_limit = self._spacing(dest)
            now = _clock_ms()
            cooling = self._cooldown.get(scope, 0) - now
            if cooling > 0:
                return Grant(_ms(cooling), "cooldown")
            flying = {h: end for h, end in self._inflight.get(dest.name, {}).items() if end > now}
            self._inflight[dest.name] = flying
            if len(flying) >= dest.concurrency:
                return Grant(_ms(_poll(min(flying.values()) - now)), "concurrency")
            counted = {
                h: end for h, end in self._window.get(scope, {}).items() if end > now - window_ms
            }
            self._window[scope] = counted
            if len(counted) >= window_limit:
                return Grant(_ms(_poll(min(counted.values()) + window_ms - now)), "window")
            tat = max(self._tat.get(scope, now), now)
            allow_at = tat + interval - dest.burst * interval
            if now < allow_at:
                return Grant(_ms(allow_at - now), "rate")
            self._tat[scope] = tat + interval
            holder = uuid.uuid4().hex
            flying[holder] = now + lease
            counted[holder] = now + lease
            return Grant(timedelta(0), "", holder, now)

    def _spacing(self, dest: DestinationConfig) -> tuple[int, int, int]:
        """(interval ms, window ms, window requests): the fixed rate's, or the learned one's."""
        bounds = dest.rate_bounds
        if bounds is None:
            return _interval_ms(dest), *window(dest)
        return learned_rate.spacing(self._learned_in(dest, bounds).rate, dest.rate_margin)

    def _learned_in(self, dest: DestinationConfig, bounds: RateBounds) -> LearnedRate:
        """The scope's learned rate, within `bounds` (its start before any answer)."""
        state = self._learned.get(dest.limiter_scope) or LearnedRate.start(bounds)
        return state.within(bounds)

    def release(self, dest: DestinationConfig, holder: str) -> None:
        """As limiter_release.lua: out of flight; its window place ends window_ms from now."""
        with self._lock:
            self._inflight.get(dest.name, {}).pop(holder, None)
            counted = self._window.get(dest.limiter_scope, {})
            if holder in counted:  # ZADD XX: only a holder the window still counts
                counted[holder] = _clock_ms()

    def learn(self, dest: DestinationConfig, grant: Grant, *, throttled: bool) -> float | None:
        """As limiter_learn.lua: move the scope's learned rate (None for a fixed rate)."""
        bounds = dest.rate_bounds
        if bounds is None:
            return None
        with self._lock:
            state = self._learned_in(dest, bounds)
            if throttled:
                state = state.throttled(bounds, grant.at, _clock_ms())
            else:
                state = state.answered(bounds, grant.at)
            self._learned[dest.limiter_scope] = state
            return state.rate

    def learned(self, dest: DestinationConfig) -> float | None:
        """The scope's learned rate now; None for a fixed rate."""
        bounds = dest.rate_bounds
        if bounds is None:
            return None
        with self._lock:
            return self._learned_in(dest, bounds).rate

    def cool_down(self, dest: DestinationConfig, wait: timedelta) -> None:
        """Hold `dest`'s scope off for `wait`, unless a longer cooldown is already set."""
        ms = max(1, int(wait.total_seconds() * 1000))
        with self._lock:
            now = _clock_ms()
            if self._cooldown.get(dest.limiter_scope, 0) - now < ms:
                self._cooldown[dest.limiter_scope] = now + ms

    def cooldown_left(self, dest: DestinationConfig) -> timedelta:
        with self._lock:
            return _ms(max(0, self._cooldown.get(dest.limiter_scope, 0) - _clock_ms()))

    def spend_quota(self, dest: DestinationConfig, now: datetime) -> bool:
        """Count one request against the daily quota; False when the quota is spent."""
        if dest.daily_quota is None:
            return True
        key = (dest.name, quota_day(dest, now))
        with self._lock:
            clock = _clock_ms()
            self._quota = {k: v for k, v in self._quota.items() if v[1] > clock}
            used = self._quota.get(key, (0, 0))[0] + 1
            self._quota[key] = (used, clock + QUOTA_TTL_MS)
            return used <= dest.daily_quota


class RedisCache:
    """`KeyValueCache` over Redis: tokens and program settings shared by every worker."""

    def __init__(self, client: redis.Redis[bytes]) -> None:
        self.redis = client

    def get(self, key: str) -> str | None:
        value = self.redis.get(key)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def set(self, key: str, value: str, ttl: timedelta) -> None:
        self.redis.set(key, value, px=max(1, int(ttl.total_seconds() * 1000)))


class MemoryCache:
    """`KeyValueCache` in one process (the demo and pure tests)."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            item = self._data.get(key)
            if item is None or item[1] <= time.monotonic():
                return None
            return item[0]

    def set(self, key: str, value: str, ttl: timedelta) -> None:
        with self._lock:
            self._data[key] = (value, time.monotonic() + ttl.total_seconds())
