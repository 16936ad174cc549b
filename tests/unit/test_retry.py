"""Retry decisions: pure values from an outcome, a destination, a clock and dice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.delivery.retry import backoff, settle
from worker.leads import Delivery, LeadState
from worker.outcomes import Delivered, Failed, Pending, Rejected, Retry
from worker.platforms.kuper import KuperDestination

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
DEST = KuperDestination(
    name="k",
    platform="kuper",
    base_url="http://x",
    username="u",
    password="p",
    retry_initial=10,
    retry_max=100,
    max_attempts=3,
)


def delivery(attempt: int = 1, created: datetime = NOW) -> Delivery:
    return Delivery(id=1, lead_id="l", payload={}, attempt=attempt, created_at=created)


@pytest.mark.parametrize(
    ("attempt", "low", "high"), [(1, 5, 10), (2, 10, 20), (3, 20, 40), (9, 50, 100)]
)
def test_backoff_doubles_with_equal_jitter_and_a_cap(attempt: int, low: float, high: float) -> None:
    """Waits grow 2× per attempt, never below half the base, never above retry_max."""
    assert backoff(attempt, DEST, lambda: 0.0) == timedelta(seconds=low)
    assert backoff(attempt, DEST, lambda: 1.0) == timedelta(seconds=high)


def test_delivered_is_final_and_keeps_the_platform_id() -> None:
    s = settle(delivery(), Delivered("uuid-1", "ok"), DEST, NOW, lambda: 0.5)
    assert (s.state, s.external_id, s.due_at, s.attempts) == (
        LeadState.DELIVERED,
        "uuid-1",
        None,
        1,
    )


def test_pending_is_due_for_a_status_look_at_once() -> None:
    s = settle(delivery(), Pending("77"), DEST, NOW, lambda: 0.5)
    assert (s.state, s.due_at) == (LeadState.AWAITING_STATUS, NOW)


def test_rejected_keeps_the_platforms_words() -> None:
    s = settle(delivery(), Rejected("дубль"), DEST, NOW, lambda: 0.5)
    assert (s.state, s.detail) == (LeadState.REJECTED, "дубль")


def test_failed_retries_with_backoff_until_max_attempts_then_dead() -> None:
    first = settle(delivery(1), Failed("HTTP 500"), DEST, NOW, lambda: 0.0)
    assert (first.state, first.due_at) == (LeadState.RETRY_WAIT, NOW + timedelta(seconds=5))
    last = settle(delivery(3), Failed("HTTP 500"), DEST, NOW, lambda: 0.0)
    assert last.state == LeadState.DEAD
    assert "HTTP 500" in last.detail and "3 attempts" in last.detail


def test_a_lost_answer_leaves_the_lead_in_doubt_until_an_answer_settles_it() -> None:
    doubt = settle(delivery(), Failed("answer lost", in_doubt=True), DEST, NOW, lambda: 0.0)
    assert doubt.in_doubt
    still = settle(
        Delivery(id=1, lead_id="l", payload={}, attempt=2, created_at=NOW, in_doubt=True),
        Failed("HTTP 500"),
        DEST,
        NOW,
        lambda: 0.0,
    )
    assert still.in_doubt
    assert not settle(delivery(), Failed("HTTP 500"), DEST, NOW, lambda: 0.0).in_doubt


def test_retry_with_horizon_ignores_max_attempts_and_ends_as_told() -> None:
    """Calltouch's 'not in Calltouch yet': slow retries until the horizon, then unmatched."""
    outcome = Retry(
        "not found",
        after=timedelta(minutes=30),
        horizon=timedelta(hours=24),
        give_up_as=LeadState.UNMATCHED,
    )
    young = settle(delivery(10, NOW - timedelta(hours=1)), outcome, DEST, NOW, lambda: 0.0)
    assert (young.state, young.due_at) == (LeadState.RETRY_WAIT, NOW + timedelta(minutes=30))
    old = settle(delivery(2, NOW - timedelta(hours=25)), outcome, DEST, NOW, lambda: 0.0)
    assert old.state == LeadState.UNMATCHED


def test_a_lost_answer_is_looked_up_no_sooner_than_one_timeout_later() -> None:
    """The request may still be queued at the platform; an early look would miss it."""
    dest = DEST.model_copy(update={"timeout": 30.0})
    lost = settle(delivery(), Failed("answer lost", in_doubt=True), dest, NOW, lambda: 0.0)
    assert lost.due_at == NOW + timedelta(seconds=30)
    plain = settle(delivery(), Failed("HTTP 500"), dest, NOW, lambda: 0.0)
    assert plain.due_at is not None and plain.due_at < NOW + timedelta(seconds=30)
