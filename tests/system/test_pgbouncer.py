"""
The ledger behind PgBouncer in transaction pooling, with real processes: two
`celery worker`s of two processes each and beat, every one pointed at one
pgbouncer that lends them two server connections between them, deliver every
lead to Kuper once. Why the setting is needed, and the error that names it
without it, is shown deterministically in tests/integration/test_ledger_pooler.py
(one server connection for every client).

pgbouncer is Debian's package, run by the test on a free port; without it the
test fails (`.ci/run` installs it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from producers.client import Producer
from sandbox import kuper as kuper_sandbox
from sandbox import serve
from sandbox.common import SandboxState
from tests.factories import kuper_lead, kuper_table
from tests.pgbouncer import PgBouncer, running
from tests.system.conftest import Relay
from worker.delivery.context import WorkerContext, build
from worker.ledger.db import POOLER_VAR
from worker.ledger.tables import DeliveryRow
from worker.settings import load, parse_destinations

LEADS = 300
#: server connections pgbouncer lends the four worker processes and the producer
POOL_SIZE = 2
#: a psycopg statement missing or taken on the server connection the pooler lent
PREPARED_ERROR = 'prepared statement "_pg3_'


@pytest.fixture
def bouncer() -> Iterator[PgBouncer]:
    with running(pool_size=POOL_SIZE) as b:
        yield b


@pytest.fixture
def kuper() -> Iterator[tuple[str, SandboxState]]:
    """Kuper without deduplication: a lead sent twice is there twice."""
    app = kuper_sandbox.create_app(username="partner", password="kuper-secret-pw")
    with serve(app) as url:
        yield url, app.state  # type: ignore[attr-defined]


@pytest.fixture
def ctx_on(redis_url: str) -> Iterator[Callable[[str, dict[str, Any]], WorkerContext]]:
    """A producer's context on the ledger at a given URL."""
    opened: list[WorkerContext] = []

    def factory(url: str, tables: dict[str, Any]) -> WorkerContext:
        settings = load(
            database_url=url, broker_url=redis_url, destinations=parse_destinations(tables)
        )
        opened.append(build(settings))
        return opened[-1]

    yield factory
    for ctx in opened:
        ctx.close()


def counts(ctx: WorkerContext) -> dict[str, int]:
    with ctx.sessions() as s:
        rows = s.execute(select(DeliveryRow.state, func.count()).group_by(DeliveryRow.state))
        return {state: int(n) for state, n in rows}


def held_at_kuper(state: SandboxState) -> dict[str, int]:
    """How many candidates Kuper made per lead (source and phone)."""
    with state.lock:
        return {key: len(made) for key, made in state.store["candidates"].items()}


class PoolWatch:
    """
    What pgbouncer held for one database while the block ran, sampled: every
    client connection seen, the most server connections open at once, and
    the longest a client waited for one (seconds).
    """

    def __init__(self, bouncer: PgBouncer, database: str) -> None:
        self.bouncer, self.database = bouncer, database
        self.clients: set[tuple[str, int]] = set()
        self.servers = 0
        self.waited = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PoolWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            clients = self.bouncer.show("CLIENTS")
            servers = self.bouncer.show("SERVERS")
            pools = [p for p in self.bouncer.show("POOLS") if p["database"] == self.database]
            for pool in pools:
                self.waited = max(self.waited, pool["maxwait"] + pool["maxwait_us"] / 1e6)
            self.clients |= {
                (c["addr"], c["port"]) for c in clients if c["database"] == self.database
            }
            self.servers = max(self.servers, sum(s["database"] == self.database for s in servers))


def start(relay: Relay) -> None:
    relay.start_worker("w1", concurrency=2)
    relay.start_worker("w2", concurrency=2)
    relay.start_beat()


def test_workers_behind_pgbouncer_deliver_every_lead_once(
    relay_factory: Callable[..., Relay],
    ctx_on: Callable[[str, dict[str, Any]], WorkerContext],
    ledger_url: str,
    bouncer: PgBouncer,
    kuper: tuple[str, SandboxState],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, state = kuper
    tables = {"kuper-sys": kuper_table(url, batch_size=20, concurrency=4, rate=20, burst=4)}
    pooled = bouncer.via(ledger_url)
    relay = relay_factory(tables, database_url=pooled, database_pooler="transaction")
    start(relay)
    monkeypatch.setenv(POOLER_VAR, "transaction")  # the producer is behind the pooler too
    ctx = ctx_on(pooled, tables)
    database = pooled.rpartition("/")[2]
    with PoolWatch(bouncer, database) as watch:
        started = time.monotonic()
        Producer(ctx).submit_many("kuper-sys", [kuper_lead() for _ in range(LEADS)])
        deadline = started + 120
        while (now := counts(ctx)).get("delivered") != LEADS:
            assert time.monotonic() < deadline, f"not delivered in 120 s: {now}"
            time.sleep(0.3)
    with ctx.sessions() as s:
        flagged = s.scalar(select(func.count()).where(DeliveryRow.in_doubt))
    held = held_at_kuper(state)
    print(
        f"pgbouncer: {LEADS} leads delivered in {time.monotonic() - started:.1f} s by"
        f" {len(watch.clients)} client connections on at most {watch.servers} server"
        f" connections; longest wait for one {watch.waited * 1000:.0f} ms"
    )

    assert len(held) == LEADS and set(held.values()) == {1}, "a lead twice, or not at all"
    assert flagged == 0
    # the point of the pooler: more clients than server connections, every one shared
    assert watch.servers <= POOL_SIZE < len(watch.clients)
    for name in ("w1", "w2", "beat"):
        assert PREPARED_ERROR not in relay.log(name)
