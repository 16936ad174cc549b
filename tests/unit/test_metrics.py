"""
Metrics move with what the delivery loop reports, with bounded labels only,
and add up across processes the way a prefork pool runs them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY, Metric
from prometheus_client.parser import text_string_to_metric_families

from sandbox import free_port
from worker.errors import ConfigError
from worker.ops import metrics

BOUNDED_LABELS = {"destination", "outcome", "state", "status", "kind"}
ALL = (
    metrics.DELIVERIES,
    metrics.REQUEST_SECONDS,
    metrics.REQUESTS,
    metrics.THROTTLED,
    metrics.COOLDOWN,
    metrics.PAUSES,
    metrics.TOKEN_REFRESHES,
    metrics.LIMITER_WAIT,
    metrics.RATE_LIMIT,
)


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def label_values(name: str, label: str) -> set[str]:
    families: list[Metric] = list(REGISTRY.collect())
    return {
        s.labels[label]
        for family in families
        for s in family.samples
        if s.name.startswith(name) and label in s.labels
    }


def test_outcomes_are_counted_by_destination_and_state() -> None:
    before = value("leadrelay_deliveries_total", destination="m-out", outcome="delivered")
    metrics.count_outcomes("m-out", {"delivered": 3, "retry_wait": 1, "dead": 0})
    assert value("leadrelay_deliveries_total", destination="m-out", outcome="delivered") == (
        before + 3
    )
    assert value("leadrelay_deliveries_total", destination="m-out", outcome="retry_wait") >= 1


def test_a_request_is_timed_and_classed_by_its_answer() -> None:
    count = "leadrelay_request_seconds_count"
    before = value(count, destination="m-req")
    metrics.observe_request("m-req", 0.2, 200)
    metrics.observe_request("m-req", 0.1, 429)
    metrics.observe_request("m-req", 10.0, None)
    assert value(count, destination="m-req") == before + 3
    assert value("leadrelay_request_seconds_sum", destination="m-req") >= 10.3
    for status in ("2xx", "429", "none"):
        assert value("leadrelay_requests_total", destination="m-req", status=status) >= 1


def test_throttles_cooldowns_pauses_and_token_refreshes_move() -> None:
    metrics.count_throttle("m-thr", 2.5)
    metrics.count_throttle("m-thr", 0.5)
    metrics.count_pause("m-thr", "auth")
    metrics.count_token_refresh("m-thr")
    assert value("leadrelay_throttled_total", destination="m-thr") == 2
    assert value("leadrelay_cooldown_seconds_total", destination="m-thr") == 3.0
    assert value("leadrelay_pauses_total", destination="m-thr", kind="auth") == 1
    assert value("leadrelay_token_refreshes_total", destination="m-thr") == 1


def test_labels_are_bounded_never_a_lead_or_a_phone() -> None:
    for metric in ALL:
        assert set(metric._labelnames) <= BOUNDED_LABELS, metric
    metrics.count_outcomes("m-bound", {"lead 12345 +79161234567": 1, "delivered": 1})
    metrics.count_pause("m-bound", "because the phone +7 916 123-45-67 was wrong")
    metrics.observe_request("+79161234567", 0.1, 999)
    assert label_values("leadrelay_deliveries", "outcome") <= {*metrics.STATES, "other"}
    assert label_values("leadrelay_pauses", "kind") <= {*metrics.PAUSE_KINDS, "other"}
    assert "+79161234567" not in label_values("leadrelay_request_seconds", "destination")
    assert label_values("leadrelay_requests", "status") <= {
        "1xx",
        "2xx",
        "3xx",
        "4xx",
        "5xx",
        "429",
        "503",
        "none",
        "other",
    }


@pytest.mark.parametrize(
    ("status", "label"),
    [(200, "2xx"), (204, "2xx"), (400, "4xx"), (429, "429"), (503, "503"), (502, "5xx")],
)
def test_status_class(status: int, label: str) -> None:
    assert metrics.status_class(status) == label


def test_the_port_comes_from_the_environment_or_stops_the_worker() -> None:
    assert metrics.port_from_env({}) is None
    assert metrics.port_from_env({metrics.PORT_VAR: " "}) is None
    assert metrics.port_from_env({metrics.PORT_VAR: "9808"}) == 9808
    for wrong in ("http", "0", "70000", "-1"):
        with pytest.raises(ConfigError, match=metrics.PORT_VAR):
            metrics.port_from_env({metrics.PORT_VAR: wrong})


CHILD = """
import sys
from worker.ops import metrics
metrics.count_outcomes("m-fork", {"delivered": 2})
metrics.observe_request("m-fork", 0.3, 200)
metrics.set_rate_limit("m-fork", float(sys.argv[1]))
"""

SERVER = """
import sys, time
from worker.ops import metrics
server = metrics.start_from_env()
print("serving", flush=True)
sys.stdin.read()
server.shutdown()
"""


@pytest.mark.timeout(60)
def test_prefork_children_add_up_in_the_multiprocess_directory(tmp_path: Path) -> None:
    """
    Three processes count, as three pool children would; the worker's main
    process (a fourth) starts with the previous run's files in the directory,
    clears them, and its /metrics shows the sum of what the children count
    afterwards, and the backlog the most recent one set.
    """
    directory = tmp_path / "prom"
    port = free_port()
    env = {
        **os.environ,
        metrics.MULTIPROC_VAR: str(directory),
        metrics.PORT_VAR: str(port),
    }

    def child(queued: int) -> None:
        subprocess.run([sys.executable, "-c", CHILD, str(queued)], env=env, check=True, timeout=30)

    directory.mkdir()
    child(99)  # the previous run: cleared when the main process starts
    assert list(directory.glob("*.db"))
    main = subprocess.Popen(
        [sys.executable, "-c", SERVER],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert main.stdout is not None
        assert main.stdout.readline().strip() == "serving"
        assert not list(directory.glob("*.db"))
        for queued in (1, 2, 3):
            child(queued)
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        assert main.stdin is not None
        main.stdin.close()
        main.wait(10)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    dest = ("destination", "m-fork")
    assert samples[("leadrelay_deliveries_total", (dest, ("outcome", "delivered")))] == 6
    assert samples[("leadrelay_requests_total", (dest, ("status", "2xx")))] == 3
    assert samples[("leadrelay_request_seconds_count", (dest,))] == 3
    assert samples[("leadrelay_rate_limit", (dest,))] == 3  # a gauge: the last child's, not a sum
