"""
Prometheus metrics. Bounded labels only: destination, outcome, state; never a
lead id or a phone.

Under Celery's prefork pool every child process counts into the directory named
by PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode, set it on
every worker); `leadrelay metrics` serves the merged counters, and computes the
backlog gauges from the ledger at each scrape, so the backlog is right even
when no worker runs.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Histogram

DELIVERIES = Counter(
    "leadrelay_deliveries_total",
    "Leads settled after a request, by outcome.",
    ["destination", "outcome"],
)
REQUESTS = Histogram(
    "leadrelay_request_seconds",
    "Time of one request to a platform.",
    ["destination"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
THROTTLED = Counter(
    "leadrelay_throttled_total", "429/503 answers (the destination cooled down).", ["destination"]
)
COOLDOWN = Counter(
    "leadrelay_cooldown_seconds_total", "Seconds of cooldown ordered by platforms.", ["destination"]
)
PAUSES = Counter(
    "leadrelay_pauses_total",
    "Destinations paused by an auth failure or a spent quota.",
    ["destination", "kind"],
)


def observe_request(destination: str, seconds: float) -> None:
    REQUESTS.labels(destination).observe(seconds)


def count_outcomes(destination: str, counts: Mapping[str, int]) -> None:
    for outcome, n in counts.items():
        DELIVERIES.labels(destination, outcome).inc(n)


def count_throttle(destination: str, wait_s: float) -> None:
    THROTTLED.labels(destination).inc()
    COOLDOWN.labels(destination).inc(wait_s)


def count_pause(destination: str, kind: str) -> None:
    PAUSES.labels(destination, kind).inc()
