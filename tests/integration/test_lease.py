"""A claim's lease on real PostgreSQL: renewed only while it is still the claimer's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from producers.client import Producer
from tests.factories import kuper_lead, kuper_table
from worker import ledger
from worker.delivery.context import WorkerContext


def claim(ctx: WorkerContext, owner: str, lease: timedelta) -> list[int]:
    with ctx.sessions.begin() as session:
        batch = ledger.claim_due(
            session, "kuper", limit=10, now=ctx.clock(), lease=lease, owner=owner
        )
    return [d.id for d in batch]


def extend(ctx: WorkerContext, owner: str, ids: list[int], at: timedelta) -> bool:
    now = ctx.clock() + at
    with ctx.sessions.begin() as session:
        return ledger.extend_lease(session, owner, ids, until=now + timedelta(seconds=30), now=now)


def test_a_claim_is_renewed_only_by_its_owner_and_only_before_it_lapses(
    make_ctx: Callable[..., WorkerContext],
) -> None:
    ctx = make_ctx({"kuper": kuper_table("http://127.0.0.1:9")})
    Producer(ctx, waker=None).submit_many("kuper", [kuper_lead() for _ in range(3)])
    ids = claim(ctx, "me", timedelta(seconds=10))
    assert len(ids) == 3
    assert not extend(ctx, "someone-else", ids, timedelta(0))
    assert not extend(ctx, "me", ids, timedelta(seconds=11))  # lapsed: the sweeper's now
    assert not extend(ctx, "me", [*ids, 10**9], timedelta(0))  # all of them or none
    assert extend(ctx, "me", ids, timedelta(seconds=5))
    # renewed to 35 s from the start: still ours at 20 s, when the first lease had lapsed
    assert extend(ctx, "me", ids, timedelta(seconds=20))
