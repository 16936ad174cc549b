"""
Shared fixtures: the real PostgreSQL and Redis, settings, a worker context.

Tests that touch a database or a broker use the real servers (`.ci/run` starts
them): PostgreSQL at LEADRELAY_TEST_PG (a database `leadrelay_test_<pid>` is made
fresh per session, migrated, truncated before each test, dropped at the end) and Redis at
LEADRELAY_TEST_REDIS (database 15, flushed before each test).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from worker.delivery.context import WorkerContext, build
from worker.ledger import migrate
from worker.ledger.db import make_engine, make_sessionmaker
from worker.settings import Settings, load, parse_destinations

PG_ADMIN = os.environ.get("LEADRELAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
#: one database per test session, so two sessions on one server never drop each other's
TEST_DB = f"leadrelay_test_{os.getpid()}"
REDIS_URL = os.environ.get("LEADRELAY_TEST_REDIS", "redis://127.0.0.1:6379/15")
TABLES = ("attempt_results", "attempts", "deliveries", "leads", "refusals", "pauses", "outbox")


def _pg_url(dbname: str) -> str:
    base, _, _ = PG_ADMIN.rpartition("/")
    return f"{base}/{dbname}"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A freshly created and migrated PostgreSQL database for this test session, dropped after."""
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.exit(f"PostgreSQL is not reachable at {PG_ADMIN} (.ci/run starts it): {exc}", 2)
    with admin:
        admin.execute(f"DROP DATABASE IF EXISTS {TEST_DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {TEST_DB}")
    url = _pg_url(TEST_DB)
    migrate.upgrade(url)
    yield url
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {TEST_DB} WITH (FORCE)")


@pytest.fixture
def ledger_url(pg_url: str) -> str:
    """The session's database, emptied for this test."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    return pg_url


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A ledger with no schema yet: a PostgreSQL database of its own, or a SQLite file."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.db"
        return
    with scratch_database(f"leadrelay_test_empty_{os.getpid()}") as url:
        yield url


@contextmanager
def scratch_database(name: str) -> Iterator[str]:
    """An empty PostgreSQL database `name` (no schema), created anew; dropped after."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    yield _pg_url(name)
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["postgresql", "sqlite"])
def ledger_sessions(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[sessionmaker[Session]]:
    """Sessions on the test PostgreSQL (emptied) or on a fresh, migrated SQLite file."""
    if request.param == "postgresql":
        url = request.getfixturevalue("ledger_url")
    else:
        url = f"sqlite:///{tmp_path}/ledger.db"
        migrate.upgrade(url)
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """Redis database 15, flushed for this test."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:
        pytest.exit(f"Redis is not reachable at {REDIS_URL} (.ci/run starts it): {exc}", 2)
    yield REDIS_URL
    client.close()


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(ledger_url: str, redis_url: str) -> SettingsFactory:
    """Settings on the test PostgreSQL and Redis, with the given destination tables."""

    def factory(destinations: dict[str, dict[str, Any]], **overrides: Any) -> Settings:
        return load(
            database_url=ledger_url,
            broker_url=redis_url,
            destinations=parse_destinations(destinations),
            **overrides,
        )

    return factory


@pytest.fixture
def make_ctx(make_settings: SettingsFactory) -> Iterator[Callable[..., WorkerContext]]:
    """A worker context (shared Redis limiter) for the given destination tables."""
    opened: list[WorkerContext] = []

    def factory(destinations: dict[str, dict[str, Any]], **overrides: Any) -> WorkerContext:
        ctx = build(make_settings(destinations, **overrides))
        opened.append(ctx)
        return ctx

    yield factory
    for ctx in opened:
        ctx.close()
