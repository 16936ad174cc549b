"""Flower against the real app and worker: auth, the queues, and no personal data in tasks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from celery import Celery

from tests.factories import kuper_table
from tests.system.conftest import Relay
from worker.sandbox import free_port

AUTH = ("ops", "flower-secret-pw")


@pytest.fixture
def relay(relay_factory: Callable[..., Relay]) -> Relay:
    relay = relay_factory({"kuper-flower": kuper_table("http://127.0.0.1:9")})
    relay.start_worker(queues="leadrelay,leadrelay.intake,deliver.kuper-flower")
    return relay


@pytest.fixture
def flower(relay: Relay, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**relay.env, "FLOWER_BASIC_AUTH": ":".join(AUTH)}
    log = (tmp_path / "flower.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, (tmp_path / "flower.log").read_text()
                assert time.monotonic() < deadline
                time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def test_flower_wants_auth_shows_the_queues_and_no_personal_data(relay: Relay, flower: str) -> None:
    assert httpx.get(f"{flower}/api/workers").status_code == 401
    client = Celery(broker=relay.env["LEADRELAY_BROKER_URL"])
    lead = {
        "phone": "8 916 777 66 55",
        "utm": {"utm_source": "app"},
        "vacancy_id": 3,
        "city_id": 53,
        "first_name": "Секретова",
    }
    client.send_task(
        "leadrelay.submit",
        queue="leadrelay.intake",
        kwargs={"destination": "kuper-flower", "lead": lead},
    )
    deadline = time.monotonic() + 30
    while True:
        tasks = httpx.get(f"{flower}/api/tasks", auth=AUTH).json()
        if any(t.get("name") == "leadrelay.submit" for t in tasks.values()):
            break
        assert time.monotonic() < deadline, tasks
        time.sleep(0.3)
    shown = httpx.get(f"{flower}/api/tasks", auth=AUTH).text
    assert "777" not in shown
    assert "Секретова" not in shown and "\\u0421\\u0435\\u043a" not in shown
    queues = httpx.get(f"{flower}/api/queues/length", auth=AUTH)
    assert queues.status_code == 200
    names = {q["name"] for q in queues.json()["active_queues"]}
    assert {"deliver.kuper-flower", "leadrelay.intake"} <= names


def test_flower_refuses_to_start_without_auth(relay: Relay, tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in relay.env.items()
        if k not in ("FLOWER_BASIC_AUTH", "LEADRELAY_FLOWER_LOCAL")
    }
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "flower", f"--port={free_port()}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "FLOWER_BASIC_AUTH" in result.stdout + result.stderr


def test_a_wrong_setting_stops_the_worker_at_start_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "leadrelay.toml"
    bad.write_text(
        '[destinations.k]\nplatform = "kuper"\nbase_url = "https://k"\nusername = "u"\n'
        'password = "p"\nbatch_size = 900\n',
        encoding="utf-8",
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LEADRELAY_")},
        "LEADRELAY_CONFIG": str(bad),
        "LEADRELAY_BROKER_URL": "redis://127.0.0.1:6379/15",
    }
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "destinations.k.batch_size" in result.stderr
