"""
Redis going away while a request is at the platform costs no answer: the limiter's
release (and a learned rate's step) after the answer fail, are logged, and the
exchange still comes back with the platform's answer for the ledger. The slot
ends with its lease. A real redis-server of the test's own is killed mid-request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from tests.factories import kuper_table
from tests.system.test_chaos import RedisServer
from worker.delivery.context import WorkerContext
from worker.delivery.exchange import Exchange, Turn, call


@pytest.fixture
def limiter_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("rate", [5, "auto"], ids=["fixed", "learned"])
def test_redis_gone_while_the_request_is_out_keeps_the_answer(
    make_ctx: Callable[..., WorkerContext],
    limiter_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
    rate: object,
) -> None:
    table = kuper_table("http://127.0.0.1:9", rate=rate, burst=1)
    if rate == "auto":
        table |= {"rate_ceiling": 20, "rate_start": 10}
    ctx = make_ctx({"k": table}, redis_url=limiter_redis.url)

    def platform(_: httpx.Request) -> httpx.Response:
        limiter_redis.stop()  # the slot was granted; Redis dies while the platform answers
        return httpx.Response(200, json={"status": "ok"})

    http = httpx.Client(transport=httpx.MockTransport(platform))
    with http, caplog.at_level(logging.WARNING, logger="leadrelay.exchange"):
        got = call(
            Turn.at(replace(ctx, http=http), "k"),
            httpx.Request("POST", "http://127.0.0.1:9/import"),
            kind="send",
        )
    assert isinstance(got, Exchange)
    assert got.response is not None and got.response.status_code == 200
    assert not got.in_doubt
    away = [r for r in caplog.records if getattr(r, "event", "") == "limiter.away"]
    assert {getattr(r, "step", "") for r in away} >= {"release"}
