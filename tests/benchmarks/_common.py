"""What the benchmarks share: a fresh PostgreSQL database, a Redis database, timing."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import redis

from worker.ledger import migrate

PG_ADMIN = os.environ.get("LEADRELAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_BASE = os.environ.get("LEADRELAY_BENCH_REDIS", "redis://127.0.0.1:6379")


def fresh_database(name: str) -> str:
    """Drop and create database `name`, migrate it, return its URL."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    url = PG_ADMIN.rpartition("/")[0] + f"/{name}"
    migrate.upgrade(url)
    return url


def fresh_redis(db: int) -> str:
    url = f"{REDIS_BASE}/{db}"
    redis.Redis.from_url(url).flushdb()
    return url


@contextmanager
def timed(label: str, results: dict[str, float]) -> Iterator[None]:
    start = time.perf_counter()
    yield
    results[label] = time.perf_counter() - start
