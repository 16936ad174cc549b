"""
`leadrelay doctor`, each check shown to pass and then broken for real: a bad
setting, a missing secret, a ledger that does not answer or has no schema, a
Redis that does not answer, a clock off, a queue with work and no worker (real
worker processes), no beat and two beats (real beat processes), a pause, a
dead lead. The CLI prints the same findings and exits 1 on a failure.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import update

from producers.doctor import Check, Doctor
from tests.factories import kuper_table
from tests.system.conftest import Relay
from worker import keys, ledger
from worker.ledger import migrate
from worker.ledger.db import make_engine, make_sessionmaker
from worker.ledger.store import NewLead
from worker.ledger.tables import DeliveryRow
from worker.settings import Settings, load, parse_destinations

NOWHERE = "http://127.0.0.1:9"
TABLES = {"k": kuper_table(NOWHERE), "other": kuper_table(NOWHERE)}


def checks(settings: Callable[[], Settings], **kwargs: Any) -> dict[str, Check]:
    return {c.name: c for c in Doctor(load_settings=settings, inspect_timeout=1.0, **kwargs).run()}


def loader(ledger_url: str, redis_url: str, tables: dict[str, Any] = TABLES, **more: Any) -> Any:
    return lambda: load(
        database_url=ledger_url,
        broker_url=redis_url,
        destinations=parse_destinations(tables),
        **more,
    )


def add_due_leads(ledger_url: str, destination: str, n: int) -> list[str]:
    engine = make_engine(ledger_url)
    leads = [
        NewLead(id=f"doc{destination}{i:020d}", destination=destination, payload={}, source="t")
        for i in range(n)
    ]
    with make_sessionmaker(engine).begin() as s:
        ledger.insert_leads(s, leads, datetime.now(UTC) - timedelta(seconds=5))
    engine.dispose()
    return [lead.id for lead in leads]


def test_a_healthy_relay_passes_and_each_broken_part_fails_by_name(
    relay_factory: Callable[..., Relay], ledger_url: str, redis_url: str
) -> None:
    settings = loader(ledger_url, redis_url)
    relay = relay_factory(TABLES)
    found = checks(settings)
    assert found["consumers"].status == "warn"  # no worker, nothing to do
    assert found["beat"].status == "fail" and "no beat" in found["beat"].summary

    relay.start_beat()
    deadline = time.monotonic() + 30
    while checks(settings)["beat"].status != "ok":
        assert time.monotonic() < deadline, relay.log("beat")[-2000:]
        time.sleep(0.5)
    found = checks(settings)
    for name in ("config", "ledger", "schema", "redis", "clock", "beat", "paused", "dead"):
        assert found[name].status == "ok", found[name]

    # work for k, and one worker that consumes only other's queue
    add_due_leads(ledger_url, "k", 3)
    relay.start_worker("w1", concurrency=1, queues="deliver.other,leadrelay")
    found = checks(settings)
    assert found["consumers"].status == "fail"
    # beat's sweep, run by w1 on the leadrelay queue, may have woken deliver.k already:
    # a wake-up then waits there too, and the doctor counts it
    [detail] = found["consumers"].details
    assert re.fullmatch(r"deliver\.k: 3 lead\(s\) due(, \d+ message\(s\) waiting)?", detail), detail
    relay.start_worker("w2", concurrency=1, queues="deliver.k")
    assert checks(settings)["consumers"].status == "ok"

    # a second beat, with a schedule file of its own
    second = [sys.executable, "-m", "celery", "-A", "worker", "beat", "-l", "INFO"]
    relay._start("beat-2", [*second, "-s", str(relay.workdir / "beat-2-schedule")])
    deadline = time.monotonic() + 30
    while (beat := checks(settings)["beat"]).status != "fail":
        assert time.monotonic() < deadline, beat
        time.sleep(0.5)
    assert beat.summary == "2 beats run: run exactly one" and len(beat.details) == 2


def test_config_and_secrets(
    ledger_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LEADRELAY_LOG_LEVEL", "verbose")
    found = checks(load)
    assert found["config"].status == "fail"
    assert found["config"].summary.startswith("LEADRELAY_LOG_LEVEL: one of DEBUG")
    assert {found[n].status for n in ("ledger", "schema", "redis", "beat")} == {"skip"}
    monkeypatch.delenv("LEADRELAY_LOG_LEVEL")

    monkeypatch.delenv("DOCTOR_KUPER_PW", raising=False)
    tables = {
        "k": kuper_table(NOWHERE, password="${DOCTOR_KUPER_PW}", worker_group="kuper"),
        "other": kuper_table(NOWHERE),
    }
    found = checks(loader(ledger_url, redis_url, tables))
    assert found["config"].status == "fail"
    assert found["config"].details == [
        "destinations.k.password: names ${DOCTOR_KUPER_PW}, which is not set in the environment"
    ]
    # a host of another group needs none of k's secrets
    found = checks(loader(ledger_url, redis_url, tables, worker_group="default"))
    assert found["config"].status == "ok"


def test_a_ledger_that_does_not_answer_or_has_no_schema(redis_url: str, tmp_path: Path) -> None:
    found = checks(loader("postgresql://postgres:pw@127.0.0.1:1/none", redis_url))
    assert found["ledger"].status == "fail"
    assert found["ledger"].summary.startswith(
        "the ledger at postgresql://postgres:***@127.0.0.1:1/none cannot be reached: "
    )
    assert "pw@" not in json.dumps(found["ledger"].__dict__)
    assert found["schema"].status == found["dead"].status == "skip"

    missing = tmp_path / "nothing.db"
    found = checks(loader(f"sqlite:///{missing}", redis_url))
    assert found["ledger"].status == "fail" and not missing.exists()
    assert found["ledger"].summary.endswith("nothing.db: the file does not exist")

    empty = tmp_path / "empty.db"
    empty.touch()
    found = checks(loader(f"sqlite:///{empty}", redis_url))
    assert found["ledger"].status == "ok"
    assert found["schema"].status == "fail"
    assert found["schema"].summary.endswith("has no schema: run leadrelay db upgrade")
    migrate.upgrade(f"sqlite:///{empty}")
    assert checks(loader(f"sqlite:///{empty}", redis_url))["schema"].status == "ok"


def test_redis_that_does_not_answer_and_a_clock_that_is_off(
    ledger_url: str, redis_url: str
) -> None:
    found = checks(loader(ledger_url, "redis://127.0.0.1:1/0"))
    assert found["redis"].status == "fail"
    assert found["redis"].details[0].startswith("broker at redis://127.0.0.1:1/0: ConnectionError")
    assert {found[n].status for n in ("clock", "consumers", "beat")} == {"skip"}

    found = checks(loader(ledger_url, redis_url), clock=lambda: time.time() + 4)
    assert found["clock"].status == "fail"
    skew = float(found["clock"].summary.split()[3])
    assert 3.9 < skew < 4.1 and "s ahead of Redis" in found["clock"].summary
    assert checks(loader(ledger_url, redis_url))["clock"].status == "ok"


def test_paused_destinations_and_dead_leads_are_warnings(ledger_url: str, redis_url: str) -> None:
    [dead] = add_due_leads(ledger_url, "other", 1)
    engine = make_engine(ledger_url)
    now = datetime.now(UTC)
    with make_sessionmaker(engine).begin() as s:
        ledger.set_pause(
            s, "k", kind="auth", reason="HTTP 401 from the platform", now=now, until=None
        )
        s.execute(update(DeliveryRow).where(DeliveryRow.lead_id == dead).values(state="dead"))
    engine.dispose()
    found = checks(loader(ledger_url, redis_url))
    assert found["paused"].status == "warn"
    assert found["paused"].details == ["k: auth, HTTP 401 from the platform (until resumed)"]
    assert found["dead"].status == "warn"
    assert found["dead"].details == ["other: 1 (see `leadrelay retry --destination other`)"]


def test_the_command_prints_each_check_and_exits_1_on_a_failure(
    ledger_url: str, redis_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "leadrelay.toml"
    config.write_text(
        '[destinations.k]\nplatform = "kuper"\nbase_url = "http://127.0.0.1:9"\n'
        'username = "u"\npassword = "${DOCTOR_SECRET_UNSET}"\n',
        encoding="utf-8",
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "LEADRELAY_DATABASE_URL": ledger_url,
        "LEADRELAY_BROKER_URL": redis_url,
        "LEADRELAY_CONFIG": str(config),
    }
    redis.Redis.from_url(redis_url).set(keys.beat_key("h:1"), json.dumps({"instance": "h:1"}))
    run = subprocess.run(
        [sys.executable, "-m", "producers", "doctor", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1, run.stderr
    found = {c["name"]: c for c in json.loads(run.stdout)}
    assert found["config"]["status"] == "fail" and found["beat"]["status"] == "ok"
    assert "Traceback" not in run.stderr
    text = subprocess.run(
        [sys.executable, "-m", "producers", "doctor"],
        env={**env, "DOCTOR_SECRET_UNSET": "x", "COLUMNS": "100"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert text.returncode == 0, text.stdout
    assert [line.split()[:2] for line in text.stdout.splitlines() if not line.startswith(" ")][
        :4
    ] == [["OK", "config"], ["OK", "ledger"], ["OK", "schema"], ["OK", "redis"]]
