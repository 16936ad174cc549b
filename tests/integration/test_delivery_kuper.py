"""
The delivery loop end to end, in process: real PostgreSQL, real Redis, and the
Kuper emulator over a real socket: a source with or without Kuper's
"Дедублицировать всегда", and a batch Kuper refuses whole sent again in halves.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from producers.client import Producer
from sandbox import kuper as kuper_sandbox
from sandbox import serve
from tests.factories import kuper_lead, kuper_table
from worker import ledger
from worker.delivery import loop as delivery
from worker.delivery import polling
from worker.delivery.context import WorkerContext
from worker.delivery.exchange import Turn
from worker.intake import Submission
from worker.leads import LeadState
from worker.ledger.tables import AttemptResultRow, AttemptRow, DeliveryRow
from worker.platforms.kuper import KuperAdapter

IMPORT = "/partner-candidate/v2/leads/import"


@pytest.fixture(scope="module")
def kuper_url() -> Iterator[str]:
    with serve(kuper_sandbox.create_app(username="partner", password="kuper-secret-pw")) as url:
        yield url


@pytest.fixture
def kuper(kuper_url: str) -> str:
    """Kuper, its source without "Дедублицировать всегда" (as on the document's example)."""
    httpx.post(f"{kuper_url}/__sandbox__/reset")
    return kuper_url


@pytest.fixture(scope="module")
def kuper_dedup_url() -> Iterator[str]:
    app = kuper_sandbox.create_app(username="partner", password="kuper-secret-pw", deduplicate=True)
    with serve(app) as url:
        yield url


@pytest.fixture
def kuper_dedup(kuper_dedup_url: str) -> str:
    """Kuper, its source with "Дедублицировать всегда" switched on."""
    httpx.post(f"{kuper_dedup_url}/__sandbox__/reset")
    return kuper_dedup_url


def sandbox_log(url: str) -> list[dict[str, Any]]:
    return [e for e in httpx.get(f"{url}/__sandbox__/log").json() if e["path"] == IMPORT]


def fault(url: str, **spec: Any) -> None:
    httpx.post(f"{url}/__sandbox__/faults", json=spec).raise_for_status()


def states(ctx: WorkerContext) -> dict[str, int]:
    with ctx.sessions() as s:
        rows = s.execute(select(DeliveryRow.state, text("count(*)")).group_by(DeliveryRow.state))
        return {state: int(n) for state, n in rows}


def submit(
    ctx: WorkerContext, leads: list[dict[str, Any]], dest: str = "kuper"
) -> list[str | None]:
    results = Producer(ctx, waker=None).submit_many(dest, leads)
    return [r.lead_id for r in results]


def drain_until(
    ctx: WorkerContext, done: Callable[[], bool], dest: str = "kuper", limit: float = 30
) -> None:
    deadline = time.monotonic() + limit
    while not done():
        assert time.monotonic() < deadline, f"not done in {limit}s: {states(ctx)}"
        report = delivery.drain(ctx, dest, budget=5)
        if report.deferred is not None:
            time.sleep(min(report.deferred.total_seconds(), 0.5))


def test_200_leads_arrive_in_4_requests_of_50(
    make_ctx: Callable[..., WorkerContext], kuper: str
) -> None:
    ctx = make_ctx({"kuper": kuper_table(kuper)})
    submit(ctx, [kuper_lead() for _ in range(200)])

    delivery.drain(ctx, "kuper")

    assert [e["leads"] for e in sandbox_log(kuper)] == [50, 50, 50, 50]
    assert states(ctx) == {"delivered": 200}


def test_the_platform_id_and_dedup_answer_are_kept(
    make_ctx: Callable[..., WorkerContext], kuper: str
) -> None:
    ctx = make_ctx({"kuper": kuper_table(kuper)})
    (lead_id,) = submit(ctx, [kuper_lead()])
    delivery.drain(ctx, "kuper")
    with ctx.sessions() as s:
        row = s.scalars(select(DeliveryRow).where(DeliveryRow.lead_id == lead_id)).one()
    assert row.state == LeadState.DELIVERED and row.external_id


def test_a_duplicate_phone_is_rejected_with_kupers_words(
    make_ctx: Callable[..., WorkerContext], kuper_dedup: str
) -> None:
    ctx = make_ctx({"kuper": kuper_table(kuper_dedup, deduplicate=True)})
    lead = kuper_lead()
    submit(ctx, [lead])
    delivery.drain(ctx, "kuper")
    submit(ctx, [lead])  # no idempotency key: a second lead, which Kuper deduplicates
    delivery.drain(ctx, "kuper")
    assert states(ctx) == {"delivered": 1, "rejected": 1}
    with ctx.sessions() as s:
        detail = s.scalar(select(DeliveryRow.detail).where(DeliveryRow.state == "rejected"))
    assert detail


def test_the_same_idempotency_key_twice_delivers_once(
    make_ctx: Callable[..., WorkerContext], kuper: str
) -> None:
    ctx = make_ctx({"kuper": kuper_table(kuper)})
    producer = Producer(ctx, waker=None)
    first = producer.submit("kuper", kuper_lead(), "order-42")
    second = producer.submit("kuper", kuper_lead(), "order-42")
    delivery.drain(ctx, "kuper")
    assert first == second
    assert sum(e["leads"] for e in sandbox_log(kuper)) == 1


def test_a_429_cools_the_destination_for_retry_after_then_all_arrive(
    make_ctx: Callable[..., WorkerContext], kuper: str
) -> None:
    ctx = make_ctx({"kuper": kuper_table(kuper)})
    other_worker = make_ctx(
        {"kuper": kuper_table(kuper)}
    )  # its own Redis connection, like another process
    submit(ctx, [kuper_lead() for _ in range(100)])
    fault(kuper, status=429, retry_after="2")

    report = delivery.drain(ctx, "kuper")
    assert report.deferred is not None and report.deferred.total_seconds() == pytest.approx(
        2, abs=0.1
    )
    assert delivery.drain(other_worker, "kuper").deferred is not None  # the cooldown is shared

    drain_until(ctx, lambda: states(ctx) == {"delivered": 100})
    log = httpx.get(f"{kuper}/__sandbox__/log").json()
    throttled_at = next(e["t"] for e in log if e["status"] == 429)
    after = [e["t"] for e in log if e["t"] > throttled_at]
    assert min(after) - throttled_at >= 1.95
    with ctx.sessions() as s:  # a throttled batch is not an attempt against max_attempts
        assert s.scalar(select(DeliveryRow.attempts).limit(1)) == 1


def test_server_errors_retry_with_backoff_then_deliver(
    make_ctx: Callable[..., WorkerContext], kuper: str
) -> None:
    ctx = make_ctx({"kuper": kuper_table(kuper, retry_initial=0.2, retry_max=0.4)})
    submit(ctx, [kuper_lead() for _ in range(3)])
    fault(kuper, status=500, count=2)
    drain_until(ctx, lambda: states(ctx) == {"delivered": 3})
    with ctx.sessions() as s:
        attempts = s.scalars(select(DeliveryRow.attempts)).all()
        codes = s.scalars(select(AttemptRow.status_code).order_by(AttemptRow.id)).all()
    assert codes[:2] == [500, 500] and set(codes[2:]) == {200}
    assert all(2 <= a <= 3 for a in attempts)  # the jitter may split the batch after the first 500


def test_a_lead_that_always_fails_ends_dead_with_the_reason(
    make_ctx: Callable[..., WorkerContext], kuper: str
) -> None:
    ctx = make_ctx({"kuper": kuper_table(kuper, max_attempts=2, retry_initial=0.1, retry_max=0.1)})
    submit(ctx, [kuper_lead()])
    fault(kuper, status=502, count=5)
    drain_until(ctx, lambda: states(ctx) == {"dead": 1})
    with ctx.sessions() as s:
        assert "HTTP 502" in s.scalar(select(DeliveryRow.detail))


def test_a_timeout_and_a_cut_connection_are_retried(
    make_ctx: Callable[..., WorkerContext], kuper: str
) -> None:
    ctx = make_ctx({"kuper": kuper_table(kuper, timeout=0.5, retry_initial=0.1, retry_max=0.2)})
    submit(ctx, [kuper_lead() for _ in range(5)])
    fault(kuper, status=200, delay=1.5)
    fault(kuper, cut=True)
    drain_until(ctx, lambda: states(ctx) == {"delivered": 5})
    with ctx.sessions() as s:
        errors = s.scalars(select(AttemptRow.error).where(AttemptRow.error != "")).all()
    assert any("ReadTimeout" in e for e in errors)
    assert any("RemoteProtocolError" in e for e in errors)
    assert len(sandbox_log(kuper)) >= 1


def test_wrong_credentials_pause_the_destination_without_burning_the_backlog(
    make_ctx: Callable[..., WorkerContext], kuper: str
) -> None:
    ctx = make_ctx({"kuper": kuper_table(kuper, password="wrong-password")})
    submit(ctx, [kuper_lead() for _ in range(120)])
    report = delivery.drain(ctx, "kuper")
    assert report.requests == 1 and report.deferred is not None
    assert delivery.drain(ctx, "kuper").requests == 0  # paused: nothing more is sent
    assert states(ctx) == {"queued": 120}
    with ctx.sessions() as s:
        pause = ledger.active_pause(s, "kuper", ctx.clock())
    assert pause is not None and pause.kind == "auth"


def test_no_password_reaches_the_attempt_records_or_the_logs(
    make_ctx: Callable[..., WorkerContext], kuper: str, caplog: pytest.LogCaptureFixture
) -> None:
    from worker.ops.logs import RedactionFilter

    ctx = make_ctx({"kuper": kuper_table(kuper)})
    caplog.handler.addFilter(RedactionFilter(ctx.secrets))
    caplog.set_level(logging.DEBUG)
    leads = [kuper_lead() for _ in range(3)]
    submit(ctx, leads)
    fault(kuper, status=500)
    drain_until(ctx, lambda: states(ctx) == {"delivered": 3})
    with ctx.sessions() as s:
        attempts = [
            json.dumps([a.request, a.answer, a.error], ensure_ascii=False)
            for a in s.scalars(select(AttemptRow))
        ]
    record = "\n".join(attempts) + caplog.text
    assert attempts
    assert "kuper-secret-pw" not in record
    assert "cGFydG5lcjprdXBlci1zZWNyZXQtcHc" not in record  # base64 of partner:kuper-secret-pw
    for lead in leads:
        digits = "".join(c for c in lead["phone"] if c.isdigit())[1:]
        assert digits not in record


def test_polling_a_platform_that_decides_at_once_changes_nothing(
    make_ctx: Callable[..., WorkerContext], kuper: str
) -> None:
    ctx = make_ctx({"kuper": kuper_table(kuper)})
    submit(ctx, [kuper_lead()])
    delivery.drain(ctx, "kuper")
    assert not polling.poll(ctx, "kuper")
    assert states(ctx) == {"delivered": 1}


def test_bad_leads_are_refused_and_good_ones_in_the_same_batch_go_through(
    make_ctx: Callable[..., WorkerContext], kuper: str
) -> None:
    ctx = make_ctx({"kuper": kuper_table(kuper)})
    results = Producer(ctx, waker=None).submit_many(
        "kuper",
        [
            Submission(kuper_lead()),
            Submission(kuper_lead(vacancy_id="x")),
            Submission(kuper_lead()),
        ],
    )
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].errors[0].field == "vacancy_id"
    delivery.drain(ctx, "kuper")
    assert states(ctx) == {"delivered": 2}


# --- a lost answer, with and without the source's deduplication ---------------------


def created(url: str) -> int:
    """Candidates Kuper created, by the emulator's own log."""
    return sum(e.get("created", 0) for e in sandbox_log(url))


def doubt_of(ctx: WorkerContext) -> list[tuple[str, bool, str]]:
    with ctx.sessions() as s:
        rows = s.execute(select(DeliveryRow.state, DeliveryRow.in_doubt, DeliveryRow.detail))
        return [(state, doubt, detail) for state, doubt, detail in rows]


def test_without_the_sources_deduplication_a_lead_sent_again_stays_flagged_in_doubt(
    make_ctx: Callable[..., WorkerContext], kuper: str
) -> None:
    """
    Kuper took the lead but the answer was lost: sent again, it is created a
    second time. The ledger says delivered and keeps the lead flagged in doubt,
    the record that it may be at Kuper twice.
    """
    ctx = make_ctx({"kuper": kuper_table(kuper, timeout=0.5, retry_initial=0.1, retry_max=0.2)})
    submit(ctx, [kuper_lead()])
    fault(kuper, cut=True, handle=True)  # Kuper does the work; its answer never arrives

    drain_until(ctx, lambda: states(ctx) == {"delivered": 1})

    assert created(kuper) == 2
    [(_, in_doubt, _)] = doubt_of(ctx)
    assert in_doubt is True


def test_on_a_deduplicating_source_a_lead_sent_again_is_delivered_once(
    make_ctx: Callable[..., WorkerContext], kuper_dedup: str
) -> None:
    """The source skips the resend as a duplicate: that is our own earlier send, delivered."""
    table = kuper_table(
        kuper_dedup, deduplicate=True, timeout=0.5, retry_initial=0.1, retry_max=0.2
    )
    ctx = make_ctx({"kuper": table})
    submit(ctx, [kuper_lead()])
    fault(kuper_dedup, cut=True, handle=True)

    drain_until(ctx, lambda: states(ctx) == {"delivered": 1})

    assert created(kuper_dedup) == 1
    [(_, _, detail)] = doubt_of(ctx)
    assert "earlier send" in detail


# --- a batch Kuper refuses whole: halves, each on its own request -------------------


def store_with_a_bad_lead(ctx: WorkerContext, size: int, bad_at: int) -> None:
    """
    `size` leads in the ledger in this order, as the door stores them, one (at
    `bad_at`) with a string vacancy_id: a lead stored before the door knew the
    rule, which Kuper's schema refuses, and with it the whole request.
    """
    adapter = KuperAdapter()
    start = ctx.clock() - timedelta(minutes=1)
    with ctx.sessions.begin() as session:
        for i in range(size):
            payload = adapter.validate(kuper_lead())
            if i == bad_at:
                payload["vacancy_id"] = "3"
            lead = ledger.NewLead(uuid.uuid4().hex, "kuper", payload, "test")
            ledger.insert_leads(session, [lead], start + timedelta(milliseconds=i))


def outcomes_recorded(ctx: WorkerContext) -> dict[str, int]:
    with ctx.sessions() as s:
        rows = s.execute(
            select(AttemptResultRow.outcome, text("count(*)")).group_by(AttemptResultRow.outcome)
        )
        return {outcome: int(n) for outcome, n in rows}


@pytest.mark.parametrize(
    ("size", "bad_at", "requests"),
    [
        # 50 → 25 → 12 → 6 → 3 → 1: five splits, two halves each, plus the first request
        (50, 0, 11),
        # 50 → 25 → 13 → 7 → 4 → 2 → 1: six splits
        (50, 49, 13),
        # 300 → 150 → 75 → 37 → 18 → 9 → 4 → 2 → 1: eight splits
        (300, 0, 17),
        # 300 → 150 → 75 → 38 → 19 → 10 → 5 → 3 → 2 → 1: nine splits
        (300, 299, 19),
    ],
)
def test_one_bad_lead_costs_one_request_and_two_per_halving_and_only_it_is_rejected(
    make_ctx: Callable[..., WorkerContext], kuper: str, size: int, bad_at: int, requests: int
) -> None:
    """Kuper's 422 does not say which lead: the halves find it; every other lead arrives once."""
    ctx = make_ctx({"kuper": kuper_table(kuper, batch_size=size, rate=100, burst=10)})
    store_with_a_bad_lead(ctx, size, bad_at)

    step = delivery.deliver_batch(Turn(ctx, ctx.settings.destination("kuper"), KuperAdapter()))

    log = sandbox_log(kuper)
    assert len(log) == requests == step.requests
    assert log[0]["leads"] == size and log[0]["status"] == 422
    assert states(ctx) == {"delivered": size - 1, "rejected": 1}
    assert created(kuper) == size - 1  # each good lead once, none lost, none twice
    with ctx.sessions() as s:
        reason = s.scalar(select(DeliveryRow.detail).where(DeliveryRow.state == "rejected"))
    assert reason is not None and "vacancy_id" in reason  # Kuper's own words
    splits = (requests - 1) // 2
    assert outcomes_recorded(ctx)["split"] >= size + splits  # the first request's, and more


def test_a_half_that_gets_no_limiter_slot_goes_back_with_the_rest_and_arrives_later(
    make_ctx: Callable[..., WorkerContext], kuper: str
) -> None:
    """No slot within the short inline wait: nothing still claimed, nothing lost, sent later."""
    # one request every 0.2 s, and no inline wait that long: the first half finds no slot
    table = kuper_table(kuper, batch_size=8, rate=5, burst=1)
    ctx = make_ctx({"kuper": table}, max_inline_wait=0.05)
    store_with_a_bad_lead(ctx, 8, 0)

    step = delivery.deliver_batch(Turn(ctx, ctx.settings.destination("kuper"), KuperAdapter()))

    assert step.kind == "deferred" and step.wait > timedelta(0)
    assert [e["status"] for e in sandbox_log(kuper)] == [422]
    assert states(ctx) == {"queued": 8}  # released, due again: not left `sending`

    patient = make_ctx({"kuper": table})  # a worker that may wait for its slots
    drain_until(patient, lambda: states(patient) == {"delivered": 7, "rejected": 1})
    assert created(kuper) == 7


def test_a_throttled_half_cools_down_and_the_other_goes_back_with_it(
    make_ctx: Callable[..., WorkerContext], kuper: str
) -> None:
    ctx = make_ctx({"kuper": kuper_table(kuper, batch_size=8, rate=100, burst=10)})
    store_with_a_bad_lead(ctx, 8, 7)
    fault(kuper, handle=True)  # the whole batch is Kuper's own 422
    fault(kuper, status=429, retry_after="1", body="{}")  # its first half: 429

    step = delivery.deliver_batch(Turn(ctx, ctx.settings.destination("kuper"), KuperAdapter()))

    assert step.kind == "deferred" and step.wait == timedelta(seconds=1)
    assert [e["status"] for e in sandbox_log(kuper)] == [422, 429]
    assert states(ctx) == {"queued": 8}
    drain_until(ctx, lambda: states(ctx) == {"delivered": 7, "rejected": 1})
    assert created(kuper) == 7


def test_a_long_halving_extends_its_claim_and_finishes_in_one_go(
    make_ctx: Callable[..., WorkerContext], kuper: str
) -> None:
    """
    A slow Kuper (0.7 s an answer) and a short lease (timeout 1.5 s: 8 s): the
    13 requests of the halving outlast one lease, so each part renews the
    claim before it goes. Every lead is settled in one step, none sent twice,
    none left `sending`, and no part went out under a lapsed claim.
    """
    ctx = make_ctx({"kuper": kuper_table(kuper, batch_size=50, timeout=1.5, rate=100, burst=10)})
    dest = ctx.settings.destination("kuper")
    store_with_a_bad_lead(ctx, 50, 49)  # 13 requests of 0.7 s: more than one lease holds
    fault(kuper, handle=True, delay=0.7, count=100)

    claimed_at = ctx.clock()
    step = delivery.deliver_batch(Turn(ctx, dest, KuperAdapter()))

    with ctx.sessions() as s:
        ends = [
            at + timedelta(milliseconds=ms)
            for at, ms in s.execute(select(AttemptRow.at, AttemptRow.elapsed_ms))
        ]
    assert len(ends) == 13
    assert max(ends) > claimed_at + dest.lease  # past the first lease: it was renewed
    assert step.kind == "sent" and not step.outcomes["released"]
    assert states(ctx) == {"delivered": 49, "rejected": 1}
    assert created(kuper) == 49
