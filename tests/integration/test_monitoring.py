"""
The monitoring files, checked with the tool Prometheus itself ships (promtool,
Debian's `prometheus` package; `.ci/run` installs it): the alerting rules load,
their unit tests pass, every alert has a case where it fires and one where it
stays quiet, every dashboard query is valid PromQL, and every series the rules
and the dashboard name is one worker/ops/metrics.py exports, with labels and
label values it can take. Beside them: the gauges the ledger service builds,
and the limiter's wait and each request's answer counted by the exchange.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from producers.client import Producer
from producers.metrics_server import registry
from tests.factories import kuper_lead, kuper_table
from worker import ledger
from worker.delivery.context import WorkerContext
from worker.delivery.exchange import Turn, call
from worker.ops import metrics
from worker.settings import parse_destinations

MONITORING = Path(__file__).parents[2] / "deploy" / "monitoring"
ALERTS = MONITORING / "alerts.yaml"
ALERT_TESTS = MONITORING / "alerts.test.yaml"
DASHBOARD = MONITORING / "dashboard.json"

#: what Grafana puts in place of each variable; every query must still be PromQL after it
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$destination": "kuper-main|calltouch-main",
    "$worker_group": ".*",
}
SERIES = re.compile(r"\b(leadrelay_[a-z_]+)\s*(\{[^}]*\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
SEVERITIES = {"critical", "warning", "info"}


@pytest.fixture(scope="module")
def promtool() -> str:
    """Prometheus's own checker; missing is a failure, never a skip (CI installs it)."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: apt-get install prometheus (Debian's package)")
    return path


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), input=stdin, capture_output=True, text=True, timeout=120, check=False
    )


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_queries() -> dict[str, str]:
    """Every PromQL query of the dashboard by where it is: panel targets and variables."""
    queries = {
        f"panel {panel['id']} ({panel['title']}) {target['refId']}": target["expr"]
        for panel in panels()
        for target in panel["targets"]
    }
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["definition"])
            assert found, variable["definition"]
            queries[f"variable {variable['name']}"] = found.group(1)
    return queries


def grafana_free(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable no test gives a value: {expr}"
    return expr


# ---------------------------------------------------------------- promtool


def test_the_alerting_rules_load(promtool: str) -> None:
    checked = run(promtool, "check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_alerts_unit_tests_pass(promtool: str) -> None:
    tested = run(promtool, "test", "rules", str(ALERT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_dashboard_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    """Each query, variables filled as Grafana fills them, loads as a recording rule."""
    queries = dashboard_queries()
    rules = [
        {"record": f"dashboard:query_{n}", "expr": grafana_free(expr)}
        for n, expr in enumerate(queries.values())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), "utf-8")
    checked = run(promtool, "check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(rules)} rules found" in checked.stdout


# ---------------------------------------------------------------- the alerts themselves


def test_every_alert_fires_in_one_case_and_stays_quiet_in_another() -> None:
    cases = [
        case
        for test in yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))["tests"]
        for case in test["alert_rule_test"]
    ]
    for rule in alert_rules():
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']} never fires in a test"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']} is never seen quiet"


def test_every_alert_has_a_severity_a_summary_and_what_to_do() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    for rule in alert_rules():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert re.search(r"`leadrelay \w+", rule["annotations"]["description"]), (
            f"{rule['alert']}: the description names no leadrelay command to run"
        )


# ---------------------------------------------------------------- metric names


def exported() -> dict[str, set[str]]:
    """Every series name worker/ops/metrics.py exports, with the labels it carries."""
    out: dict[str, set[str]] = {}
    for collector in vars(metrics).values():
        if not isinstance(collector, MetricWrapperBase):
            continue
        name, labels = collector._name, set(collector._labelnames)
        suffixes = {
            "counter": {"_total": labels},
            "gauge": {"": labels},
            "histogram": {"_bucket": labels | {"le"}, "_sum": labels, "_count": labels},
        }[str(collector._type)]
        for suffix, names in suffixes.items():
            out[name + suffix] = names
    configured = parse_destinations({"m": kuper_table("http://x")}).values()
    for family in metrics.ledger_families(configured, {}):
        out[family.name] = set(family.samples[0].labels)
    return out


def label_values() -> dict[str, set[str]]:
    """The values a bounded label takes (destination and worker group are configured names)."""
    statuses = {metrics.status_class(s) for s in (None, *range(100, 600))}
    states = {*metrics.STATES, metrics.OTHER}
    return {
        "state": states,
        "outcome": states,
        "status": statuses,
        "kind": {*metrics.PAUSE_KINDS, metrics.OTHER},
    }


def named_series(expr: str) -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    for name, selector in SERIES.findall(expr):
        yield name, MATCHER.findall(selector)


def test_every_series_the_rules_and_the_dashboard_name_is_exported() -> None:
    """
    A query on a name nobody exports is always empty: an alert that can never
    fire, a panel that never draws. Labels and their values are checked too.
    """
    series, values = exported(), label_values()
    exprs = {f"alert {r['alert']}": r["expr"] for r in alert_rules()} | dashboard_queries()
    used: set[str] = set()
    for where, expr in exprs.items():
        found = list(named_series(expr))
        assert found, f"{where} names no leadrelay series"
        for name, matchers in found:
            assert name in series, f"{where}: {name} is not in worker/ops/metrics.py"
            used.add(name)
            for label, _, value in matchers:
                assert label in series[name], f"{where}: {name} has no label {label}"
                if label in values and "$" not in value:
                    assert set(value.split("|")) <= values[label], f"{where}: {label}={value}"
    dashboard_names = {n for e in dashboard_queries().values() for n, _ in named_series(e)}
    for wanted in (
        "leadrelay_backlog",
        "leadrelay_oldest_due_seconds",
        "leadrelay_deliveries_total",
        "leadrelay_requests_total",
        "leadrelay_paused",
        "leadrelay_rate_limit",
        "leadrelay_limiter_wait_seconds_bucket",
        "leadrelay_request_seconds_bucket",
        "leadrelay_events_unsent",
    ):
        assert wanted in dashboard_names, f"the dashboard has no panel on {wanted}"


def test_the_dashboard_is_one_grafana_can_import() -> None:
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"destination", "worker_group"} <= variables.keys()
    assert "$worker_group" in variables["destination"]["definition"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert 'destination=~"$destination"' in target["expr"], panel["title"]


# ---------------------------------------------------------------- the ledger's gauges


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_ledger_gauges_give_every_destination_every_state_and_pause_kind() -> None:
    configured = parse_destinations(
        {"m-a": kuper_table("http://x"), "m-b": kuper_table("http://x", worker_group="slow")}
    ).values()
    readings = {
        "m-a": metrics.LedgerReading(
            states={"queued": 4}, oldest_due_s=12.5, paused="quota", events_unsent=3
        ),
        "m-gone": metrics.LedgerReading(states={"dead": 2}, paused="something new"),
    }
    families = {f.name: f for f in metrics.ledger_families(configured, readings)}
    info = {tuple(sorted(s.labels.items())) for s in families["leadrelay_destination_info"].samples}
    assert info == {
        (("destination", "m-a"), ("platform", "kuper"), ("worker_group", "default")),
        (("destination", "m-b"), ("platform", "kuper"), ("worker_group", "slow")),
    }
    got = {
        (f.name, tuple(sorted(s.labels.values()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert got[("leadrelay_backlog", ("m-a", "queued"))] == 4
    assert got[("leadrelay_backlog", ("m-b", "queued"))] == 0
    assert got[("leadrelay_backlog", ("dead", "m-gone"))] == 2
    assert {s.labels["state"] for s in families["leadrelay_backlog"].samples} == set(metrics.STATES)
    assert got[("leadrelay_oldest_due_seconds", ("m-a",))] == 12.5
    assert got[("leadrelay_oldest_due_seconds", ("m-b",))] == 0
    assert got[("leadrelay_paused", ("m-a", "quota"))] == 1
    assert got[("leadrelay_paused", ("auth", "m-a"))] == 0
    assert got[("leadrelay_paused", ("m-b", "manual"))] == 0
    assert got[("leadrelay_paused", ("m-gone", "other"))] == 1
    assert got[("leadrelay_events_unsent", ("m-a",))] == 3
    assert got[("leadrelay_events_unsent", ("m-b",))] == 0


def test_labels_stay_bounded() -> None:
    """The module's rule: a label is one of a few names, never a lead's or a person's data."""
    allowed = {"destination", "platform", "worker_group", "outcome", "state", "status", "kind"}
    for name, labels in exported().items():
        assert labels - {"le"} <= allowed, name


def test_the_metrics_service_reads_backlog_pauses_and_outbox_from_the_ledger(
    make_ctx: Callable[..., WorkerContext],
) -> None:
    ctx = make_ctx(
        {"m-kuper": kuper_table("http://127.0.0.1:9"), "m-idle": kuper_table("http://x")}
    )
    Producer(ctx).submit_many("m-kuper", [kuper_lead() for _ in range(3)])
    with ctx.sessions.begin() as session:
        ledger.set_pause(
            session, "m-idle", kind="auth", reason="401", now=datetime.now(UTC), until=None
        )
    got = samples(generate_latest(registry(ctx)).decode())
    assert got[("leadrelay_backlog", (("destination", "m-kuper"), ("state", "queued")))] == 3
    assert got[("leadrelay_paused", (("destination", "m-idle"), ("kind", "auth")))] == 1
    assert got[("leadrelay_paused", (("destination", "m-kuper"), ("kind", "auth")))] == 0
    assert got[("leadrelay_events_unsent", (("destination", "m-kuper"),))] == 0
    assert (
        got[
            (
                "leadrelay_destination_info",
                (("destination", "m-idle"), ("platform", "kuper"), ("worker_group", "default")),
            )
        ]
        == 1
    )


# ---------------------------------------------------------------- the exchange's counts


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_call_counts_the_time_it_slept_for_a_slot_and_the_answer_it_got(
    make_ctx: Callable[..., WorkerContext],
) -> None:
    """
    At 5 requests/s with no burst, the second and third calls each wait about
    200 ms for their slot; each call's answer (a 429 here) is counted by class.
    """
    ctx = make_ctx({"m-wait": kuper_table("http://127.0.0.1:9", rate=5, burst=1)})
    http = httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(429)))
    turn = Turn.at(replace(ctx, http=http), "m-wait")
    waits = "leadrelay_limiter_wait_seconds"
    before = {
        "count": value(f"{waits}_count", destination="m-wait"),
        "sum": value(f"{waits}_sum", destination="m-wait"),
        "429": value("leadrelay_requests_total", destination="m-wait", status="429"),
        "timed": value("leadrelay_request_seconds_count", destination="m-wait"),
    }
    with http:
        for _ in range(3):
            call(turn, httpx.Request("POST", "http://127.0.0.1:9/import"), kind="send")
    assert value(f"{waits}_count", destination="m-wait") == before["count"] + 3
    slept = value(f"{waits}_sum", destination="m-wait") - before["sum"]
    assert 0.3 <= slept < 2.0
    assert value("leadrelay_requests_total", destination="m-wait", status="429") == (
        before["429"] + 3
    )
    assert value("leadrelay_request_seconds_count", destination="m-wait") == before["timed"] + 3


def test_a_rate_limit_is_set_per_destination() -> None:
    metrics.set_rate_limit("m-rate", 5.0)
    metrics.set_rate_limit("m-rate", 2.5)  # a learned rate replaces the configured one
    assert value("leadrelay_rate_limit", destination="m-rate") == 2.5
