"""
A learned rate: for a platform that publishes no limit (`rate = "auto"`).

Kuper and SalesMan say nothing of how fast they may be called, so a fixed
`rate` is a guess: too low wastes the platform's capacity, too high collects
429s (and each one cools every worker down). A learned rate is found from the
platform's own answers and shared by every worker through the limiter's
Redis: one hash per quota scope, read in the same atomic step as the GCRA
state (`limiter.lua`) and moved atomically by each answer
(`limiter_learn.lua`), so no worker learns alone. It stays between the
destination's `rate_floor` and `rate_ceiling`. The steps, written once here
(`MemoryLimiter` runs them) and once in the script, one test suite for both:

* a request answered without a 429/503 adds `RECOVER / rate` requests/s
  (RECOVER per second while the rate is in use), and only `PROBE / rate`
  once the rate is within `NEAR` of the rate the last throttle came at;
* a 429 or 503 multiplies the rate by `DECREASE` and remembers the rate it
  came at;
* an answer to a request granted before the last decrease (or in its
  millisecond) changes nothing: it says how the old, faster rate fared, and
  the decrease already answered that. However many workers see 429s from
  one burst, the rate falls once.

Why this converges. It is AIMD (additive increase, multiplicative decrease,
as TCP's congestion control): below the platform's limit the rate only
rises, by a bounded step a request; above it a throttle comes within a
second or so and cuts the rate by a fixed share, so the rate is held in a
band below the limit, and after the limit moves, it is found again: down
in a few cuts (×0.7 each), up at RECOVER per second. The two slopes are
CUBIC's lesson in its simplest form: each probe past the limit costs a 429
and a cooldown of the whole scope (Retry-After, usually a second in which
nothing is sent), so the climb is fast while the rate is well under the last
throttled rate, and slow near it, where probes would cost the most. A rate
that climbs past the remembered one without a throttle forgets it (the
platform's limit went up) and climbs fast again.

The limiter's own window (`floor(rate)` requests in any second, counted
until a second after each answer) keeps a learned rate of L + 0.9 from
putting more than L requests into any of the platform's seconds; the
throttle that ends a probe comes at L + 1.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from worker.config import RateBounds

#: the share of the rate kept after a 429/503 (TCP CUBIC's beta)
DECREASE = 0.7
#: requests/s gained per second of answered requests, well under the last throttled rate
RECOVER = 1.0
#: requests/s gained per second near the last throttled rate: the careful probe
PROBE = 0.02
#: "near": from this share of the last throttled rate upwards
NEAR = 0.9


@dataclass(frozen=True, slots=True)
class LearnedRate:
    """What a quota scope has learned; the limiter stores it (Redis: one hash)."""

    #: requests/s
    rate: float
    #: the rate the last throttle came at; 0 when none is remembered
    throttled_at: float = 0.0
    #: when the last decrease was made, ms on the limiter's clock; -1: never
    cut_at: int = -1

    @classmethod
    def start(cls, bounds: RateBounds) -> LearnedRate:
        return cls(bounds.start)

    def within(self, bounds: RateBounds) -> LearnedRate:
        """The same, held within `bounds` (the destination's table may have changed)."""
        return replace(self, rate=min(bounds.ceiling, max(bounds.floor, self.rate)))

    def answered(self, bounds: RateBounds, granted_at: int) -> LearnedRate:
        """A request granted at `granted_at` got an answer that was not a throttle."""
        if granted_at <= self.cut_at:
            return self
        remembered = self.throttled_at if self.rate <= self.throttled_at else 0.0
        near = remembered > 0 and self.rate >= NEAR * remembered
        step = (PROBE if near else RECOVER) / self.rate
        return LearnedRate(min(bounds.ceiling, self.rate + step), remembered, self.cut_at)

    def throttled(self, bounds: RateBounds, granted_at: int, now: int) -> LearnedRate:
        """A request granted at `granted_at` was answered 429/503 at `now`."""
        if granted_at <= self.cut_at:
            return self
        return LearnedRate(max(bounds.floor, self.rate * DECREASE), self.rate, now)


def spacing(rate: float, margin: float) -> tuple[int, int, int]:
    """
    (GCRA interval ms, window ms, window requests) for `rate`, as the limiter
    spaces a fixed one: 1/rate widened by `margin`; `rate` requests a second, or
    one every 1/rate seconds under 1/s (a learned rate: whole requests a second).
    """
    interval = max(1, _round(1000 * (1 + margin) / rate))
    if rate >= 1:
        return interval, 1000, int(rate)
    return interval, _round(1000 / rate), 1


def _round(value: float) -> int:
    """Half up, as `limiter.lua` rounds (Python's round() rounds half to even)."""
    return int(value + 0.5)
