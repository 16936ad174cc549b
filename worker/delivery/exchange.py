"""
The exchange: the one way out to a platform.

Every call to a platform passes through `call`: a delivery, an in-doubt
lead's lookup, a status poll, a program's settings, an SMS confirm, a live
status for ops. One call is:

1. a slot from the destination's limiter, slept for only while each wait is
   short (`max_inline_wait`); otherwise `NoSlot`, and the caller asks again
   later;
2. for a delivery, one unit of the destination's daily quota (`QuotaSpent`
   when none is left);
3. the adapter's auth flow. A token the flow needs (Admitad's OAuth) is
   fetched inside it, under the same slot, and a refused or unavailable
   token is read here;
4. the destination's timeout, and transport errors read into the
   `Exchange` (not sent, or sent and the answer lost: in doubt);
5. for a destination that learns its rate (`rate = "auto"`), the answer
   told to the limiter: a 429/503 cuts the shared rate, any other answer
   below 500 lets it climb; no answer or another 5xx says nothing of it.

The time slept for a slot, each request's time and class of answer, and a
learned rate as it moves go to the metrics here, so every kind of call is
counted once.

`read` applies an adapter's parser with the common net: a refused token
pauses the destination, no answer is a failure, and a parser that raises is a
failure too, never a dead task. `record` writes the exchange, redacted, to
the ledger, with what it meant for each delivery.

Each call carries a `Turn`: the process's context, the destination, its
adapter, and the owner of the claim it works under.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import httpx
import redis
from sqlalchemy.orm import Session

from worker import ledger
from worker.config import DestinationConfig
from worker.delivery.context import WorkerContext
from worker.delivery.limiter import THROTTLE_STATUSES, Grant
from worker.errors import AuthRefused, TokenUnavailable
from worker.ops import metrics
from worker.ops.redact import redact_answer, redact_request, redact_text
from worker.outcomes import Failed, Suspended
from worker.platforms import adapter_for
from worker.platforms.base import Adapter

log = logging.getLogger("leadrelay.exchange")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Turn:
    """A worker's turn at one destination: what every call to the platform carries."""

    ctx: WorkerContext
    dest: DestinationConfig
    adapter: Adapter[Any]
    #: the claim this turn works under; each claim takes a fresh one (`claim`)
    owner: str = ""

    @classmethod
    def at(cls, ctx: WorkerContext, destination: str) -> Turn:
        """A turn at the destination named `destination`, with its platform's adapter."""
        dest = ctx.settings.destination(destination)
        return cls(ctx, dest, adapter_for(dest), cls.owner_id())

    @staticmethod
    def owner_id() -> str:
        """A fresh claim owner: unique to one claim of the ledger."""
        return uuid.uuid4().hex

    def claim(self) -> Turn:
        """The same turn under a fresh claim owner."""
        return replace(self, owner=self.owner_id())

    def now(self) -> datetime:
        return self.ctx.clock()


@dataclass
class Exchange:
    """One HTTP request and what came back (or why nothing did)."""

    request: httpx.Request
    #: what the call was for (at most 10 characters): send, lookup, poll, check, confirm, info
    kind: str
    #: the destination it went to
    destination: str
    at: datetime
    response: httpx.Response | None = None
    error: str = ""
    in_doubt: bool = False
    elapsed_ms: int = 0
    auth_refused: str = ""


@dataclass(frozen=True, slots=True)
class NoSlot:
    """The limiter gave no slot within a short wait; nothing went out. Ask after `wait`."""

    wait: timedelta


@dataclass(frozen=True, slots=True)
class QuotaSpent:
    """The destination's daily quota is spent; nothing went out."""


def call(
    turn: Turn, request: httpx.Request, *, kind: str, quota: bool = False
) -> Exchange | NoSlot | QuotaSpent:
    """
    One request to the platform under the destination's limiter (and, with
    `quota`, its daily quota). Everything a request needs is built before this
    is called: the platform counts arrivals, so the time between the grant and
    the request leaving is kept as short as it can be.
    """
    grant = _slot(turn)
    if not grant.granted:
        return NoSlot(grant.wait)
    try:
        if quota and not turn.ctx.limiter.spend_quota(turn.dest, turn.now()):
            return QuotaSpent()
        exchange = _send(turn, request, kind)
        _after_the_answer(turn, "learn", lambda: _learn(turn, grant, exchange))
        return exchange
    finally:
        _after_the_answer(
            turn, "release", lambda: turn.ctx.limiter.release(turn.dest, grant.holder)
        )


def _after_the_answer(turn: Turn, what: str, step: Callable[[], object]) -> None:
    """
    A limiter call made once the request went out: Redis away (a failover, a restart)
    must not cost the answer, which the caller is about to write to the ledger. Left
    undone, a release ends by itself when the slot's lease does, and a learned rate
    misses one answer.
    """
    try:
        step()
    except redis.RedisError as exc:
        log.warning(
            "the limiter is away after a request to %s: its %s waits for the slot's lease",
            turn.dest.name,
            what,
            extra={
                "event": "limiter.away",
                "destination": turn.dest.name,
                "step": what,
                "error": type(exc).__name__,
            },
        )


def _learn(turn: Turn, grant: Grant, exchange: Exchange) -> None:
    """Tell a learned rate how the platform took the request, and show where it stands."""
    if turn.dest.rate_bounds is None or exchange.response is None:
        return
    status = exchange.response.status_code
    throttled = status in THROTTLE_STATUSES
    if status >= 500 and not throttled:
        return
    rate = turn.ctx.limiter.learn(turn.dest, grant, throttled=throttled)
    if rate is not None:
        metrics.set_rate_limit(turn.dest.name, rate)


def _slot(turn: Turn) -> Grant:
    """A limiter slot, sleeping for it only while each wait is short (the sleep is measured)."""
    started = time.monotonic()
    while True:
        grant = turn.ctx.limiter.acquire(turn.dest)
        if grant.granted or grant.wait.total_seconds() > turn.ctx.settings.max_inline_wait:
            metrics.observe_limiter_wait(turn.dest.name, time.monotonic() - started)
            return grant
        time.sleep(grant.wait.total_seconds())


def _send(turn: Turn, request: httpx.Request, kind: str) -> Exchange:
    """Send one request with the destination's timeout; transport errors become an Exchange."""
    dest, ctx = turn.dest, turn.ctx
    request.extensions["timeout"] = httpx.Timeout(
        dest.timeout, connect=min(3.0, dest.timeout)
    ).as_dict()
    exchange = Exchange(request=request, kind=kind, destination=dest.name, at=ctx.clock())
    started = time.monotonic()
    try:
        auth = turn.adapter.auth(dest, ctx.cache)
        response = ctx.http.send(request, auth=auth) if auth else ctx.http.send(request)
        response.read()
        exchange.response = response
    except AuthRefused as exc:
        exchange.error = exchange.auth_refused = str(exc)
    except TokenUnavailable as exc:  # the request itself never left: not in doubt
        exchange.error = f"not sent: {exc}"
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        exchange.error = f"not sent: {type(exc).__name__}"
    except httpx.HTTPError as exc:
        exchange.error = f"answer lost: {type(exc).__name__}"
        exchange.in_doubt = True
    except Exception as exc:  # an auth flow's own failure, never a reason to kill the task
        log.exception("request failed", extra={"event": f"{kind}.error", "destination": dest.name})
        exchange.error = f"request failed: {type(exc).__name__}"
    exchange.elapsed_ms = int((time.monotonic() - started) * 1000)
    status = exchange.response.status_code if exchange.response is not None else None
    metrics.observe_request(dest.name, exchange.elapsed_ms / 1000, status)
    return exchange


def read(exchange: Exchange, parse: Callable[[httpx.Response], T]) -> T | Failed | Suspended:
    """
    The adapter's reading of an answer (`parse`), or why there is none: a
    refused token (Suspended), no answer (Failed, in doubt when the request may
    have arrived), or a parser that raised (Failed, logged).
    """
    if exchange.auth_refused:
        return Suspended(exchange.auth_refused)
    if exchange.response is None:
        return Failed(exchange.error, in_doubt=exchange.in_doubt)
    try:
        return parse(exchange.response)
    except Exception as exc:
        log.exception(
            "unreadable answer",
            extra={"event": f"{exchange.kind}.unreadable", "destination": exchange.destination},
        )
        return Failed(f"could not read the answer: {type(exc).__name__}")


def record(
    turn: Turn,
    session: Session,
    exchange: Exchange,
    results: Iterable[tuple[int, str, str]],
) -> None:
    """Write the exchange (redacted) and what it meant for each delivery: (id, outcome, detail)."""
    secrets = turn.ctx.secrets
    response = exchange.response
    ledger.record_attempt(
        session,
        ledger.AttemptRecord(
            destination=turn.dest.name,
            kind=exchange.kind,
            at=exchange.at,
            request=redact_request(exchange.request, secrets),
            status_code=response.status_code if response is not None else None,
            answer=redact_answer(response, secrets) if response is not None else "",
            error=redact_text(exchange.error, secrets),
            elapsed_ms=exchange.elapsed_ms,
        ),
        [(d, o, redact_text(t, secrets)) for d, o, t in results],
    )
