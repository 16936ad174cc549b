"""
Adding a platform, step by step, with a fifth and tiny one ("tinycrm"): its
adapter and destination model, its emulator, and one registry entry, all in
this file. Nothing else in the project is edited, yet the settings accept its
destinations, intake validates its leads at the door, and the real delivery
loop carries them over a real socket into the real ledger.

The tiny platform's document, as far as it goes: `POST /leads` with
`Authorization: Bearer <token>` and `{"leads": [{"email", "name"}, ...]}`, at
most 10 a request; it answers `{"ids": [...]}`, one id per lead, in order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any, Literal

import httpx
import pytest
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from rich.console import Console
from sqlalchemy import func, select

from producers import demo
from producers.client import Producer
from producers.sandboxes import emulator
from sandbox import serve
from worker import platforms
from worker.config import DestinationConfig
from worker.delivery import loop as delivery
from worker.delivery.context import WorkerContext
from worker.errors import ConfigError
from worker.leads import Delivery, LeadState
from worker.ledger.tables import AttemptRow, DeliveryRow
from worker.outcomes import Answer, Delivered, Suspended
from worker.platforms.base import Adapter, json_body, validate_model
from worker.settings import parse_destinations

# --- step 1: the adapter module (worker/platforms/tinycrm.py) ---

MAX_BATCH = 10


class TinyDestination(DestinationConfig):
    """A tinycrm account: its token, and batches as large as the platform takes."""

    platform: Literal["tinycrm"]
    token: SecretStr
    batch_size: int = Field(default=MAX_BATCH, ge=1, le=MAX_BATCH)


class TinyLead(BaseModel):
    """One lead as tinycrm takes it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
    name: str = Field(min_length=1, max_length=40)


class TinyAdapter(Adapter[TinyDestination]):
    """Pure adapter for tinycrm's one endpoint."""

    platform = "tinycrm"
    config_model = TinyDestination

    def validate(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        return validate_model(TinyLead, raw).model_dump()

    def build_request(self, deliveries: Sequence[Delivery], dest: TinyDestination) -> httpx.Request:
        return httpx.Request(
            "POST",
            dest.base_url + "/leads",
            json={"leads": [dict(d.payload) for d in deliveries]},
            headers={"Authorization": f"Bearer {dest.token.get_secret_value()}"},
        )

    def parse_response(
        self, response: httpx.Response, deliveries: Sequence[Delivery], dest: TinyDestination
    ) -> Answer:
        failure = self.throttle_or_failure(response)
        if failure is not None:
            return failure
        if response.status_code == 401:
            return Suspended("HTTP 401: the token was refused")
        ids = json_body(response)["ids"]
        return [Delivered(external_id=str(i)) for i in ids]


# --- step 2: its emulator (sandbox/tinycrm.py with create_app()) ---


class TinySandbox:
    """tinycrm as its document shows it: a bare ASGI app that keeps the leads it took."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.received: list[list[dict[str, Any]]] = []  #: the leads of each request it took

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        status, answer = self.answer(scope, body)
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})

    def answer(self, scope: Any, body: bytes) -> tuple[int, Any]:
        if (scope["method"], scope["path"]) != ("POST", "/leads"):
            return 404, {"error": "not found"}
        if dict(scope["headers"]).get(b"authorization") != f"Bearer {self.token}".encode():
            return 401, {"error": "unauthorized"}
        leads = json.loads(body)["leads"]
        if not 1 <= len(leads) <= MAX_BATCH:
            return 400, {"error": f"1 to {MAX_BATCH} leads"}
        first = 1 + sum(len(batch) for batch in self.received)
        self.received.append(leads)
        return 200, {"ids": list(range(first, first + len(leads)))}


def create_app(token: str = "tiny-token") -> TinySandbox:  # noqa: S107 - its own default
    return TinySandbox(token)


# --- step 3: one registry entry (an `ADAPTERS` entry; `register` for a test's duration) ---


@pytest.fixture
def tinycrm() -> Iterator[TinyAdapter]:
    adapter = TinyAdapter()
    platforms.register(adapter)
    try:
        yield adapter
    finally:
        platforms.unregister(adapter.platform)


@pytest.fixture
def tiny_sandbox() -> Iterator[tuple[TinySandbox, str]]:
    app = create_app()
    with serve(app) as url:
        yield app, url


def tiny_table(base_url: str, **overrides: Any) -> dict[str, Any]:
    return {"platform": "tinycrm", "base_url": base_url, "token": "tiny-token", **overrides}


# --- what follows from the entry ---


def test_the_settings_take_its_destinations_and_name_the_field_of_a_wrong_one(
    tinycrm: TinyAdapter,
) -> None:
    dest = parse_destinations({"tiny": tiny_table("https://tiny.example")})["tiny"]
    assert isinstance(dest, TinyDestination)
    assert (dest.batch_size, dest.queue) == (MAX_BATCH, "deliver.tiny")

    with pytest.raises(ConfigError) as unknown:
        parse_destinations({"tiny": tiny_table("https://tiny.example", platform="tinycrn")})
    assert unknown.value.key == "destinations.tiny.platform"
    assert "tinycrm" in unknown.value.problem  # the known platforms are named, this one too

    with pytest.raises(ConfigError) as too_big:
        parse_destinations({"tiny": tiny_table("https://tiny.example", batch_size=11)})
    assert too_big.value.key == "destinations.tiny.batch_size"


def test_without_its_entry_the_platform_is_unknown() -> None:
    with pytest.raises(ConfigError) as info:
        parse_destinations({"tiny": tiny_table("https://tiny.example")})
    assert info.value.key == "destinations.tiny.platform"
    assert "tinycrm" not in info.value.problem


def test_its_leads_are_delivered_over_a_socket_into_the_ledger(
    tinycrm: TinyAdapter,
    tiny_sandbox: tuple[TinySandbox, str],
    make_ctx: Callable[..., WorkerContext],
) -> None:
    app, url = tiny_sandbox
    ctx = make_ctx({"tiny": tiny_table(url, rate=50, burst=5)})
    good = [{"email": f"  lead{i}@example.com ", "name": f"Lead {i}"} for i in range(25)]
    bad = {"email": "not-an-email", "name": "Bad"}

    results = Producer(ctx, waker=None).submit_many("tiny", [*good, bad])

    assert all(r.ok for r in results[:25])
    assert [e.field for e in results[25].errors] == ["email"]  # refused at the door, by field
    report = delivery.drain(ctx, "tiny")

    assert report.requests == 3
    assert [len(batch) for batch in app.received] == [10, 10, 5]
    assert app.received[0][0] == {"email": "lead0@example.com", "name": "Lead 0"}  # normalised
    with ctx.sessions() as session:
        rows = session.execute(
            select(DeliveryRow.state, DeliveryRow.external_id).where(
                DeliveryRow.destination == "tiny"
            )
        ).all()
        sends = session.scalar(
            select(func.count()).select_from(AttemptRow).where(AttemptRow.destination == "tiny")
        )
    assert {state for state, _ in rows} == {LeadState.DELIVERED}
    assert sorted(int(external or 0) for _, external in rows) == list(range(1, 26))
    assert sends == 3


def test_a_refused_token_pauses_the_destination_and_loses_nothing(
    tinycrm: TinyAdapter,
    tiny_sandbox: tuple[TinySandbox, str],
    make_ctx: Callable[..., WorkerContext],
) -> None:
    app, url = tiny_sandbox
    ctx = make_ctx({"tiny": tiny_table(url, token="wrong-token")})
    Producer(ctx, waker=None).submit_many("tiny", [{"email": "a@example.com", "name": "A"}])

    report = delivery.drain(ctx, "tiny")

    assert report.deferred is not None  # the destination waits out its auth pause
    assert app.received == []
    with ctx.sessions() as session:
        states = session.scalars(select(DeliveryRow.state)).all()
    assert states == [LeadState.QUEUED]


def test_the_registry_refuses_a_taken_name_and_a_model_that_does_not_name_it(
    tinycrm: TinyAdapter,
) -> None:
    with pytest.raises(ValueError, match="registered already"):
        platforms.register(TinyAdapter())

    class Misnamed(TinyAdapter):
        platform = "tinycrm2"

    with pytest.raises(
        ValueError, match=r'TinyDestination\.platform must be Literal\["tinycrm2"\]'
    ):
        platforms.register(Misnamed())
    assert "tinycrm2" not in platforms.REGISTRY


def test_the_sandbox_list_and_the_demo_follow_the_registry(
    tinycrm: TinyAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert emulator("tinycrm") is None  # `leadrelay sandbox` says it has none yet
    module = ModuleType("sandbox.tinycrm")
    module.create_app = create_app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sandbox.tinycrm", module)
    assert emulator("tinycrm") is module  # found by name: sandbox/tinycrm.py

    console = Console(record=True, width=200)
    found = demo.platforms(console)
    assert list(found) == [adapter.platform for adapter in platforms.ADAPTERS]
    assert "tinycrm: not in the demo" in console.export_text()


@pytest.mark.parametrize("command", ["demo", "sandbox"])
def test_without_the_sandbox_extra_the_command_says_how_to_install_it(command: str) -> None:
    hide = "import sys; sys.modules['uvicorn'] = None; from producers.cli import main; main()"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADRELAY_")}
    result = subprocess.run(
        [sys.executable, "-c", hide, command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "pip install 'leadrelay[sandbox]'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
