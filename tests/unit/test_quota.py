"""Daily quota days: they start at the configured local time in the configured zone."""

from __future__ import annotations

from datetime import UTC, datetime, time

from worker.delivery.limiter import next_quota_reset, quota_day
from worker.platforms.kuper import KuperDestination


def dest(resets: time) -> KuperDestination:
    return KuperDestination(
        name="k",
        platform="kuper",
        base_url="http://x",
        username="u",
        password="p",
        daily_quota=10,
        quota_resets_at=resets,
        quota_zone="Europe/Moscow",
    )


def test_a_moscow_day_starts_at_midnight_moscow_time() -> None:
    d = dest(time(0, 0))
    assert quota_day(d, datetime(2026, 11, 22, 20, 59, tzinfo=UTC)) == "2026-11-22"
    assert quota_day(d, datetime(2026, 11, 22, 21, 0, tzinfo=UTC)) == "2026-11-23"  # 00:00 MSK
    assert next_quota_reset(d, datetime(2026, 11, 22, 12, 0, tzinfo=UTC)) == datetime(
        2026, 11, 22, 21, 0, tzinfo=UTC
    )


def test_a_reset_time_other_than_midnight() -> None:
    d = dest(time(3, 30))
    assert quota_day(d, datetime(2026, 11, 22, 0, 29, tzinfo=UTC)) == "2026-11-21"  # 03:29 MSK
    assert quota_day(d, datetime(2026, 11, 22, 0, 30, tzinfo=UTC)) == "2026-11-22"
