"""
Per-process resources, opened when a worker process starts and closed when it stops.

One pooled `httpx.Client`, one engine and sessionmaker, one Redis client and
the limiter built on it. Functions take the context they are given; only
`worker.runtime.app`, the CLI and tests open one.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from worker import redis_urls
from worker.delivery.limiter import Limiter, MemoryCache, MemoryLimiter, RedisCache, RedisLimiter
from worker.ledger.db import make_engine, make_sessionmaker
from worker.platforms.base import KeyValueCache
from worker.settings import Settings, secret_values

log = logging.getLogger("leadrelay.context")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class WorkerContext:
    """Everything a task needs to talk to the ledger, Redis and the platforms."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    http: httpx.Client
    limiter: Limiter
    cache: KeyValueCache
    redis: redis.Redis[bytes] | None = None
    clock: Callable[[], datetime] = utcnow
    rand: Callable[[], float] = random.random
    secrets: tuple[str, ...] = field(default=())

    def close(self) -> None:
        self.http.close()
        self.engine.dispose()
        if self.redis is not None:
            self.redis.close()


def http_client() -> httpx.Client:
    """The process's pooled client; each request sets the destination's own timeout."""
    return httpx.Client(
        timeout=httpx.Timeout(10.0, connect=3.0),
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        headers={"User-Agent": "leadrelay/0.1"},
        follow_redirects=False,
    )


def build(settings: Settings, *, shared: bool = True) -> WorkerContext:
    """A context from settings; `shared=False` keeps the limiter in memory (the demo only)."""
    engine = make_engine(settings.database_url, pooler=settings.database_pooler)
    client: redis.Redis[bytes] | None = None
    limiter: Limiter
    cache: KeyValueCache
    if shared:
        client = redis_urls.client(
            settings.limiter_url,
            settings.redis_master_name,
            socket_timeout=5,
            health_check_interval=30,
        )
        limiter, cache = RedisLimiter(client), RedisCache(client)
    else:
        limiter, cache = MemoryLimiter(), MemoryCache()
    return WorkerContext(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        http=http_client(),
        limiter=limiter,
        cache=cache,
        redis=client,
        secrets=tuple(secret_values(settings)),
    )


_current: WorkerContext | None = None


def open(settings: Settings) -> WorkerContext:
    """Open this process's context (Celery's worker_process_init)."""
    global _current
    if _current is None:
        from worker.ops import logs

        logs.configure(settings.log_level, settings.log_format, secret_values(settings))
        _current = build(settings)
    return _current


def current() -> WorkerContext:
    """This process's context, opening it from the settings when a task runs first."""
    if _current is None:
        from worker.settings import get_settings

        return open(get_settings())
    return _current


def install(ctx: WorkerContext | None) -> None:
    """Use `ctx` as this process's context (the demo's in-process worker, tests)."""
    global _current
    _current = ctx


def close() -> None:
    global _current
    if _current is not None:
        _current.close()
        _current = None
