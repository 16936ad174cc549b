"""
Flower against the real app: `celery -A worker flower` and a `celery -A worker
worker` in subprocesses, on Redis database 15 and the test PostgreSQL.

What ops rely on: Flower wants basic auth from the environment and refuses to
start without it; every destination's queue is listed; the task list shows
each task's arguments and result, and a drain's result is its summary; a raw
lead sent as `leadrelay.submit` shows no phone, name or passport anywhere in
Flower's task API; Flower cannot shut workers down from a browser.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery

from sandbox import free_port
from tests.factories import kuper_lead, kuper_table
from worker.runtime.flower import DEFAULTS

AUTH = ("ops", "flower-test-password")
DESTINATION = "kuper-flower"
QUEUE = f"deliver.{DESTINATION}"
WORKER = "flowertest@localhost"
PHONE = "+7 (916) 777-66-55"
PASSPORT = "4510 987654"
NAME = "Секретова"
pytestmark = pytest.mark.timeout(180)


@dataclass
class Env:
    """The environment and working directory every relay process of a test shares."""

    vars: dict[str, str]
    workdir: Path

    def start(self, name: str, args: list[str], **extra: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker", *args],
            env={**self.vars, **extra},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def stop(proc: subprocess.Popen[bytes]) -> None:
    """TERM the process group, KILL it if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def wait_for(what: str, check: Callable[[], bool], timeout: float = 45) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} in {timeout}s"
        time.sleep(0.3)


@pytest.fixture
def env(ledger_url: str, redis_url: str, tmp_path: Path) -> Env:
    config = tmp_path / "leadrelay.toml"
    table = kuper_table("http://127.0.0.1:9")  # nothing listens: no lead needs delivering
    lines = [f"[destinations.{DESTINATION}]"]
    lines += [
        f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"' for k, v in table.items()
    ]
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LEADRELAY_", "FLOWER_", "PROMETHEUS_"))
    }
    clean.update(
        LEADRELAY_BROKER_URL=redis_url,
        LEADRELAY_DATABASE_URL=ledger_url,
        LEADRELAY_CONFIG=str(config),
        LEADRELAY_LOG_FORMAT="text",
    )
    return Env(clean, tmp_path)


@pytest.fixture
def worker(env: Env) -> Iterator[None]:
    proc = env.start(
        "worker",
        [
            "worker",
            "-Q",
            f"leadrelay,leadrelay.intake,{QUEUE}",
            "-c",
            "1",
            "-n",
            WORKER,
            "-l",
            "INFO",
        ],
        LEADRELAY_DRAIN_BUDGET="1",
    )
    try:
        wait_for("worker", lambda: "ready" in env.log("worker") or proc.poll() is not None)
        assert proc.poll() is None, env.log("worker")
        yield
    finally:
        stop(proc)


def start_flower(env: Env, *args: str, **extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = env.start(
        "flower",
        ["flower", f"--port={port}", "--address=127.0.0.1", "--read_only=true", *args],
        **extra,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, env.log("flower")
        try:
            return httpx.get(f"{url}/healthcheck", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for("flower", up)
    return proc, url


@pytest.fixture
def flower(env: Env, worker: None) -> Iterator[str]:
    proc, url = start_flower(env, FLOWER_BASIC_AUTH=":".join(AUTH))
    try:
        yield url
    finally:
        stop(proc)


def api(url: str, path: str, **params: Any) -> Any:
    response = httpx.get(f"{url}{path}", auth=AUTH, params=params, timeout=15)
    assert response.status_code == 200, (path, response.status_code, response.text)
    return response.json()


def events_flowing(url: str) -> None:
    """Wait until Flower's event receiver has heard the worker's heartbeat.

    Flower's HTTP side answers before its event receiver has subscribed; a task
    received in that gap reaches Flower without its `task-received` event, so
    without its name and arguments.
    """
    wait_for(
        "the worker's heartbeat in flower",
        lambda: bool(api(url, "/api/workers", status="1").get(WORKER)),
    )


def test_flower_refuses_a_request_without_or_with_wrong_auth(flower: str) -> None:
    for path in ("/api/workers", "/api/tasks", "/api/queues/length", "/broker"):
        assert httpx.get(f"{flower}{path}", timeout=10).status_code == 401, path
    wrong = httpx.get(f"{flower}/api/tasks", auth=("ops", "guess"), timeout=10)
    assert wrong.status_code == 401


def test_flower_lists_the_destination_s_queue_and_the_worker(flower: str) -> None:
    wait_for(
        "worker in flower",
        lambda: WORKER in api(flower, "/api/workers", refresh="1"),
    )
    queues = {q["name"]: q for q in api(flower, "/api/queues/length")["active_queues"]}
    assert {QUEUE, "leadrelay", "leadrelay.intake"} <= set(queues)
    assert all(isinstance(q["messages"], int) for q in queues.values())


def test_flower_shows_no_personal_data_of_a_raw_lead(flower: str, env: Env) -> None:
    events_flowing(flower)
    client = Celery(broker=env.vars["LEADRELAY_BROKER_URL"])
    lead = {
        "phone": PHONE,
        "first_name": NAME,
        "passport_cn": PASSPORT,
        "utm": {"utm_source": "app", "utm_content": f"call {PHONE}"},
        "vacancy_id": 3,
        "city_id": 53,
    }
    sent = client.send_task(
        "leadrelay.submit",
        queue="leadrelay.intake",
        kwargs={"destination": DESTINATION, "lead": lead, "idempotency_key": "flower-1"},
    )
    client.close()

    def settled() -> bool:
        task = api(flower, "/api/tasks").get(sent.id)
        return task is not None and task["state"] in ("SUCCESS", "FAILURE")

    wait_for("the submit task in flower", settled)
    tasks = httpx.get(f"{flower}/api/tasks", auth=AUTH, timeout=10).text
    info = httpx.get(f"{flower}/api/task/info/{sent.id}", auth=AUTH, timeout=10)
    assert info.status_code == 200
    task = info.json()
    assert task["name"] == "leadrelay.submit"
    assert task["state"] == "SUCCESS", task
    assert "***" in task["kwargs"], "the lead is there, masked"
    assert DESTINATION in task["kwargs"], "ids stay readable"
    for shown in (tasks, info.text):
        # the phone as written and as digits; not a bare "777", which a runtime's float may hold
        phone_forms = ("777-66-55", "79167776655", "9167776655")
        for secret in (*phone_forms, "987654", NAME, NAME.encode("unicode_escape").decode()):
            assert secret not in shown, secret


def columns(url: str) -> list[str]:
    """The columns of Flower's task list, in order, as its page declares them."""
    page = httpx.get(f"{url}/tasks", auth=AUTH, timeout=10)
    assert page.status_code == 200, page.status_code
    return re.findall(r'<th data-column="(\w+)"', page.text)


def test_the_task_list_shows_each_task_s_arguments_and_result(flower: str) -> None:
    assert columns(flower) == DEFAULTS["tasks_columns"].split(",")
    assert {"args", "result"} <= set(columns(flower))


@pytest.mark.parametrize(
    ("flags", "environ"),
    [
        ([], {"FLOWER_TASKS_COLUMNS": "name,uuid,result"}),
        (["--tasks_columns=name,uuid,result"], {}),
    ],
    ids=["environment", "flag"],
)
def test_columns_the_operator_chose_are_kept(
    env: Env, flags: list[str], environ: dict[str, str]
) -> None:
    proc, url = start_flower(env, *flags, FLOWER_BASIC_AUTH=":".join(AUTH), **environ)
    try:
        assert columns(url) == ["name", "uuid", "result"]
    finally:
        stop(proc)


def test_a_drain_s_result_in_flower_is_its_summary(flower: str, env: Env) -> None:
    """No result backend: the summary reaches Flower in the task-succeeded event."""
    events_flowing(flower)
    client = Celery(broker=env.vars["LEADRELAY_BROKER_URL"])
    client.send_task(
        "leadrelay.submit",
        queue="leadrelay.intake",
        kwargs={"destination": DESTINATION, "lead": kuper_lead(), "idempotency_key": "summary-1"},
    )
    client.close()

    def drained() -> list[dict[str, Any]]:
        tasks = api(flower, "/api/tasks", taskname="leadrelay.deliver", state="SUCCESS")
        return [t for t in tasks.values() if t.get("result")]

    wait_for("a drain's result in flower", lambda: bool(drained()))
    summary = ast.literal_eval(drained()[0]["result"])
    assert set(summary) == {
        "requests",
        "throttles",
        "outcomes",
        "backlog",
        "backlog_capped",
        "oldest_due_s",
    }
    # nothing listens at the destination: the lead waits to be sent again, and shows so
    assert summary["requests"] == 1 and summary["throttles"] == 0
    assert summary["outcomes"] == {"retry_wait": 1}
    assert (summary["backlog"], summary["backlog_capped"]) == (1, False)


def test_flower_is_read_only(flower: str) -> None:
    wait_for("worker in flower", lambda: WORKER in api(flower, "/api/workers", refresh="1"))
    shutdown = httpx.post(f"{flower}/api/worker/shutdown/{WORKER}", auth=AUTH, timeout=10)
    assert shutdown.status_code == 403


def refused(env: Env, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "flower", f"--port={free_port()}"],
        env={**env.vars, **extra},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=env.workdir,
    )


@pytest.mark.parametrize(
    "auth",
    [
        {},
        {"FLOWER_BASIC_AUTH": ""},
        {"FLOWER_BASIC_AUTH": "ops"},
        {"FLOWER_BASIC_AUTH": "ops:CHANGE-ME"},
    ],
    ids=["unset", "empty", "no-password", "placeholder"],
)
def test_flower_refuses_to_start_without_auth(env: Env, auth: dict[str, str]) -> None:
    result = refused(env, **auth)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "FLOWER_BASIC_AUTH" in result.stderr
    assert "LEADRELAY_FLOWER_LOCAL" in result.stderr


def test_flower_takes_auth_from_its_own_flag_too(env: Env) -> None:
    """The check reads the options Flower resolved, not only the environment."""
    proc, url = start_flower(env, f"--basic_auth={':'.join(AUTH)}")
    try:
        assert httpx.get(f"{url}/api/workers", timeout=10).status_code == 401
        assert httpx.get(f"{url}/api/workers", auth=AUTH, timeout=10).status_code == 200
    finally:
        stop(proc)


def test_a_local_run_starts_without_auth_when_told(env: Env) -> None:
    proc, url = start_flower(env, LEADRELAY_FLOWER_LOCAL="1")
    try:
        assert httpx.get(f"{url}/healthcheck", timeout=10).text == "OK"
    finally:
        stop(proc)
