"""Metrics move with what the loop reports, with bounded labels only."""

from __future__ import annotations

from prometheus_client import REGISTRY

from worker import metrics


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_outcomes_throttles_and_pauses_are_counted_by_destination() -> None:
    before = value("leadrelay_deliveries_total", destination="m-test", outcome="delivered")
    metrics.count_outcomes("m-test", {"delivered": 3})
    metrics.count_throttle("m-test", 2.0)
    metrics.count_pause("m-test", "auth")
    assert (
        value("leadrelay_deliveries_total", destination="m-test", outcome="delivered") == before + 3
    )
    assert value("leadrelay_cooldown_seconds_total", destination="m-test") >= 2.0
    assert value("leadrelay_pauses_total", destination="m-test", kind="auth") >= 1


def test_labels_are_bounded_never_a_lead() -> None:
    for metric in (metrics.DELIVERIES, metrics.REQUESTS, metrics.THROTTLED, metrics.PAUSES):
        assert set(metric._labelnames) <= {"destination", "outcome", "kind"}
