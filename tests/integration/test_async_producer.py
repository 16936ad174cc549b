"""
`asubmit` / `asubmit_many` beside `submit` / `submit_many`: the same cases through
both APIs, on a real PostgreSQL (psycopg's async driver) and on SQLite (the sync
path in a thread); wake-ups on a real Redis; and the proof that the event loop
is never held: its longest stall while 10,000 leads go in.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
import redis

import producers
from producers import aio
from producers.aio import AsyncProducer
from producers.client import Producer, celery_waker
from tests.factories import kuper_lead, kuper_table
from tests.stalls import Stalls, watch
from worker.errors import FieldError, LeadInvalid, UnknownDestination
from worker.intake import Accepted, Submission
from worker.ledger import migrate
from worker.settings import Settings, get_settings, load, parse_destinations

T = TypeVar("T")
#: the event loop's longest tolerated stall during `asubmit_many` of 10,000 leads
MAX_STALL_S = 0.050


class SyncApi:
    """The sync API, called as upstream code calls it."""

    name = "sync"

    def __init__(self, settings: Settings) -> None:
        self.producer = Producer.from_settings(settings, waker=None)

    def submit(self, destination: str, lead: Any, key: str | None = None) -> str:
        return self.producer.submit(destination, lead, key)

    def submit_many(self, destination: str, leads: Sequence[Any]) -> list[Accepted]:
        return self.producer.submit_many(destination, leads)

    def close(self) -> None:
        self.producer.close()


class AsyncApi:
    """The async API: each call in its own event loop, with a producer of that loop."""

    name = "async"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def run(self, call: Callable[[AsyncProducer], Awaitable[T]]) -> T:
        async def once() -> T:
            async with AsyncProducer(self.settings, waker=None) as producer:
                return await call(producer)

        return asyncio.run(once())

    def submit(self, destination: str, lead: Any, key: str | None = None) -> str:
        return self.run(lambda p: p.submit(destination, lead, key))

    def submit_many(self, destination: str, leads: Sequence[Any]) -> list[Accepted]:
        return self.run(lambda p: p.submit_many(destination, leads))

    def close(self) -> None:
        """Nothing is held between calls: each opened and closed its own producer."""


Api = SyncApi | AsyncApi


def sqlite_settings(tmp_path: Path, redis_url: str) -> Settings:
    url = f"sqlite:///{tmp_path}/ledger.db"
    migrate.upgrade(url)
    return load(
        database_url=url,
        broker_url=redis_url,
        destinations=parse_destinations({"kuper": kuper_table("http://127.0.0.1:9")}),
    )


@pytest.fixture(params=["postgresql", "sqlite"])
def settings(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str) -> Settings:
    """A Kuper destination (never sent to here) on either ledger."""
    if request.param == "sqlite":
        return sqlite_settings(tmp_path, redis_url)
    make_settings = request.getfixturevalue("make_settings")
    result: Settings = make_settings({"kuper": kuper_table("http://127.0.0.1:9")})
    return result


@pytest.fixture(params=[SyncApi, AsyncApi], ids=["sync", "async"])
def api(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Api]:
    made: Api = request.param(settings)
    yield made
    made.close()


def ledger_counts(settings: Settings) -> tuple[int, int]:
    """(leads, deliveries) in the ledger."""
    from sqlalchemy import func, select

    from worker.ledger.db import make_engine
    from worker.ledger.tables import DeliveryRow, LeadRow

    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            leads = conn.scalar(select(func.count()).select_from(LeadRow))
            deliveries = conn.scalar(select(func.count()).select_from(DeliveryRow))
    finally:
        engine.dispose()
    return int(leads or 0), int(deliveries or 0)


# ---------------------------------------------------------------- the same cases, both APIs


def test_results_come_in_input_order_and_a_refusal_stops_no_good_lead(
    api: Api, settings: Settings
) -> None:
    leads = [kuper_lead(), kuper_lead(phone="12"), kuper_lead(), kuper_lead(vacancy_id="x")]
    results = api.submit_many("kuper", leads)
    assert [r.ok for r in results] == [True, False, True, False]
    assert [r.created for r in results] == [True, False, True, False]
    assert [e.field for e in results[1].errors] == ["phone"]
    assert [e.field for e in results[3].errors] == ["vacancy_id"]
    assert len({r.lead_id for r in results if r.ok}) == 2
    assert ledger_counts(settings) == (2, 2)


def test_the_same_key_gives_the_same_id_and_one_lead(api: Api, settings: Settings) -> None:
    first = api.submit("kuper", kuper_lead(), "order-1781")
    again = api.submit("kuper", kuper_lead(), "order-1781")
    within = api.submit_many(
        "kuper", [Submission(kuper_lead(), "order-9"), Submission(kuper_lead(), "order-9")]
    )
    assert again == first
    assert within[0].lead_id == within[1].lead_id
    assert [r.created for r in within] == [True, False]
    assert ledger_counts(settings) == (2, 2)


def test_a_bad_lead_raises_leadinvalid_naming_every_field(api: Api, settings: Settings) -> None:
    bad = kuper_lead(phone="12", city_id="x", utm={})
    with pytest.raises(LeadInvalid) as caught:
        api.submit("kuper", bad)
    fields = {e.field for e in caught.value.errors}
    assert {"phone", "city_id", "utm.utm_source"} <= fields
    assert "12" not in str(caught.value)  # the rule is named, never the value
    assert ledger_counts(settings) == (0, 0)


def test_a_bad_idempotency_key_is_a_field_error(api: Api, settings: Settings) -> None:
    with pytest.raises(LeadInvalid) as caught:
        api.submit("kuper", kuper_lead(), "k" * 201)
    assert [e.field for e in caught.value.errors] == ["idempotency_key"]
    assert ledger_counts(settings) == (0, 0)


def test_an_unknown_destination_refuses_the_whole_call(api: Api, settings: Settings) -> None:
    with pytest.raises(UnknownDestination, match="'nowhere' is not configured"):
        api.submit_many("nowhere", [kuper_lead()])
    assert ledger_counts(settings) == (0, 0)


def test_both_apis_give_the_same_errors_for_the_same_leads(settings: Settings) -> None:
    leads = [kuper_lead(phone="12", vacancy_id=-1), "not a lead", {"phone": 7}, kuper_lead()]
    sync_api, async_api = SyncApi(settings), AsyncApi(settings)
    try:
        by_sync = sync_api.submit_many("kuper", leads)
        by_async = async_api.submit_many("kuper", leads)
    finally:
        sync_api.close()
    assert [r.errors for r in by_async] == [r.errors for r in by_sync]
    assert by_async[1].errors == (FieldError("lead", "must be a JSON object"),)
    assert [r.ok for r in by_async] == [False, False, False, True]


def test_many_chunks_keep_their_order(api: Api, settings: Settings) -> None:
    """More leads than one write chunk, refusals spread through them, keys repeated."""
    subs: list[Submission] = []
    for i in range(2500):
        lead = kuper_lead(phone="1") if i % 7 == 3 else kuper_lead()
        subs.append(Submission(lead, f"k{i % 2000}" if i % 5 == 0 else None))
    results = api.submit_many("kuper", subs)
    assert [r.ok for r in results] == [i % 7 != 3 for i in range(2500)]
    by_key: dict[str, str | None] = {}
    for sub, r in zip(subs, results, strict=True):
        if sub.idempotency_key and r.ok:
            assert by_key.setdefault(sub.idempotency_key, r.lead_id) == r.lead_id
    stored = sum(r.created for r in results)
    assert ledger_counts(settings) == (stored, stored)


# ---------------------------------------------------------------- the async API itself


def test_the_ledger_decides_the_path(settings: Settings) -> None:
    producer = AsyncProducer(settings, waker=None)
    try:
        assert producer.threaded == settings.database_url.startswith("sqlite")
    finally:
        producer.close()


def test_asubmit_many_wakes_the_destination_as_submit_many_does(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    """120 new leads, batches of 50, concurrency 2: two wake-ups on deliver.kuper, both ways."""
    settings = make_settings({"kuper": kuper_table("http://127.0.0.1:9", concurrency=2)})
    broker = redis.Redis.from_url(redis_url)
    sync = Producer.from_settings(settings, waker=celery_waker)
    try:
        sync.submit_many("kuper", [kuper_lead() for _ in range(120)])
        by_sync = broker.llen("deliver.kuper")
        broker.delete("deliver.kuper")

        async def go() -> None:
            async with AsyncProducer(settings, waker=celery_waker) as producer:
                await producer.submit_many("kuper", [kuper_lead() for _ in range(120)])

        asyncio.run(go())
        by_async = broker.llen("deliver.kuper")
        message = json.loads(broker.lpop("deliver.kuper") or b"{}")
    finally:
        sync.close()
        broker.close()
    assert by_sync == by_async == 2
    assert message["headers"]["task"] == "leadrelay.deliver"


def test_a_cancelled_call_accepts_none_of_its_leads(
    make_settings: Callable[..., Settings],
) -> None:
    """Cancelled while its chunks are being written: the transaction rolls back whole."""
    settings = make_settings({"kuper": kuper_table("http://127.0.0.1:9")})
    leads = [kuper_lead() for _ in range(10_000)]

    async def go() -> tuple[bool, str]:
        async with AsyncProducer(settings, waker=None) as producer:
            call = asyncio.create_task(producer.submit_many("kuper", leads))
            while not writing_now(settings):  # until its first chunk is written
                await asyncio.sleep(0.002)
            assert not call.done()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            return call.cancelled(), await producer.submit("kuper", kuper_lead())

    cancelled, after = asyncio.run(go())
    assert cancelled and after
    assert ledger_counts(settings) == (1, 1)  # only the lead submitted after


def writing_now(settings: Settings) -> bool:
    """Whether another connection holds a transaction that has written (an xid given)."""
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
        ).fetchone()
    return row is not None and row[0] > 0


def test_the_module_functions_use_a_producer_per_event_loop(
    ledger_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "leadrelay.toml"
    config.write_text(
        '[destinations.kuper]\nplatform = "kuper"\nbase_url = "http://127.0.0.1:9"\n'
        'username = "partner"\npassword = "pw-from-file"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("LEADRELAY_DATABASE_URL", ledger_url)
    monkeypatch.setenv("LEADRELAY_BROKER_URL", redis_url)
    monkeypatch.setenv("LEADRELAY_CONFIG", str(config))
    monkeypatch.setattr(aio, "_defaults", {})
    get_settings.cache_clear()
    try:
        first = asyncio.run(aio.asubmit("kuper", kuper_lead(), idempotency_key="order-1"))
        # a second asyncio.run: a new loop, so a new producer; the first one is closed
        results = asyncio.run(aio.asubmit_many("kuper", [kuper_lead(), {"phone": 1}]))
        seen = asyncio.run(aio.astatus(first))
        by_key = asyncio.run(aio.astatus_by_key("kuper", "order-1"))
        assert len(aio._defaults) == 1
        asyncio.run(next(iter(aio._defaults.values())).aclose())
    finally:
        get_settings.cache_clear()
    assert [r.ok for r in results] == [True, False]
    assert seen is not None and by_key == seen and seen.lead_id == first


def test_import_producers_loads_no_asyncio_sqlalchemy_until_an_async_name_is_used() -> None:
    code = (
        "import sys\n"
        "def loaded(prefix):\n"
        "    return any(m == prefix or m.startswith(prefix + '.') for m in sys.modules)\n"
        "import producers\n"
        "print(loaded('sqlalchemy'), loaded('worker'))\n"
        "producers.submit, producers.status, producers.LeadStatus\n"
        "print(loaded('sqlalchemy'), loaded('sqlalchemy.ext.asyncio'), loaded('producers.aio'))\n"
        "f = producers.asubmit_many\n"
        "print(loaded('sqlalchemy.ext.asyncio'), f.__module__)\n"
        "print(sorted(set(producers.__all__) - set(dir(producers))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert out == ["False False", "True False False", "True producers.aio", "[]"]


def test_every_public_name_resolves() -> None:
    for name in producers.__all__:
        assert getattr(producers, name) is not None
    assert producers.AsyncProducer is AsyncProducer
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        producers.nothing  # noqa: B018


# ---------------------------------------------------------------- the event loop stays free


async def submit_watched(
    settings: Settings, leads: Sequence[dict[str, Any]]
) -> tuple[list[Accepted], Stalls, float]:
    """`asubmit_many` of `leads` (wake-ups published), watched; the results, stalls, seconds."""
    async with AsyncProducer(settings, waker=celery_waker) as producer:
        await producer.status("warm-up")  # the pool's first connection
        started = time.perf_counter()
        results, stalls = await watch(producer.submit_many("kuper", leads))
        return results, stalls, time.perf_counter() - started


def test_10000_leads_never_hold_the_event_loop_50_ms(
    make_settings: Callable[..., Settings], ledger_url: str
) -> None:
    """
    As a long-running server runs: its start-up objects frozen (gc.freeze()), so
    the collector scans what requests make, not every module and fixture.
    """
    settings = make_settings({"kuper": kuper_table("http://127.0.0.1:9")})
    gc.freeze()
    try:
        leads = [kuper_lead() for _ in range(10_000)]
        results, stalls, took = asyncio.run(submit_watched(settings, leads))
    finally:
        gc.unfreeze()

    async def sync_on_the_loop() -> Stalls:
        sync = Producer.from_settings(settings, waker=None)
        try:
            return (await watch(on_loop(sync.submit_many, "kuper", leads)))[1]
        finally:
            sync.close()

    blocked = asyncio.run(sync_on_the_loop())
    print(
        f"\nasubmit_many, 10,000 leads to PostgreSQL in {took:.2f} s "
        f"({len(results) / took:,.0f} leads/s): longest event-loop stall "
        f"{stalls.longest_s * 1000:.1f} ms (longest collection {stalls.longest_gc_s * 1000:.1f} ms)"
        f"; submit_many called on the loop holds it {blocked.longest_s * 1000:.0f} ms"
    )
    assert all(r.created for r in results)
    with psycopg.connect(ledger_url) as conn:
        assert conn.execute("SELECT count(*) FROM leads").fetchone() == (20_000,)
    assert stalls.longest_s < MAX_STALL_S


def test_with_nothing_frozen_only_the_collector_stalls_the_loop_longer(
    make_settings: Callable[..., Settings],
) -> None:
    """
    With pytest's heap unfrozen, a full collection (it scans every object of the
    process, whoever made it) is the one pause over a few ms: the code's own is not.
    """
    settings = make_settings({"kuper": kuper_table("http://127.0.0.1:9")})
    leads = [kuper_lead() for _ in range(10_000)]
    results, stalls, took = asyncio.run(submit_watched(settings, leads))
    print(
        f"\nasubmit_many, 10,000 leads, nothing frozen, in {took:.2f} s: longest stall "
        f"{stalls.longest_s * 1000:.1f} ms; less the collector's pauses "
        f"{stalls.longest_but_gc_s * 1000:.1f} ms; longest collection "
        f"{stalls.longest_gc_s * 1000:.1f} ms ({len(gc.get_objects()):,} objects tracked)"
    )
    assert all(r.created for r in results)
    assert stalls.longest_but_gc_s < MAX_STALL_S


async def on_loop(call: Callable[..., T], *args: Any) -> T:
    """A sync call made from a coroutine, as a careless handler would make it."""
    return call(*args)
