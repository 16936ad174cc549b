"""
Prometheus metrics of the delivery loop, safe under Celery's prefork pool.

Bounded labels only: `destination` (a configured destination's name),
`outcome` and `state` (a lead state), `status` (a class of HTTP answer) and
`kind` (of a pause). Never a lead id, a phone or a platform's message: those
live in the ledger, not in a time series.

==================================  ====================  =====================================
metric                              labels                what it says
==================================  ====================  =====================================
leadrelay_deliveries_total          destination, outcome  leads settled after a request
leadrelay_request_seconds           destination           time of one request (a histogram)
leadrelay_requests_total            destination, status   requests by answer: 2xx, 429, none …
leadrelay_throttled_total           destination           429/503 answers: a shared cooldown
leadrelay_cooldown_seconds_total    destination           seconds of cooldown platforms ordered
leadrelay_pauses_total              destination, kind     pauses: an auth failure, a spent quota
leadrelay_token_refreshes_total     destination           access tokens fetched (Admitad)
leadrelay_backlog                   destination, state    deliveries per state (ledger; gauge)
leadrelay_oldest_due_seconds        destination           the oldest due delivery's wait (gauge)
==================================  ====================  =====================================

Prefork: each pool child is its own process with its own counters. With
`PROMETHEUS_MULTIPROC_DIR` set (before Python starts: prometheus_client picks
its storage at import) every child writes its values to memory-mapped files
in that directory, and the worker's main process serves their sum: call
`start_from_env` from Celery's `worker_init` signal, and it empties the
directory (the last run's files) and serves /metrics on
`LEADRELAY_METRICS_PORT`. The directory must be private to one worker (an
emptyDir per pod, the container's own /tmp in compose). Without the variable,
metrics live in the process (tests, the demo).

The backlog gauges are set from the ledger's counts by whoever reads them
(`set_backlog`); this module takes plain mappings and never speaks SQL.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

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
#: every value a pause's `kind` label takes
PAUSE_KINDS = ("auth", "quota")
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
# "mostrecent": with several processes, the value last set wins (not their sum)
BACKLOG = Gauge(
    "leadrelay_backlog",
    "Deliveries by destination and state, from the ledger.",
    ["destination", "state"],
    multiprocess_mode="mostrecent",
)
OLDEST_DUE = Gauge(
    "leadrelay_oldest_due_seconds",
    "Age of the oldest due delivery (0 when none is due), from the ledger.",
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


def set_backlog(destination: str, states: Mapping[str, int], oldest_due_s: float | None) -> None:
    """
    A destination's backlog from the ledger: {state: deliveries} and the oldest
    due one's age in seconds (None: nothing due). Every state is set, a missing
    one to 0, so a drained state drops to 0 instead of keeping its last value.
    """
    name = _destination(destination)
    for state in STATES:
        BACKLOG.labels(name, state).set(states.get(state, 0))
    OLDEST_DUE.labels(name).set(oldest_due_s or 0.0)


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
