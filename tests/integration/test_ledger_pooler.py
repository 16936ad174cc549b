"""
The ledger's engines behind PgBouncer in transaction pooling
(LEADRELAY_DATABASE_POOLER=transaction), against the real PostgreSQL through a
real pgbouncer of the test's own: no prepared statement, session state refused
before it is sent, migrations (CREATE INDEX CONCURRENTLY included) through it.
"""

from __future__ import annotations

import asyncio
import os
import typing
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import ProgrammingError

from tests.conftest import PG_ADMIN
from tests.pgbouncer import PgBouncer, running
from worker.errors import ConfigError
from worker.ledger import migrate
from worker.ledger.aio import make_async_engine
from worker.ledger.db import POOLER_VAR, Pooler, make_engine, pooler_setting
from worker.settings import Settings, load

#: psycopg's default: a query is prepared once a connection has run it this many times
PREPARE_THRESHOLD = 5


@pytest.fixture
def bouncer() -> Iterator[PgBouncer]:
    """One server connection for every client: whatever one client leaves there, the next finds."""
    with running(pool_size=1) as b:
        yield b


def run_often(engine: Engine, query: str, times: int = PREPARE_THRESHOLD + 2) -> None:
    """Run `query` past psycopg's threshold, one transaction each, on one pooled connection."""
    for _ in range(times):
        with engine.begin() as conn:
            conn.execute(text(query))


def two_engines(url: str, pooler: Pooler) -> tuple[Engine, Engine]:
    return make_engine(url, pooler=pooler, pool_size=1), make_engine(
        url, pooler=pooler, pool_size=1
    )


def test_without_the_setting_a_second_client_collides_with_the_first_ones_statement(
    ledger_url: str, bouncer: PgBouncer
) -> None:
    """The failure the setting exists for, and an error that says what to set."""
    first, second = two_engines(bouncer.via(ledger_url), "none")
    try:
        run_often(first, "SELECT count(*) FROM leads")  # prepared as _pg3_0 on the server
        with pytest.raises(ProgrammingError) as failed:
            run_often(second, "SELECT count(*) FROM deliveries")  # its own _pg3_0: taken
    finally:
        first.dispose()
        second.dispose()
    assert 'prepared statement "_pg3_0" already exists' in str(failed.value)
    assert f"set {POOLER_VAR}=transaction" in str(failed.value)


def test_with_the_setting_clients_sharing_a_server_connection_prepare_nothing(
    ledger_url: str, bouncer: PgBouncer
) -> None:
    first, second = two_engines(bouncer.via(ledger_url), "transaction")
    try:
        run_often(first, "SELECT count(*) FROM leads")
        run_often(second, "SELECT count(*) FROM deliveries")
        run_often(first, "SELECT count(*) FROM leads")
        with first.connect() as conn:
            raw = conn.connection.dbapi_connection
            assert isinstance(raw, psycopg.Connection)
            assert raw.prepare_threshold is None
    finally:
        first.dispose()
        second.dispose()
    with psycopg.connect(bouncer.via(ledger_url)) as conn:
        prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
    assert prepared == (0,)


def test_the_async_engine_prepares_nothing_either(ledger_url: str, bouncer: PgBouncer) -> None:
    async def go() -> list[int]:
        engines = [make_async_engine(bouncer.via(ledger_url), pooler="transaction") for _ in "ab"]
        try:
            for _ in range(PREPARE_THRESHOLD + 2):
                for engine in engines:
                    async with engine.begin() as conn:
                        await conn.execute(text("SELECT count(*) FROM leads"))
            async with engines[0].connect() as conn:
                rows = await conn.execute(text("SELECT count(*) FROM pg_prepared_statements"))
                return list(rows.scalars())
        finally:
            for engine in engines:
                await engine.dispose()

    assert asyncio.run(go()) == [0]


SESSION_STATE = [
    "SET statement_timeout = 1000",
    "set session search_path = public",
    "RESET statement_timeout",
    "SELECT pg_advisory_lock(42)",
    "SELECT pg_try_advisory_lock(42)",
    "LISTEN leads",
    "CREATE TEMP TABLE scratch (id int)",
    "PREPARE q AS SELECT 1",
]
TRANSACTION_SCOPED = [
    "SET LOCAL statement_timeout = 1000",
    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    "SELECT pg_advisory_xact_lock(42)",
    "UPDATE leads SET destination = destination WHERE false",
]


@pytest.mark.parametrize("statement", SESSION_STATE)
def test_behind_the_pooler_session_state_is_refused_before_it_is_sent(
    ledger_url: str, bouncer: PgBouncer, statement: str
) -> None:
    engine = make_engine(bouncer.via(ledger_url), pooler="transaction")
    try:
        with engine.connect() as conn, pytest.raises(ConfigError) as refused:
            conn.execute(text(statement))
    finally:
        engine.dispose()
    assert refused.value.key == POOLER_VAR
    assert "SET LOCAL" in str(refused.value)
    with psycopg.connect(ledger_url) as direct:  # nothing reached the server
        locks = direct.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        assert locks.fetchone() == (0,)


@pytest.mark.parametrize("statement", TRANSACTION_SCOPED)
def test_behind_the_pooler_transaction_scoped_forms_run(
    ledger_url: str, bouncer: PgBouncer, statement: str
) -> None:
    engine = make_engine(bouncer.via(ledger_url), pooler="transaction")
    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def test_directly_a_session_setting_is_allowed(ledger_url: str) -> None:
    engine = make_engine(ledger_url, pooler="none")
    try:
        with engine.connect() as conn:
            conn.execute(text(SESSION_STATE[0]))
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "1s"
    finally:
        engine.dispose()


@pytest.fixture
def fresh_database() -> Iterator[str]:
    name = f"leadrelay_pooler_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    yield f"{PG_ADMIN.rpartition('/')[0]}/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_migrations_run_through_the_pooler_concurrent_indexes_included(
    fresh_database: str, bouncer: PgBouncer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    `leadrelay db upgrade` through PgBouncer in transaction pooling: alembic's
    engine reads the setting too, and CREATE INDEX CONCURRENTLY (0005), run
    outside a transaction, is a transaction of its own to the pooler.
    """
    monkeypatch.setenv(POOLER_VAR, "transaction")
    pooled = bouncer.via(fresh_database)
    migrate.upgrade(pooled)
    migrate.require_current(pooled)
    with psycopg.connect(fresh_database) as direct:
        invalid = direct.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetchone()
        claim = direct.execute("SELECT to_regclass('ix_deliveries_claim')").fetchone()
    assert invalid == (0,)
    assert claim == ("ix_deliveries_claim",)


def test_the_setting_is_read_from_the_environment_and_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(POOLER_VAR, raising=False)
    assert pooler_setting() == "none"
    monkeypatch.setenv(POOLER_VAR, "transaction")
    assert pooler_setting() == "transaction"
    assert load(destinations={}).database_pooler == "transaction"
    monkeypatch.setenv(POOLER_VAR, "statement")  # statement pooling breaks transactions
    with pytest.raises(ConfigError) as engine_refused:
        pooler_setting()
    with pytest.raises(ConfigError) as settings_refused:
        load(destinations={})
    assert engine_refused.value.key == settings_refused.value.key == POOLER_VAR


def test_settings_and_the_engine_know_the_same_poolers() -> None:
    field = Settings.model_fields["database_pooler"].annotation
    assert typing.get_args(field) == typing.get_args(Pooler)
