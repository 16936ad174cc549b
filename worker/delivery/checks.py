"""
What a claimed lead needs before it is sent, each request through the exchange:

* an in-doubt lead, at a platform that does not deduplicate, is looked up
  first (`look_up`): found, it is settled as the platform has it; not there,
  it is sent again;
* a lead whose platform keeps rules of its own (an Admitad program's
  `campaign_settings`) is checked against them (`prerequisites`, answers
  cached in the shared cache): a lead that breaks them is settled without
  sending, or sent narrowed.

A lead whose checks got no limiter slot goes back to the ledger, due again
shortly; it is never sent unchecked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Literal

import httpx

from worker import ledger
from worker.delivery import retry, settle
from worker.delivery.exchange import Exchange, NoSlot, Turn, call, read, record
from worker.leads import Delivery
from worker.outcomes import Failed, LeadOutcome, Narrowed, NotSeen, Suspended, Throttled
from worker.platforms.base import FetchFailure, Prerequisite

#: the most pages one lookup reads (SalesMan: 200 records each), all within one lease
LOOKUP_PAGES = 5

Found = Literal["found", "send", "deferred"]


def vet(turn: Turn, batch: Sequence[Delivery]) -> list[Delivery]:
    """The claimed deliveries to send now; the others are settled, or back in the ledger."""
    if not turn.adapter.deduplicates_for(turn.dest):
        batch = [d for d in batch if not d.in_doubt or look_up(turn, d) == "send"]
    return _check(turn, batch)


def _check(turn: Turn, batch: Sequence[Delivery]) -> list[Delivery]:
    """
    Settle leads that break a rule only the platform's own settings know, send
    the rest (narrowed where the adapter leaves part of a lead out).
    """
    adapter, dest = turn.adapter, turn.dest
    keep: list[Delivery] = []
    for delivery in batch:
        fetched = prerequisites(turn, delivery, adapter.prerequisites(delivery, dest))
        if fetched is None:
            settle.release(turn, [delivery], turn.now() + timedelta(seconds=1))
            continue
        answers, failed = fetched
        verdict = adapter.check(delivery, dest, answers, failed)
        if verdict is None:
            keep.append(delivery)
        elif isinstance(verdict, Narrowed):
            keep.append(replace(delivery, data={**delivery.data, **verdict.data}))
        else:
            now = turn.now()
            settlement = retry.settle(delivery, verdict, dest, now, turn.ctx.rand)
            with turn.ctx.sessions.begin() as session:
                settle.write(turn, session, [delivery], [settlement], now)
    return keep


def prerequisites(
    turn: Turn, delivery: Delivery, needs: Sequence[Prerequisite]
) -> tuple[dict[str, str], dict[str, FetchFailure]] | None:
    """
    The prerequisites' answers by key, from the shared cache or fetched now
    (each fetch recorded against `delivery`), and those that could not be
    fetched (key → why); None when no limiter slot came within a short wait
    (nothing is known yet: ask again shortly).
    """
    cache = turn.ctx.cache
    answers: dict[str, str] = {}
    failed: dict[str, FetchFailure] = {}
    for need in needs:
        cached = cache.get(need.key)
        if cached is None:
            exchange = call(turn, need.request, kind="check")
            if not isinstance(exchange, Exchange):
                return None
            response = exchange.response
            ok = response is not None and response.status_code == 200
            with turn.ctx.sessions.begin() as session:
                why = f"{need.key}: " + ("fetched" if ok else exchange.error or "not fetched")
                record(turn, session, exchange, [(delivery.id, "check", why)])
            if response is None or not ok:
                failed[need.key] = fetch_failure(exchange)
                continue
            cached = response.text
            cache.set(need.key, cached, need.ttl)
        answers[need.key] = cached
    return answers, failed


def fetch_failure(exchange: Exchange) -> FetchFailure:
    """Why a prerequisite's request brought no answer to keep, and whether that may pass."""
    response = exchange.response
    if response is None:  # transport trouble may pass; a refused token does not
        return FetchFailure(exchange.error, passing=not exchange.auth_refused)
    status = response.status_code
    return FetchFailure(f"HTTP {status}", passing=status >= 500 or status == 429)


def look_up(turn: Turn, delivery: Delivery) -> Found:
    """
    Whether an in-doubt delivery is at the platform: "found" (settled), "send"
    (not there: send it again), or "deferred" (no answer yet: released, asked later).
    Pages on while the adapter says a page did not reach far enough, up to LOOKUP_PAGES.
    """
    adapter, dest = turn.adapter, turn.dest
    now = turn.now()
    for page in range(LOOKUP_PAGES):
        request = adapter.build_lookup(delivery, dest, now, page)
        if request is None:
            return "send"
        exchange = call(turn, request, kind="lookup")
        if not isinstance(exchange, Exchange):
            wait = exchange.wait if isinstance(exchange, NoSlot) else timedelta(0)
            settle.release(turn, [delivery], now + max(wait, _short(turn)))
            return "deferred"
        found = read(exchange, lambda r: _lookup_answer(turn, r, delivery))
        verdict = _after_lookup(turn, delivery, exchange, found, page)
        if verdict != "next page":
            return verdict
    return "send"  # pragma: no cover - the last page always returns above


def _short(turn: Turn) -> timedelta:
    return timedelta(seconds=turn.ctx.settings.max_inline_wait)


def _lookup_answer(
    turn: Turn, response: httpx.Response, delivery: Delivery
) -> LeadOutcome | NotSeen | Throttled | Failed | None:
    """A lookup's answer: a throttled or failed response first, then the adapter's reading."""
    trouble = turn.adapter.throttle_or_failure(response)
    if trouble is not None:
        return trouble
    return turn.adapter.parse_lookup(response, delivery, turn.dest)


def _after_lookup(
    turn: Turn,
    delivery: Delivery,
    exchange: Exchange,
    found: LeadOutcome | NotSeen | Throttled | Failed | Suspended | None,
    page: int,
) -> Found | Literal["next page"]:
    """Record one lookup page and act on it: settle, send again, defer, or read the next page."""
    now = turn.now()
    with turn.ctx.sessions.begin() as session:
        if isinstance(found, Throttled | Failed | Suspended):
            wait = retry.backoff(delivery.attempt, turn.dest, turn.ctx.rand)
            ledger.release(session, turn.owner, [delivery.id], now + wait, now)
            record(turn, session, exchange, [(delivery.id, "lookup_failed", exchange.error)])
            return "deferred"
        if isinstance(found, NotSeen) and page + 1 < LOOKUP_PAGES:
            why = f"not on page {page}; looking further"
            record(turn, session, exchange, [(delivery.id, "not_on_page", why)])
            return "next page"
        if found is None or isinstance(found, NotSeen):
            why = (
                "not at the platform; sending again"
                if found is None
                else f"not in the newest {LOOKUP_PAGES} pages; sending again, in doubt"
            )
            record(turn, session, exchange, [(delivery.id, "not_found", why)])
            return "send"
        settlement = retry.settle(delivery, found, turn.dest, now, turn.ctx.rand)
        settle.write(turn, session, [delivery], [settlement], now)
        record(turn, session, exchange, [(delivery.id, "found", settlement.detail)])
    return "found"
