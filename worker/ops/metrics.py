"""
Prometheus metrics of the delivery loop, safe under Celery's prefork pool.

Bounded labels only: `destination` (a configured destination's name),
`platform` (a key of the platform registry), `worker_group` (a configured
group), `outcome` and `state` (a lead state), `status` (a class of HTTP
answer) and `kind` (of a pause). Never a lead id, a phone or a platform's
message: those live in the ledger, not in a time series.

Two kinds of process export them. Each worker serves what it counts and
what it is set to (`W` below); the single `leadrelay metrics` service
reads the ledger and the destinations file at each scrape (`L`).

================================  ======================  ==  ======================================
metric                            labels                  by  what it says
================================  ======================  ==  ======================================
leadrelay_deliveries_total        destination, outcome    W   leads settled after a request
leadrelay_request_seconds         destination             W   time of one request (a histogram)
leadrelay_requests_total          destination, status     W   requests by answer: 2xx, 429, none …
leadrelay_throttled_total         destination             W   429/503 answers: a shared cooldown
leadrelay_cooldown_seconds_total  destination             W   seconds of cooldown platforms ordered
leadrelay_pauses_total            destination, kind       W   pauses: an auth failure, a spent quota
leadrelay_token_refreshes_total   destination             W   access tokens fetched (Admitad)
leadrelay_limiter_wait_seconds    destination             W   time slept for a slot (a histogram)
leadrelay_rate_limit              destination             W   requests/s it holds itself to
leadrelay_destination_info        destination, platform,  L   1 per configured destination
                                  worker_group
leadrelay_backlog                 destination, state      L   deliveries per state (all of them)
leadrelay_oldest_due_seconds      destination             L   the oldest due delivery's wait
leadrelay_paused                  destination, kind       L   1 while a pause of that kind holds
leadrelay_events_unsent           destination             L   settlement events not sent upstream
================================  ======================  ==  ======================================

Dead leads are `leadrelay_backlog{state="dead"}`. A worker sets
`leadrelay_rate_limit` for each destination it serves when it starts, so a
configured destination no worker exports it for is one nobody drains
(deploy/monitoring/alerts.yaml joins the two).

Prefork: each pool child is its own process with its own counters. With
`PROMETHEUS_MULTIPROC_DIR` set (before Python starts: prometheus_client picks
its storage at import) every child writes its values to memory-mapped files
in that directory, and the worker's main process serves their sum: call
`start_from_env` from Celery's `worker_init` signal, and it empties the
directory (the last run's files) and serves /metrics on
`LEADRELAY_METRICS_PORT`. The directory must be private to one worker (an
emptyDir per pod, the container's own /tmp in compose). Without the variable,
metrics live in the process (tests, the demo).

The ledger's gauges are built at each scrape from what the caller read
(`ledger_families`, a `LedgerReading` per destination), so a destination
that drains or leaves the file leaves no stale value behind. This module
takes plain values and never speaks SQL.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from worker.config import DestinationConfig
from worker.errors import ConfigError
from worker.leads import LeadState

#: the port the worker's main process serves /metrics on; unset: not served
PORT_VAR = "LEADRELAY_METRICS_PORT"
#: prometheus_client's own: where prefork children write their values
MULTIPROC_VAR = "PROMETHEUS_MULTIPROC_DIR"
#: the environment variables this module reads, for the deployment files' checks
ENVIRONMENT = (PORT_VAR, MULTIPROC_VAR)

#: every value a `state` or `outcome` label takes; anything else is counted as "other"
STATES = tuple(str(state) for state in LeadState)
#: every value a pause's `kind` label takes: the loop pauses for auth and quota, ops by hand
PAUSE_KINDS = ("auth", "quota", "manual")
#: the label of a request that got no answer (connection refused, timeout)
NO_ANSWER = "none"
OTHER = "other"

_DESTINATION = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # as worker.config.DestinationConfig.name

DELIVERIES = Counter(
    "leadrelay_deliveries_total",
    "Leads settled after a request, by the state they reached.",
    ["destination", "outcome"],
)
REQUEST_SECONDS = Histogram(
    "leadrelay_request_seconds",
    "Time of one request to a platform, answer read.",
    ["destination"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
REQUESTS = Counter(
    "leadrelay_requests_total",
    "Requests to a platform by class of answer (2xx, 4xx, 429, 503, none).",
    ["destination", "status"],
)
THROTTLED = Counter(
    "leadrelay_throttled_total",
    "429/503 answers: the destination cooled down for every worker.",
    ["destination"],
)
COOLDOWN = Counter(
    "leadrelay_cooldown_seconds_total",
    "Seconds of cooldown ordered by platforms (Retry-After or our backoff).",
    ["destination"],
)
PAUSES = Counter(
    "leadrelay_pauses_total",
    "Destinations paused by an auth failure or a spent daily quota.",
    ["destination", "kind"],
)
TOKEN_REFRESHES = Counter(
    "leadrelay_token_refreshes_total",
    "Access tokens fetched from a platform (Admitad's OAuth2 client credentials).",
    ["destination"],
)
LIMITER_WAIT = Histogram(
    "leadrelay_limiter_wait_seconds",
    "Time one call slept for a limiter slot before it went, or gave up on a longer wait.",
    ["destination"],
    # a slot at once is a few ms of Redis; the loop sleeps at most max_inline_wait (2 s)
    buckets=(0.005, 0.025, 0.1, 0.25, 0.5, 1, 2, 5),
)
# "mostrecent": with several processes, the value last set wins (not their sum)
RATE_LIMIT = Gauge(
    "leadrelay_rate_limit",
    "Requests per second this worker holds a destination to (configured or learned).",
    ["destination"],
    multiprocess_mode="mostrecent",
)


def observe_request(destination: str, seconds: float, status: int | None = None) -> None:
    """One request to a platform: its time and the class of its answer (None: no answer)."""
    name = _destination(destination)
    REQUEST_SECONDS.labels(name).observe(max(0.0, seconds))
    REQUESTS.labels(name, status_class(status)).inc()


def count_outcomes(destination: str, counts: Mapping[str, int]) -> None:
    """Leads settled by one request, as {state: how many}."""
    name = _destination(destination)
    for outcome, n in counts.items():
        if n > 0:
            DELIVERIES.labels(name, _bounded(str(outcome), STATES)).inc(n)


def count_throttle(destination: str, wait_s: float) -> None:
    """A 429 or 503: the destination cools down for `wait_s` seconds."""
    name = _destination(destination)
    THROTTLED.labels(name).inc()
    COOLDOWN.labels(name).inc(max(0.0, wait_s))


def count_pause(destination: str, kind: str) -> None:
    """A destination paused: `auth` (the platform refused our credentials) or `quota`."""
    PAUSES.labels(_destination(destination), _bounded(kind, PAUSE_KINDS)).inc()


def count_token_refresh(destination: str) -> None:
    """An access token fetched for a destination (a burst of these means tokens are refused)."""
    TOKEN_REFRESHES.labels(_destination(destination)).inc()


def observe_limiter_wait(destination: str, seconds: float) -> None:
    """One call's time asleep for a limiter slot (0 when a slot was free at once)."""
    LIMITER_WAIT.labels(_destination(destination)).observe(max(0.0, seconds))


def set_rate_limit(destination: str, per_second: float) -> None:
    """The requests/s a destination is held to: its configured `rate`, or a learned one."""
    RATE_LIMIT.labels(_destination(destination)).set(per_second)


@dataclass(frozen=True, slots=True)
class LedgerReading:
    """What the ledger says of one destination at a scrape."""

    #: deliveries by state; a state not named has none
    states: Mapping[str, int] = field(default_factory=dict)
    #: the oldest due delivery's wait in seconds; None: nothing is due
    oldest_due_s: float | None = None
    #: the kind of the pause in force (auth, quota, manual); None: not paused
    paused: str | None = None
    #: settlement events the upstream app has not been sent yet
    events_unsent: int = 0


def ledger_families(
    configured: Iterable[DestinationConfig], readings: Mapping[str, LedgerReading]
) -> list[Metric]:
    """
    The ledger's gauges for one scrape: every configured destination and every
    one the ledger still holds something of. Each gets every state and
    every pause kind, a missing one as 0, so a drained state or a lifted pause
    reads 0 rather than vanishing; only a configured one gets an info series.
    """
    info = GaugeMetricFamily(
        "leadrelay_destination_info",
        "A configured destination: its platform and the worker group that drains it.",
        labels=["destination", "platform", "worker_group"],
    )
    backlog = GaugeMetricFamily(
        "leadrelay_backlog",
        "Deliveries by destination and state, from the ledger.",
        labels=["destination", "state"],
    )
    oldest = GaugeMetricFamily(
        "leadrelay_oldest_due_seconds",
        "Age of the oldest due delivery (0 when none is due), from the ledger.",
        labels=["destination"],
    )
    paused = GaugeMetricFamily(
        "leadrelay_paused",
        "1 while the destination is paused by a pause of this kind, from the ledger.",
        labels=["destination", "kind"],
    )
    unsent = GaugeMetricFamily(
        "leadrelay_events_unsent",
        "Settlement events not yet sent to the upstream app's task, from the ledger.",
        labels=["destination"],
    )
    by_name = {_destination(name): reading for name, reading in readings.items()}
    for dest in configured:
        name = _destination(dest.name)
        by_name.setdefault(name, LedgerReading())
        info.add_metric([name, dest.platform, dest.worker_group], 1)
    for name, reading in sorted(by_name.items()):
        for state in STATES:
            backlog.add_metric([name, state], reading.states.get(state, 0))
        oldest.add_metric([name], reading.oldest_due_s or 0.0)
        kind = _bounded(reading.paused, PAUSE_KINDS) if reading.paused else None
        for each in PAUSE_KINDS if kind != OTHER else (*PAUSE_KINDS, OTHER):
            paused.add_metric([name, each], int(kind == each))
        unsent.add_metric([name], reading.events_unsent)
    return [info, backlog, oldest, paused, unsent]


def status_class(status: int | None) -> str:
    """A bounded label for an HTTP status: "429" and "503" as themselves, else "2xx" … "5xx"."""
    if status is None:
        return NO_ANSWER
    if status in (429, 503):
        return str(status)
    if 100 <= status < 600:
        return f"{status // 100}xx"
    return OTHER


def registry(environ: Mapping[str, str] = os.environ) -> CollectorRegistry:
    """
    What /metrics shows: the sum of every process's files in multiprocess
    mode, else this process's own registry.
    """
    path = environ.get(MULTIPROC_VAR)
    if not path:
        return REGISTRY
    reg = CollectorRegistry()
    MultiProcessCollector(reg, path=path)  # type: ignore[no-untyped-call]
    return reg


def prepare_multiproc_dir(environ: Mapping[str, str] = os.environ) -> Path | None:
    """
    Create the multiprocess directory and remove a previous run's files, as
    prometheus_client requires between runs. Call in the worker's main
    process before the pool starts; None when multiprocess mode is off.
    """
    path = environ.get(MULTIPROC_VAR)
    if not path:
        return None
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    return directory


def serve(
    port: int,
    addr: str = "0.0.0.0",  # noqa: S104 - Prometheus scrapes the pod from outside
    environ: Mapping[str, str] = os.environ,
) -> tuple[WSGIServer, Thread]:
    """Serve /metrics on `addr:port` from a daemon thread; returns the server to shut it down."""
    server, thread = _start_http_server(port, addr=addr, registry=registry(environ))
    return server, thread


def port_from_env(environ: Mapping[str, str] = os.environ) -> int | None:
    """`LEADRELAY_METRICS_PORT` as a port, None when unset or empty; ConfigError when wrong."""
    raw = environ.get(PORT_VAR, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(PORT_VAR, f"must be a TCP port (1-65535), not {raw!r}")
    return int(raw)


def start_from_env(environ: Mapping[str, str] = os.environ) -> WSGIServer | None:
    """
    The worker's main process at start (Celery's `worker_init`): empty the
    multiprocess directory, then serve /metrics when a port is set.
    """
    prepare_multiproc_dir(environ)
    port = port_from_env(environ)
    if port is None:
        return None
    server, _ = serve(port, environ=environ)
    return server


def _destination(name: str) -> str:
    """A destination's name as a label; a name no destination could have becomes "other"."""
    return name if _DESTINATION.match(name) else OTHER


def _bounded(value: str, allowed: tuple[str, ...]) -> str:
    return value if value in allowed else OTHER
