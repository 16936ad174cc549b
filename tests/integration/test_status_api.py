"""
`status` / `status_by_key` and their async twins, asked of a real ledger: a lead
still queued (PostgreSQL and SQLite), one delivered to the Kuper emulator over a
socket, a staged Admitad application with a delivery per stage, and a lead the
ledger never held. Each case is asked through the sync and the async API alike.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pydantic
import pytest

from producers import client
from producers.aio import AsyncProducer
from producers.client import Producer
from producers.lead_status import LeadStatus, status, status_by_key
from sandbox import admitad as admitad_sandbox
from sandbox import kuper as kuper_sandbox
from sandbox import serve
from tests.factories import admitad_lead, admitad_table, kuper_lead, kuper_table
from worker.delivery import loop as delivery
from worker.delivery import polling
from worker.delivery.context import WorkerContext
from worker.leads import FINAL_STATES, LeadState
from worker.ledger import migrate
from worker.settings import Settings, load, parse_destinations

T = TypeVar("T")


class Ask:
    """One way of asking: the sync module functions, or an `AsyncProducer` in its own loop."""

    def __init__(self, how: str, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
        self.how = how
        self.settings = settings
        if how == "sync":  # the process default the module functions use
            producer = Producer.from_settings(settings, waker=None)
            monkeypatch.setattr(client, "_default", producer)
            self.opened: Producer | None = producer
        else:
            self.opened = None

    def _run(self, call: Callable[[AsyncProducer], Awaitable[T]]) -> T:
        async def once() -> T:
            async with AsyncProducer(self.settings, waker=None) as producer:
                return await call(producer)

        return asyncio.run(once())

    def status(self, lead_id: str) -> LeadStatus | None:
        if self.how == "sync":
            return status(lead_id)
        return self._run(lambda p: p.status(lead_id))

    def by_key(self, destination: str, key: str) -> LeadStatus | None:
        if self.how == "sync":
            return status_by_key(destination, key)
        return self._run(lambda p: p.status_by_key(destination, key))

    def close(self) -> None:
        if self.opened is not None:
            self.opened.close()


def asker(
    request: pytest.FixtureRequest, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Ask]:
    ask = Ask(request.param, settings, monkeypatch)
    yield ask
    ask.close()


@pytest.fixture(params=["postgresql", "sqlite"])
def either_ledger(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str) -> Settings:
    """A Kuper destination (never sent to) on the test PostgreSQL or a fresh SQLite file."""
    tables = {"kuper": kuper_table("http://127.0.0.1:9")}
    if request.param == "postgresql":
        made: Settings = request.getfixturevalue("make_settings")(tables)
        return made
    url = f"sqlite:///{tmp_path}/ledger.db"
    migrate.upgrade(url)
    return load(database_url=url, broker_url=redis_url, destinations=parse_destinations(tables))


@pytest.fixture(params=["sync", "async"])
def ask_either(
    request: pytest.FixtureRequest, either_ledger: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Ask]:
    yield from asker(request, either_ledger, monkeypatch)


def payload_leaks(answer: LeadStatus, lead: dict[str, Any]) -> list[str]:
    """Each personal value of `lead` (raw, and a phone as digits) found in the answer's JSON."""
    dumped = answer.model_dump_json()
    values: list[str] = []
    for key in ("phone", "mobile_phone", "email", "first_name", "last_name", "middle_name"):
        if isinstance(lead.get(key), str):
            values.append(lead[key])
            if "phone" in key:
                values.append("".join(c for c in lead[key] if c.isdigit()))
    return [v for v in values if v in dumped]


# ---------------------------------------------------------------- queued and unknown


def test_a_queued_lead_stands_queued_with_no_attempt(
    ask_either: Ask, either_ledger: Settings
) -> None:
    producer = Producer.from_settings(either_ledger, waker=None)
    try:
        lead_id = producer.submit("kuper", kuper_lead(), "order-1781")
    finally:
        producer.close()

    seen = ask_either.status(lead_id)

    assert seen is not None
    assert (seen.lead_id, seen.destination, seen.idempotency_key) == (
        lead_id,
        "kuper",
        "order-1781",
    )
    assert (seen.state, seen.final, seen.source) == (LeadState.QUEUED, False, "api")
    assert seen.attempts == ()
    [only] = seen.deliveries
    assert (only.stage, only.state, only.attempts, only.external_id) == (
        0,
        LeadState.QUEUED,
        0,
        None,
    )
    assert only.due_at == seen.accepted_at and only.settled_at is None
    assert seen.accepted_at.tzinfo is not None
    assert ask_either.by_key("kuper", "order-1781") == seen


def test_an_unknown_lead_is_none(ask_either: Ask, either_ledger: Settings) -> None:
    producer = Producer.from_settings(either_ledger, waker=None)
    try:
        producer.submit("kuper", kuper_lead(), "order-1")
    finally:
        producer.close()
    assert ask_either.status("0" * 32) is None
    assert ask_either.status("order-1") is None  # a key is not an id
    assert ask_either.by_key("kuper", "order-2") is None
    assert ask_either.by_key("elsewhere", "order-1") is None  # a key is per destination


def test_a_status_is_frozen(ask_either: Ask, either_ledger: Settings) -> None:
    producer = Producer.from_settings(either_ledger, waker=None)
    try:
        lead_id = producer.submit("kuper", kuper_lead())
    finally:
        producer.close()
    seen = ask_either.status(lead_id)
    assert seen is not None
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        seen.state = LeadState.DELIVERED  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        seen.deliveries[0].state = LeadState.DELIVERED  # type: ignore[misc]


# ---------------------------------------------------------------- delivered (Kuper)


@pytest.fixture(scope="module")
def kuper_url() -> Iterator[str]:
    with serve(kuper_sandbox.create_app(username="partner", password="kuper-secret-pw")) as url:
        yield url


@pytest.fixture
def kuper_ctx(kuper_url: str, make_ctx: Callable[..., WorkerContext]) -> WorkerContext:
    httpx.post(f"{kuper_url}/__sandbox__/reset")
    return make_ctx({"kuper": kuper_table(kuper_url)})


@pytest.fixture(params=["sync", "async"])
def ask_kuper(
    request: pytest.FixtureRequest, kuper_ctx: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Ask]:
    yield from asker(request, kuper_ctx.settings, monkeypatch)


def test_a_delivered_lead_has_kupers_id_and_its_send(
    ask_kuper: Ask, kuper_ctx: WorkerContext
) -> None:
    lead = kuper_lead(last_name="Петров")
    lead_id = Producer(kuper_ctx, waker=None).submit("kuper", lead, "order-7")
    delivery.drain(kuper_ctx, "kuper")

    seen = ask_kuper.by_key("kuper", "order-7")

    assert seen is not None and seen.lead_id == lead_id
    assert (seen.state, seen.final) == (LeadState.DELIVERED, True)
    [only] = seen.deliveries
    assert only.state == LeadState.DELIVERED and only.attempts == 1
    assert only.external_id and only.settled_at is not None and only.due_at is None
    [send] = seen.attempts
    assert (send.kind, send.status_code, send.outcome, send.stage) == ("send", 200, "delivered", 0)
    assert send.at >= seen.accepted_at and send.elapsed_ms >= 0
    assert payload_leaks(seen, lead) == []
    assert ask_kuper.status(lead_id) == seen


def test_a_status_holds_no_field_of_the_payload() -> None:
    """Ids, states, times, counts and the platforms' words: nothing a lead carries."""
    fields = set(LeadStatus.model_fields)
    assert fields == {
        "lead_id",
        "destination",
        "idempotency_key",
        "source",
        "accepted_at",
        "state",
        "final",
        "deliveries",
        "attempts",
    }
    schema = json.dumps(LeadStatus.model_json_schema())
    for personal in ("phone", "email", "first_name", "payload", "request", "answer"):
        assert f'"{personal}"' not in schema


# ---------------------------------------------------------------- staged (Admitad)


@pytest.fixture(scope="module")
def admitad_url() -> Iterator[str]:
    app = admitad_sandbox.create_app(
        client_id="client",
        client_secret="admitad-client-secret",
        decide_after=0.3,
        outcomes={16126: "declined"},
    )
    with serve(app) as url:
        yield url


@pytest.fixture
def admitad_ctx(admitad_url: str, make_ctx: Callable[..., WorkerContext]) -> WorkerContext:
    httpx.post(f"{admitad_url}/__sandbox__/reset")
    return make_ctx({"admitad": admitad_table(admitad_url)})


@pytest.fixture(params=["sync", "async"])
def ask_admitad(
    request: pytest.FixtureRequest, admitad_ctx: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Ask]:
    yield from asker(request, admitad_ctx.settings, monkeypatch)


def test_a_staged_application_shows_a_delivery_per_stage(
    ask_admitad: Ask, admitad_ctx: WorkerContext
) -> None:
    """Stage 1 (16126) is declined, so stage 2 (17809) goes at once and is approved."""
    ctx = admitad_ctx
    lead = admitad_lead(campaigns=[{"ids": [16126], "pause": 0}, {"ids": [17809], "pause": 0}])
    lead_id = Producer(ctx, waker=None).submit("admitad", lead)
    delivery.drain(ctx, "admitad")

    sent = ask_admitad.status(lead_id)
    assert sent is not None
    assert [(d.stage, d.state) for d in sent.deliveries] == [
        (1, LeadState.AWAITING_STATUS),
        (2, LeadState.HELD),
    ]
    assert (sent.state, sent.final) == (LeadState.AWAITING_STATUS, False)
    assert sent.deliveries[0].external_id and sent.deliveries[1].external_id is None

    deadline = time.monotonic() + 30
    while not (seen := ask_admitad.status(lead_id)) or not seen.final:
        assert time.monotonic() < deadline, seen
        delivery.drain(ctx, "admitad", budget=2)
        polling.poll(ctx, "admitad")
        time.sleep(0.05)

    assert [(d.stage, d.state) for d in seen.deliveries] == [
        (1, LeadState.DECLINED),
        (2, LeadState.APPROVED),
    ]
    assert seen.state == LeadState.APPROVED  # the best any stage reached
    assert all(d.state in FINAL_STATES and d.settled_at for d in seen.deliveries)
    sends = [(a.stage, a.outcome) for a in seen.attempts if a.kind == "send"]
    assert [stage for stage, _ in sends] == [1, 2]
    assert {a.stage for a in seen.attempts if a.kind == "poll"} == {1, 2}
    assert [a.at for a in seen.attempts] == sorted(a.at for a in seen.attempts)
    assert payload_leaks(seen, lead) == []
