"""
The delivery loop end to end, in process: real PostgreSQL, real Redis, and the
Kuper emulator over a real socket.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from producers.client import Producer
from tests.factories import kuper_lead, kuper_table
from worker import delivery, ledger, polling
from worker.context import WorkerContext
from worker.intake import Submission
from worker.leads import LeadState
from worker.ledger.tables import AttemptRow, DeliveryRow
from worker.sandbox import kuper as kuper_sandbox
from worker.sandbox import serve

IMPORT = "/partner-candidate/v2/leads/import"


@pytest.fixture(scope="module")
def kuper_url() -> Iterator[str]:
    with serve(kuper_sandbox.create_app(username="partner", password="kuper-secret-pw")) as url:
        yield url


@pytest.fixture
def kuper(kuper_url: str) -> str:
    httpx.post(f"{kuper_url}/__sandbox__/reset")
    return kuper_url


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
    make_ctx: Callable[..., WorkerContext], kuper: str
) -> None:
    ctx = make_ctx({"kuper": kuper_table(kuper)})
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
    from worker.logs import RedactionFilter

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
    assert not polling.poll(ctx, ctx.settings.destination("kuper"))
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
