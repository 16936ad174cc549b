"""
The producer API for asyncio apps (FastAPI, aiohttp, …): `asubmit`, `asubmit_many`, `astatus`.

    from producers import asubmit, astatus

    lead_id = await asubmit("kuper-main", lead, idempotency_key="order-1781")
    seen = await astatus(lead_id)

The same rules as the sync API (`producers.client`): a lead is validated by
its platform's rules, committed to the ledger in one transaction with the
others of its call, and only then accepted; the same idempotency key gives the
same id; a bad lead is `LeadInvalid` naming every field; an unknown
destination is `UnknownDestination`; results come in input order.

What keeps the event loop free, on a PostgreSQL ledger:

* the ledger's writes run on psycopg's async driver: the sync queries of
  `worker.ledger` under `AsyncSession.run_sync` (`worker.ledger.aio`), which
  give the loop back at every wait on the database;
* validation (Python, about 6.5 µs a lead) runs in slices of at most
  `SLICE_S` (0.5 ms, under the median broker publish we measured), with the
  loop served between slices; while one chunk of `WRITE_CHUNK` leads is
  written, the next is validated, as the sync intake overlaps them with a
  thread. SQLAlchemy's own work on a chunk of 250 (parameters, JSON) holds
  the loop up to about 4 ms between two waits on the database;
* the wake-up publish after the commit runs in a thread (`asyncio.to_thread`):
  kombu's Redis client blocks, about 0.5 ms a publish once connected (5 ms at
  the slowest), 15–20 ms for the first, which opens the connection.

Measured (tests/benchmarks/bench_async.py, a shared 2-core machine): 10,000
leads stall the loop 8–10 ms at the longest on a quiet machine, 12–25 ms on
a busy one; a warm broker publish takes 0.6–1 ms (p99 1–4.5 ms), the first
one 18–46 ms. Smaller chunks (100) did not shorten the longest stall
measurably and cost a fifth of the throughput.

A full collection of CPython's garbage collector scans every object of the
process, whoever made it, and stalls any loop for as long (60–70 ms in a
test process); a server that calls `gc.freeze()` once it has started keeps
those pauses to what its requests allocate.

A SQLite ledger (the embedded default) has no async driver in our stack:
there the sync API runs whole in a worker thread (`asyncio.to_thread`), which
keeps the loop free but holds the GIL while it validates.

Keep one `AsyncProducer` per event loop (a connection belongs to the loop that
opened it); the module-level functions use one per loop, built from the
environment on first use.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

from producers.client import Producer, Waker, celery_waker
from producers.lead_status import LeadStatus, lead_status, lead_status_by_key
from worker import intake, ledger
from worker.errors import LeadInvalid
from worker.intake import Accepted, Submission
from worker.ledger.aio import AsyncIntake, AsyncLedger, async_driver
from worker.settings import Settings, get_settings, secret_values

#: the longest the loop runs validation without serving its other tasks (seconds)
SLICE_S = 0.0005
#: leads per ledger write; the next chunk is validated while one is written
WRITE_CHUNK = 250


class AsyncProducer:
    """
    Submits leads and reads their status from asyncio code, never blocking the event loop.

    Built from settings like `Producer`; use it as `async with`, or call `aclose()`
    (or `close()` from sync code with no loop running). On a PostgreSQL ledger it
    holds a pool of async connections, which belongs to the event loop that opens
    it, and a sync `Producer` for its wake-ups only; on SQLite, which has no async
    driver here, every call runs that sync `Producer` in a thread.

    A call cancelled mid-way (a client that went away) rolls its transaction back:
    none of its leads is accepted, as if it had never been made.
    """

    def __init__(self, settings: Settings, waker: Waker | None = celery_waker) -> None:
        self.settings = settings
        #: the sync producer: the whole path on SQLite; on PostgreSQL, only its wake-ups
        #: (its own engine never connects there)
        self.sync = Producer.from_settings(settings, waker)
        self._ledger: AsyncLedger | None = None
        if async_driver(settings.database_url):
            self._ledger = AsyncLedger.open(settings.database_url, settings.database_pooler)

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, waker: Waker | None = celery_waker
    ) -> AsyncProducer:
        return cls(settings or get_settings(), waker)

    @property
    def threaded(self) -> bool:
        """True when this ledger has no async driver (SQLite) and calls run in a thread."""
        return self._ledger is None

    async def submit(
        self,
        destination: str,
        lead: Mapping[str, Any],
        idempotency_key: str | None = None,
    ) -> str:
        """Accept one lead; returns its id, or raises LeadInvalid naming every broken field."""
        result = (await self.submit_many(destination, [Submission(lead, idempotency_key)]))[0]
        if result.lead_id is None:
            raise LeadInvalid(result.errors)
        return result.lead_id

    async def submit_many(
        self,
        destination: str,
        leads: Iterable[Submission | Mapping[str, Any]],
        *,
        source: str = "api",
    ) -> list[Accepted]:
        """Accept many leads in one transaction; a refused lead does not stop the good ones."""
        if self._ledger is None:
            subs = [x if isinstance(x, Submission) else Submission(x) for x in leads]
            return await asyncio.to_thread(self.sync.submit_many, destination, subs, source=source)
        results = await self._accept(self._ledger, destination, list(leads), source)
        if any(r.created for r in results):
            # kombu's Redis client blocks: about 0.5 ms a publish, 15-20 ms for the first
            await asyncio.to_thread(self.sync.wake, destination, results)
        return results

    async def status(self, lead_id: str) -> LeadStatus | None:
        """Where the lead with our id `lead_id` stands; None if the ledger holds no such lead."""
        if self._ledger is None:
            return await asyncio.to_thread(lead_status, self.sync.ctx, lead_id)
        seen = await self._ledger.lead_status(lead_id)
        return None if seen is None else LeadStatus.from_seen(seen, secret_values(self.settings))

    async def status_by_key(self, destination: str, key: str) -> LeadStatus | None:
        """Where the lead submitted to `destination` with idempotency key `key` stands, or None."""
        if self._ledger is None:
            ctx = self.sync.ctx
            return await asyncio.to_thread(lead_status_by_key, ctx, destination, key)
        seen = await self._ledger.lead_status_by_key(destination, key)
        return None if seen is None else LeadStatus.from_seen(seen, secret_values(self.settings))

    async def aclose(self) -> None:
        """Close the ledger's connections (and, on SQLite, the sync producer's resources)."""
        if self._ledger is not None:
            await self._ledger.dispose()
        await asyncio.to_thread(self.sync.close)

    def close(self) -> None:
        """`aclose()` for sync code (an atexit hook); inside a running loop, await `aclose()`."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self.aclose())
            return
        raise RuntimeError("an event loop is running: await AsyncProducer.aclose() instead")

    async def __aenter__(self) -> AsyncProducer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _accept(
        self,
        async_ledger: AsyncLedger,
        destination: str,
        leads: Sequence[Submission | Mapping[str, Any]],
        source: str,
    ) -> list[Accepted]:
        """`intake.accept` on the async driver: validate in slices, write chunk by chunk."""
        self.settings.destination(destination)  # an unknown destination refuses the whole call
        now = self.sync.ctx.clock()
        results: list[Accepted] = []
        async with async_ledger.transaction() as tx:
            writing: asyncio.Task[list[Accepted]] | None = None
            try:
                for start in range(0, len(leads), WRITE_CHUNK):
                    part = leads[start : start + WRITE_CHUNK]
                    chunk = await self._prepare(destination, part, source)
                    if writing is not None:
                        results += await writing
                    writing = asyncio.create_task(_write(tx, chunk, now))
                if writing is not None:
                    results += await writing
            finally:
                if writing is not None and not writing.done():
                    writing.cancel()  # cancelled or failed mid-way: the transaction rolls back
                    await asyncio.wait([writing])
        return results

    async def _prepare(
        self, destination: str, leads: Sequence[Submission | Mapping[str, Any]], source: str
    ) -> list[ledger.NewLead | LeadInvalid]:
        """Validate `leads`, giving the loop back every SLICE_S of work."""
        out: list[ledger.NewLead | LeadInvalid] = []
        # Hand-sliced: asyncio has no cooperative "run this CPU loop in time slices" helper,
        # and a thread would hold the GIL for as long (and validation is 6.5 µs a lead).
        deadline = time.perf_counter() + SLICE_S
        for item in leads:
            sub = item if isinstance(item, Submission) else Submission(item)
            try:
                out.append(intake.prepare(self.settings, destination, sub, source))
            except LeadInvalid as exc:
                out.append(exc)
            if time.perf_counter() >= deadline:
                await asyncio.sleep(0)
                deadline = time.perf_counter() + SLICE_S
        return out


async def _write(
    tx: AsyncIntake, chunk: Sequence[ledger.NewLead | LeadInvalid], now: datetime
) -> list[Accepted]:
    """Store a chunk's good leads; each lead's result, in the chunk's order."""
    good = [p for p in chunk if isinstance(p, ledger.NewLead)]
    ids = iter(await tx.insert_leads(good, now) if good else [])
    out: list[Accepted] = []
    for item in chunk:
        if isinstance(item, LeadInvalid):
            out.append(Accepted(None, False, item.errors))
        else:
            lead_id, created = next(ids)
            out.append(Accepted(lead_id, created))
    return out


_defaults: dict[asyncio.AbstractEventLoop, AsyncProducer] = {}


async def default() -> AsyncProducer:
    """
    The running event loop's producer, built from the environment on first use.

    A producer from a loop that has since closed (a second `asyncio.run`) is closed
    and replaced: its connections belonged to that loop.
    """
    loop = asyncio.get_running_loop()
    for old_loop in [x for x in list(_defaults) if x.is_closed()]:
        old = _defaults.pop(old_loop, None)  # another thread's loop may have taken it
        if old is not None:
            await old.aclose()
    producer = _defaults.get(loop)
    if producer is None:
        producer = _defaults[loop] = AsyncProducer.from_settings()
    return producer


async def asubmit(
    destination: str, lead: Mapping[str, Any], *, idempotency_key: str | None = None
) -> str:
    """
    Accept one lead for `destination`; returns its id, or raises LeadInvalid.

    PostgreSQL: the async driver; SQLite: the sync path in a thread.
    """
    return await (await default()).submit(destination, lead, idempotency_key)


async def asubmit_many(
    destination: str, leads: Iterable[Submission | Mapping[str, Any]]
) -> list[Accepted]:
    """
    Accept many leads in one transaction; each result holds the id, or the field errors
    of a refused lead, in input order. PostgreSQL: the async driver, validation in slices
    that give the loop back; SQLite: the sync path in a thread.
    """
    return await (await default()).submit_many(destination, leads)


async def astatus(lead_id: str) -> LeadStatus | None:
    """Where the lead with our id `lead_id` stands, or None if the ledger holds no such lead."""
    return await (await default()).status(lead_id)


async def astatus_by_key(destination: str, key: str) -> LeadStatus | None:
    """Where the lead submitted to `destination` with idempotency key `key` stands, or None."""
    return await (await default()).status_by_key(destination, key)
