"""
The ledger from asyncio code: an `AsyncEngine` and `AsyncSession`s on psycopg's async driver.

The queries are the sync ones (`store.insert_leads`, `status.lead_status`), run
with `await session.run_sync(query, …)`: SQLAlchemy runs the sync function in a
greenlet, and each time it waits on the database the greenlet gives the event
loop back, so the I/O never blocks it. One copy of every query serves both.

PostgreSQL only. SQLite, the embedded default, has no async driver in our
stack (aiosqlite is not a dependency): `async_driver` says which URL has one,
and the async API runs the sync path in a thread for the others.

Only `producers.aio` imports this module, so a sync host never loads
`sqlalchemy.ext.asyncio`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from worker.ledger import status, store
from worker.ledger.db import (
    Pooler,
    connect_args,
    keep_primary_message,
    normalise_url,
    pooler_setting,
    refuse_session_state,
)

#: the URL prefix of the one driver here that speaks asyncio (psycopg 3: AsyncConnection)
ASYNC_PREFIX = "postgresql+psycopg://"


def async_driver(url: str) -> bool:
    """True when the ledger at `url` can be reached without a thread (PostgreSQL via psycopg)."""
    return normalise_url(url).startswith(ASYNC_PREFIX)


def make_async_engine(url: str, *, pooler: Pooler | None = None, **kwargs: Any) -> AsyncEngine:
    """
    An async engine for the PostgreSQL ledger at `url`, pooled as `db.make_engine` pools.

    Its connections belong to the event loop that opened them: one engine per loop.
    Its errors show no parameters and no server detail, and behind a transaction
    pooler (`pooler`; None: LEADRELAY_DATABASE_POOLER) it prepares no statement
    and refuses session state, as `db.make_engine`'s.
    """
    if not async_driver(url):
        raise ValueError("only a PostgreSQL ledger (psycopg) has an async driver here")
    pooler = pooler_setting() if pooler is None else pooler
    kwargs = {"pool_size": 5, "max_overflow": 5, **kwargs, "hide_parameters": True}
    kwargs["connect_args"] = connect_args(pooler, kwargs.get("connect_args"))
    engine = create_async_engine(normalise_url(url), pool_pre_ping=True, **kwargs)
    keep_primary_message(engine.sync_engine)  # as the sync engine: no value in an error's text
    if pooler == "transaction":
        refuse_session_state(engine.sync_engine)
    return engine


def make_async_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Async sessions on the ledger; like the sync ones, a commit expires nothing."""
    return async_sessionmaker(engine, expire_on_commit=False)


@dataclass
class AsyncLedger:
    """The ledger's engine and sessions on one event loop, and the queries the async API runs."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    @classmethod
    def open(cls, url: str, pooler: Pooler | None = None) -> AsyncLedger:
        """
        Pooled async access to the PostgreSQL ledger at `url` (nothing connects yet);
        `pooler` as `make_async_engine` reads it.
        """
        engine = make_async_engine(url, pooler=pooler)
        return cls(engine, make_async_sessionmaker(engine))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncIntake]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        async with self.sessions.begin() as session:
            yield AsyncIntake(session)

    async def lead_status(self, lead_id: str) -> status.LeadSeen | None:
        async with self.sessions() as session:
            return await session.run_sync(status.lead_status, lead_id)

    async def lead_status_by_key(self, destination: str, key: str) -> status.LeadSeen | None:
        async with self.sessions() as session:
            return await session.run_sync(status.lead_status_by_key, destination, key)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


@dataclass
class AsyncIntake:
    """The intake's writes inside one transaction of `AsyncLedger.transaction`."""

    session: AsyncSession

    async def insert_leads(
        self, leads: Sequence[store.NewLead], now: datetime
    ) -> list[tuple[str, bool]]:
        """`store.insert_leads` on the async driver: (lead id, created) in input order."""
        return await self.session.run_sync(store.insert_leads, leads, now)
