"""
Settlement events reach an upstream app's own Celery worker: the relay's real
worker and beat deliver to the Kuper emulator, and a separate `celery worker`
of an app written with stock Celery alone (`tests.system.notify_consumer`)
takes the events from the same Redis. Every lead that settles is told to that
app's task with its state, as one dict argument holding exactly the documented
keys, and no event names a phone. The relay's kombu fix stays in the relay's
worker: the app's messages come through kombu's own Redis transport.

`UpstreamApp` runs that consumer for the chaos test too.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from psycopg import sql
from sqlalchemy import func, select

from producers.client import Producer
from sandbox import kuper as kuper_sandbox
from sandbox import serve
from tests.factories import kuper_lead, kuper_table
from tests.system.conftest import Relay
from tests.system.notify_consumer import EVENTS_QUEUE
from worker.delivery.context import WorkerContext, build
from worker.intake import Submission
from worker.ledger.tables import DeliveryRow, OutboxRow
from worker.settings import load, parse_destinations

ROOT = Path(__file__).resolve().parents[2]
#: the upstream app's task, as a destination table names it
NOTIFY = {"notify_task": "app.lead_settled", "notify_queue": EVENTS_QUEUE}
#: the documented keys of an event, no more, no fewer
EVENT_KEYS = {
    "lead_id",
    "destination",
    "idempotency_key",
    "state",
    "external_id",
    "detail",
    "settled_at",
}
#: the upstream app's events table (its own migration would make it)
TABLE = "app_lead_events"
CREATE = sql.SQL(
    "CREATE TABLE {} (lead_id text NOT NULL, state text NOT NULL, event jsonb NOT NULL,"
    " received integer NOT NULL, received_by jsonb NOT NULL, PRIMARY KEY (lead_id, state))"
).format(sql.Identifier(TABLE))


@dataclass(frozen=True)
class Received:
    """One (lead, state) as the upstream app recorded it."""

    event: dict[str, Any]
    #: how many times it came (delivery is at least once)
    times: int
    #: how it came: the app, the arguments' types, the kombu transport
    received_by: dict[str, Any]


@dataclass
class UpstreamApp(Relay):
    """The upstream app's `celery worker` on its events queue, and what it has recorded."""

    database_url: str = ""

    @classmethod
    def make(cls, broker_url: str, database_url: str, workdir: Path) -> UpstreamApp:
        """The app's environment (no relay setting: it is not the relay) and an empty table."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEADRELAY_")}
        env.update(
            {
                "APP_BROKER_URL": broker_url,
                "APP_DATABASE_URL": database_url,
                "APP_EVENTS_TABLE": TABLE,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
            }
        )
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(TABLE)))
            conn.execute(CREATE)
        return cls(env, workdir, database_url=database_url)

    def start_consumer(self, name: str = "app", concurrency: int = 2) -> None:
        self._start(
            name,
            [
                *(sys.executable, "-m", "celery", "-A", "tests.system.notify_consumer", "worker"),
                *("-Q", EVENTS_QUEUE, "-c", str(concurrency), "-n", f"{name}@%h"),
                *("--without-gossip", "--without-mingle", "-l", "INFO"),
            ],
        )
        self.wait_for_log(name, "ready", 60)

    def pause(self, name: str = "app") -> None:
        """SIGSTOP the consumer and its children: it takes nothing until `resume`."""
        os.killpg(self.procs[name].pid, signal.SIGSTOP)

    def resume(self, name: str = "app") -> None:
        os.killpg(self.procs[name].pid, signal.SIGCONT)

    def received(self) -> dict[tuple[str, str], Received]:
        with psycopg.connect(self.database_url) as conn:
            rows = conn.execute(
                sql.SQL("SELECT lead_id, state, event, received, received_by FROM {}").format(
                    sql.Identifier(TABLE)
                )
            ).fetchall()
        return {(lead, state): Received(e, n, by) for lead, state, e, n, by in rows}


def phone_digits(lead: Mapping[str, Any]) -> list[str]:
    """The ten digits after the country code of every phone in a lead, however written."""
    return [
        re.sub(r"\D", "", value)[-10:]
        for key, value in lead.items()
        if key.endswith("phone") and isinstance(value, str)
    ]


def names_a_phone(event: Mapping[str, Any], phones: list[str]) -> bool:
    """Whether any of `phones` is in the event, whatever separates its digits there."""
    digits = re.sub(r"\D", "", json.dumps(event, ensure_ascii=False))
    return any(phone in digits for phone in phones)


# --- the relay ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def kuper_url() -> Iterator[str]:
    """Kuper with "Дедублицировать всегда" on: a phone it holds already is rejected."""
    app = kuper_sandbox.create_app(username="partner", password="kuper-secret-pw", deduplicate=True)
    with serve(app) as url:
        yield url


@pytest.fixture
def upstream(redis_url: str, pg_url: str, tmp_path: Path) -> Iterator[UpstreamApp]:
    app = UpstreamApp.make(redis_url, pg_url, tmp_path)
    yield app
    app.stop()


@pytest.fixture
def relay(
    relay_factory: Callable[..., Relay], ledger_url: str, redis_url: str, kuper_url: str
) -> Iterator[tuple[Relay, WorkerContext]]:
    """A relay (not started) whose Kuper destination tells the upstream app, and its ledger."""
    httpx.post(f"{kuper_url}/__sandbox__/reset")
    tables = {"kuper-sys": kuper_table(kuper_url, deduplicate=True, **NOTIFY)}
    ctx = build(
        load(database_url=ledger_url, broker_url=redis_url, destinations=parse_destinations(tables))
    )
    yield relay_factory(tables), ctx
    ctx.close()


def deliveries(ctx: WorkerContext) -> dict[tuple[str, str], str]:
    """Every delivery in the ledger: (lead id, state) → the destination."""
    with ctx.sessions() as s:
        rows = s.execute(select(DeliveryRow.lead_id, DeliveryRow.state, DeliveryRow.destination))
        return {(lead, str(state)): dest for lead, state, dest in rows}


def unsent(ctx: WorkerContext) -> int:
    with ctx.sessions() as s:
        return int(s.scalar(select(func.count()).where(OutboxRow.sent_at.is_(None))) or 0)


def wait(what: str, done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"not in {timeout}s: {what}"
        time.sleep(0.2)


# --- the test -----------------------------------------------------------------------


def test_an_upstream_celery_app_is_told_each_settlement_as_one_json_dict_naming_no_phone(
    relay: tuple[Relay, WorkerContext], upstream: UpstreamApp, redis_url: str
) -> None:
    processes, ctx = relay
    upstream.start_consumer()
    processes.start_worker()
    processes.start_beat()
    leads = submit_fresh_then_repeated(ctx)
    wait(
        "every settlement received",
        lambda: not unsent(ctx) and set(deliveries(ctx)) <= set(upstream.received()),
        60,
    )
    ledger = deliveries(ctx)
    received = upstream.received()
    with redis.Redis.from_url(redis_url) as client:
        queue_left = client.llen(EVENTS_QUEUE)

    assert sorted(state for _, state in ledger) == ["delivered"] * 50 + ["rejected"] * 10
    assert set(received) == set(ledger)  # one event per settlement, and no other
    assert {r.times for r in received.values()} == {1}  # a calm run sends each once
    assert queue_left == 0
    for (lead_id, state), r in received.items():
        assert set(r.event) == EVENT_KEYS
        assert (r.event["lead_id"], r.event["state"]) == (lead_id, state)
        assert r.event["destination"] == "kuper-sys"
        assert r.event["idempotency_key"] == leads[lead_id][0]
        assert (r.event["external_id"] is None) == (state == "rejected")
        assert not names_a_phone(r.event, phone_digits(leads[lead_id][1]))
    # the app's own Celery app ran its task with one dict argument, over kombu's own
    # transport: nothing of the relay's (its kombu fix among it) reached this process
    assert {json.dumps(r.received_by, sort_keys=True) for r in received.values()} == {
        json.dumps(
            {
                "app": "app",
                "args": ["dict"],
                "kwargs": [],
                "transport": "kombu.transport.redis.Transport",
            },
            sort_keys=True,
        )
    }
    assert "ERROR" not in upstream.log("app")


def submit_fresh_then_repeated(ctx: WorkerContext) -> dict[str, tuple[str, dict[str, Any]]]:
    """
    40 fresh leads, delivered; then 10 of the same people again under new keys
    (Kuper rejects them: it holds those phones) and 10 fresh ones.
    Returns lead id → (idempotency key, lead).
    """
    producer = Producer(ctx)
    first = {f"order-{i}": kuper_lead() for i in range(40)}
    second = {f"again-{i}": first[f"order-{i}"] for i in range(10)}
    second |= {f"order-{i}": kuper_lead() for i in range(40, 50)}
    leads: dict[str, tuple[str, dict[str, Any]]] = {}
    for batch, settled_after in ((first, 40), (second, 60)):
        results = producer.submit_many(
            "kuper-sys", [Submission(lead, key) for key, lead in batch.items()]
        )
        for (key, lead), result in zip(batch.items(), results, strict=True):
            assert result.lead_id is not None, result.errors
            leads[result.lead_id] = (key, lead)

        def all_settled(n: int = settled_after) -> bool:
            return len(done(ctx)) == n

        wait(f"{settled_after} settled", all_settled, 60)
    return leads


def done(ctx: WorkerContext) -> list[str]:
    return [lead for (lead, state) in deliveries(ctx) if state in ("delivered", "rejected")]


def test_events_a_wiped_redis_took_from_a_paused_upstream_app_come_again(
    relay: tuple[Relay, WorkerContext], upstream: UpstreamApp, redis_url: str
) -> None:
    """
    The app's worker is paused while 20 leads settle, so their events wait in
    Redis, each marked sent; Redis is wiped. The next flush finds the broker's
    epoch gone and sends every kept event again: the app, resumed, gets each
    lead's event once (the first copies went with the wipe).
    """
    processes, ctx = relay
    upstream.start_consumer()
    upstream.pause()
    processes.start_worker()
    processes.start_beat()
    Producer(ctx).submit_many("kuper-sys", [kuper_lead() for _ in range(20)])
    with redis.Redis.from_url(redis_url) as client:
        wait(
            "20 events waiting, each marked sent",
            lambda: client.llen(EVENTS_QUEUE) == 20 and not unsent(ctx),
            60,
        )
        client.flushdb()  # the broker's database (FLUSHALL would wipe others')
    upstream.resume()

    wait("every settlement received", lambda: set(deliveries(ctx)) <= set(upstream.received()), 60)
    received = upstream.received()
    assert len(received) == 20
    assert set(received) == set(deliveries(ctx))
    assert {r.times for r in received.values()} == {1}
