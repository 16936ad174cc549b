"""
A producer needs only its own destination: it reads the whole destinations
file, every platform's secret named as `${VAR}`, and holds none of them, while
a worker elsewhere holds the secret of the destination it serves and delivers.
A worker that serves a destination whose secret it lacks says so by name and
does not start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from sandbox import kuper as kuper_sandbox
from sandbox import serve
from tests.factories import admitad_table, calltouch_table, kuper_lead, salesman_table
from tests.factories import kuper_table as kuper_defaults
from tests.system.conftest import Relay

SECRETS = {
    "KUPER_PASSWORD": "kuper-secret-pw",
    "CALLTOUCH_TOKEN": "calltouch-secret-token",
    "SALESMAN_API_KEY": "salesman-secret-apikey",
    "ADMITAD_CLIENT_SECRET": "admitad-client-secret",
}
NOWHERE = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def kuper_url() -> Iterator[str]:
    with serve(kuper_sandbox.create_app(username="partner", password="kuper-secret-pw")) as url:
        yield url


def every_platform(kuper_url: str) -> dict[str, dict[str, object]]:
    """The whole destinations file, each secret named, none written down."""
    return {
        "kuper-main": kuper_defaults(kuper_url, password="${KUPER_PASSWORD}"),
        "calltouch-main": calltouch_table(NOWHERE, access_token="${CALLTOUCH_TOKEN}"),
        "salesman-main": salesman_table(NOWHERE, api_key="${SALESMAN_API_KEY}"),
        "admitad-main": admitad_table(NOWHERE, client_secret="${ADMITAD_CLIENT_SECRET}"),
    }


def producer_env(relay: Relay) -> dict[str, str]:
    env = {k: v for k, v in relay.env.items() if k not in SECRETS}
    assert not set(SECRETS) & set(env)
    return env


PRODUCE = """
import json, sys
from producers import submit_many, Submission
leads = json.loads(sys.stdin.read())
results = submit_many("kuper-main", [Submission(l, f"order-{i}") for i, l in enumerate(leads)])
print(json.dumps([r.lead_id for r in results]))
"""


def test_a_producer_without_any_secret_submits_and_a_worker_with_its_one_secret_delivers(
    relay_factory: Callable[..., Relay], kuper_url: str, tmp_path: Path
) -> None:
    httpx.post(f"{kuper_url}/__sandbox__/reset")
    relay = relay_factory(every_platform(kuper_url))
    relay.env["KUPER_PASSWORD"] = SECRETS["KUPER_PASSWORD"]  # the worker's own secret only
    relay.start_worker(queues="deliver.kuper-main,leadrelay")
    relay.start_beat()

    env = producer_env(relay)
    leads = [kuper_lead() for _ in range(20)]
    made = subprocess.run(
        [sys.executable, "-c", PRODUCE],
        input=json.dumps(leads),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    lead_ids = json.loads(made.stdout)
    assert len(lead_ids) == 20 and all(lead_ids)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "producers", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )

    upgraded = cli("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    rows = tmp_path / "more.jsonl"
    rows.write_text("\n".join(json.dumps(kuper_lead()) for _ in range(5)) + "\n")
    imported = cli("submit", str(rows), "--to", "kuper-main")
    assert imported.returncode == 0, imported.stderr

    deadline = time.monotonic() + 60
    while True:
        stats = cli("stats", "--json")
        assert stats.returncode == 0, stats.stderr
        kuper = next(d for d in json.loads(stats.stdout) if d["destination"] == "kuper-main")
        if kuper["delivered"] == 25:
            break
        assert time.monotonic() < deadline, f"not delivered in 60 s: {kuper}"
        time.sleep(0.3)

    shown = cli("status", lead_ids[0], "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["deliveries"][0]["state"] == "delivered"
    log = httpx.get(f"{kuper_url}/__sandbox__/log").json()
    assert sum(e.get("created", 0) for e in log) == 25
    for text in (made.stderr, upgraded.stderr, imported.stderr, stats.stderr, shown.stderr):
        assert "not set in the environment" not in text


def test_a_worker_serving_a_destination_without_its_secret_names_it_and_stops(
    relay_factory: Callable[..., Relay], kuper_url: str
) -> None:
    relay = relay_factory(every_platform(kuper_url))
    relay.env["KUPER_PASSWORD"] = SECRETS["KUPER_PASSWORD"]
    relay.start_worker("kuper-only", queues="deliver.kuper-main")  # starts: its secret is here

    relay._start("calltouch", [*worker_args(), "-Q", "deliver.calltouch-main"])
    proc = relay.procs.pop("calltouch")  # it exits by itself: nothing to stop after
    assert proc.wait(60) == 2
    log = relay.log("calltouch")
    assert (
        "destinations.calltouch-main.access_token: names ${CALLTOUCH_TOKEN},"
        " which is not set in the environment" in log
    )
    assert "Traceback" not in log
    assert "kuper-main" not in log  # only what it serves is checked


def worker_args() -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "worker", "worker", "-c", "1", "-l", "INFO"]


def test_the_example_file_reads_without_any_secret(tmp_path: Path) -> None:
    """The README's example destinations file, as a producer reads it: no secret needed."""
    example = Path(__file__).parents[2] / "leadrelay.example.toml"
    env = {k: v for k, v in os.environ.items() if k not in SECRETS and "LEADRELAY" not in k}
    env.update(LEADRELAY_CONFIG=str(example), LEADRELAY_DATABASE_URL=f"sqlite:///{tmp_path}/l.db")
    code = (
        "import json; from worker.settings import load; s = load();"
        "print(json.dumps({n: [str(e) for e in d.unset_secrets()]"
        " for n, d in s.destinations.items()}))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    unset = json.loads(shown.stdout)
    assert len(unset) >= 4
    assert all(len(errors) == 1 for errors in unset.values()), unset
    assert all("not set in the environment" in errors[0] for errors in unset.values())
