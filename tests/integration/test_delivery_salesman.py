"""SalesMan through the loop, against its emulator over a socket."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from producers.client import Producer
from sandbox import salesman as salesman_sandbox
from sandbox import serve
from tests.factories import salesman_lead, salesman_table
from worker import ledger
from worker.delivery import loop as delivery
from worker.delivery import polling
from worker.delivery.context import WorkerContext
from worker.ledger.tables import AttemptRow, DeliveryRow

KEY = "salesman-secret-apikey"


@pytest.fixture(scope="module")
def salesman_url() -> Iterator[str]:
    with serve(salesman_sandbox.create_app(login="manager@example.com", api_key=KEY)) as url:
        yield url


@pytest.fixture
def salesman(salesman_url: str) -> str:
    httpx.post(f"{salesman_url}/__sandbox__/reset")
    return salesman_url


def states(ctx: WorkerContext) -> dict[str, int]:
    with ctx.sessions() as s:
        rows = s.execute(select(DeliveryRow.state, func.count()).group_by(DeliveryRow.state))
        return {state: int(n) for state, n in rows}


def adds(url: str) -> list[dict[str, object]]:
    return [e for e in httpx.get(f"{url}/__sandbox__/log").json() if e.get("action") == "add"]


def test_leads_are_added_one_a_request_with_the_crm_id(
    make_ctx: Callable[..., WorkerContext], salesman: str
) -> None:
    ctx = make_ctx({"salesman": salesman_table(salesman)})
    Producer(ctx, waker=None).submit_many("salesman", [salesman_lead() for _ in range(3)])
    delivery.drain(ctx, "salesman")
    assert states(ctx) == {"delivered": 3}
    assert len(adds(salesman)) == 3
    with ctx.sessions() as s:
        assert all(s.scalars(select(DeliveryRow.external_id)).all())


def test_a_wrong_apikey_pauses_the_destination_and_leaves_the_backlog(
    make_ctx: Callable[..., WorkerContext], salesman: str
) -> None:
    ctx = make_ctx({"salesman": salesman_table(salesman, api_key="wrong-apikey-value")})
    Producer(ctx, waker=None).submit_many("salesman", [salesman_lead() for _ in range(20)])
    report = delivery.drain(ctx, "salesman")
    assert report.requests == 1
    assert states(ctx) == {"queued": 20}
    with ctx.sessions() as s:
        pause = ledger.active_pause(s, "salesman", ctx.clock())
        records = json.dumps([[a.request, a.answer] for a in s.scalars(select(AttemptRow))])
    assert pause is not None and "API key" in pause.reason
    assert "wrong-apikey-value" not in records
    assert '"apikey": "***"' in records


def test_an_in_doubt_add_is_not_sent_twice_when_the_crm_has_it(
    make_ctx: Callable[..., WorkerContext], salesman: str
) -> None:
    """The add arrives, its answer is lost (cut connection); the lookup finds it by marker."""
    ctx = make_ctx({"salesman": salesman_table(salesman, retry_initial=0.1, retry_max=0.1)})
    Producer(ctx, waker=None).submit_many("salesman", [salesman_lead()])
    httpx.post(
        f"{salesman}/__sandbox__/faults", json={"delay": 0, "handle": True}
    ).raise_for_status()
    # the first add is handled by the CRM, then the answer is lost on the way back
    httpx.post(f"{salesman}/__sandbox__/faults", json={"cut": True}).raise_for_status()
    httpx.request("DELETE", f"{salesman}/__sandbox__/faults")
    # order: handle the add, then cut: emulate by letting the add through and cutting the reply
    _add_then_cut(salesman)
    deadline = time.monotonic() + 15
    while states(ctx) != {"delivered": 1}:
        assert time.monotonic() < deadline, states(ctx)
        delivery.drain(ctx, "salesman", budget=2)
        time.sleep(0.15)
    assert len(adds(salesman)) == 1  # one add at the CRM, not two
    with ctx.sessions() as s:
        kinds = [a.kind for a in s.scalars(select(AttemptRow).order_by(AttemptRow.id))]
        row = s.scalars(select(DeliveryRow)).one()
    assert kinds == ["send", "lookup"]
    assert "found in the CRM" in row.detail


def _add_then_cut(url: str) -> None:
    """The emulator handles the next add, then drops the connection before answering."""
    httpx.post(f"{url}/__sandbox__/faults", json={"handle": True, "cut": True}).raise_for_status()


def test_an_in_doubt_add_the_crm_never_got_is_sent_again(
    make_ctx: Callable[..., WorkerContext], salesman: str
) -> None:
    ctx = make_ctx(
        {"salesman": salesman_table(salesman, timeout=0.5, retry_initial=0.1, retry_max=0.1)}
    )
    Producer(ctx, waker=None).submit_many("salesman", [salesman_lead()])
    httpx.post(
        f"{salesman}/__sandbox__/faults", json={"cut": True}
    ).raise_for_status()  # never handled
    deadline = time.monotonic() + 15
    while states(ctx) != {"delivered": 1}:
        assert time.monotonic() < deadline, states(ctx)
        delivery.drain(ctx, "salesman", budget=2)
        time.sleep(0.15)
    assert len(adds(salesman)) == 1
    with ctx.sessions() as s:
        kinds = [a.kind for a in s.scalars(select(AttemptRow).order_by(AttemptRow.id))]
    assert kinds == ["send", "lookup", "send"]


def test_an_in_doubt_add_buried_under_250_newer_leads_is_found_a_page_further(
    make_ctx: Callable[..., WorkerContext], salesman: str
) -> None:
    """Busy CRM: by the time we look, 250 leads came in after ours; the lookup pages on."""
    ctx = make_ctx({"salesman": salesman_table(salesman, retry_initial=0.1, retry_max=0.1)})
    Producer(ctx, waker=None).submit_many("salesman", [salesman_lead()])
    _add_then_cut(salesman)
    delivery.drain(ctx, "salesman", budget=1)  # the add is handled, its answer lost
    assert states(ctx) == {"retry_wait": 1}
    httpx.post(f"{salesman}/__sandbox__/salesman/seed", json={"count": 250}).raise_for_status()
    deadline = time.monotonic() + 15
    while states(ctx) != {"delivered": 1}:
        assert time.monotonic() < deadline, states(ctx)
        delivery.drain(ctx, "salesman", budget=2)
        time.sleep(0.15)
    assert len(adds(salesman)) == 1  # not sent twice
    with ctx.sessions() as s:
        kinds = [a.kind for a in s.scalars(select(AttemptRow).order_by(AttemptRow.id))]
    assert kinds == ["send", "lookup", "lookup"]


def test_the_crm_status_of_delivered_leads_is_reconciled(
    make_ctx: Callable[..., WorkerContext], salesman: str
) -> None:
    ctx = make_ctx({"salesman": salesman_table(salesman, poll_interval=0.01)})
    Producer(ctx, waker=None).submit_many("salesman", [salesman_lead()])
    delivery.drain(ctx, "salesman")
    with ctx.sessions() as s:
        crm_id = s.scalar(select(DeliveryRow.external_id))
    httpx.post(
        f"{salesman}/__sandbox__/salesman/status", json={"id": crm_id, "status": "2", "rezult": "3"}
    )
    time.sleep(0.05)
    assert polling.poll(ctx, "salesman") == {"delivered": 1}
    with ctx.sessions() as s:
        row = s.scalars(select(DeliveryRow)).one()
    assert row.data["crm"]["status_name"] == "Обработан"
    assert row.data["crm"]["rezult_name"] == "Другое"
    assert row.due_at is not None and row.due_at - ctx.clock() < timedelta(seconds=5)


def test_status_live_shows_the_crm_record_with_its_names(
    make_ctx: Callable[..., WorkerContext],
    salesman: str,
    tmp_path: object,
    ledger_url: str,
    redis_url: str,
) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.system.conftest import write_config

    ctx = make_ctx({"salesman": salesman_table(salesman)})
    (lead_id,) = [
        r.lead_id for r in Producer(ctx, waker=None).submit_many("salesman", [salesman_lead()])
    ]
    delivery.drain(ctx, "salesman")
    with ctx.sessions() as s:
        crm_id = s.scalar(select(DeliveryRow.external_id))
    httpx.post(f"{salesman}/__sandbox__/salesman/status", json={"id": crm_id, "status": "1"})
    config = write_config(Path(str(tmp_path)) / "lr.toml", {"salesman": salesman_table(salesman)})
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LEADRELAY_")},
        "LEADRELAY_DATABASE_URL": ledger_url,
        "LEADRELAY_CONFIG": str(config),
    }
    result = subprocess.run(
        [sys.executable, "-m", "producers", "status", str(lead_id), "--live", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    record = report["platform"][0]["record"]
    assert (record["status"], record["status_name"]) == ("1", "В работе")
    assert KEY not in result.stdout


UNPAGED = salesman_sandbox.create_app(
    login="manager@example.com", api_key=KEY, honours_paging=False
)


@pytest.fixture(scope="module")
def unpaged_url() -> Iterator[str]:
    """A CRM whose `list` ignores offset, order and dates, as SalesMan's public source does."""
    with serve(UNPAGED) as url:
        yield url


@pytest.fixture
def unpaged(unpaged_url: str) -> str:
    httpx.post(f"{unpaged_url}/__sandbox__/reset").raise_for_status()
    return unpaged_url


def held_by_crm(lead_id: str) -> int:
    """How many records of the unpaged CRM carry this lead's marker (all of them, not a page)."""
    state = UNPAGED.state  # type: ignore[attr-defined]
    with state.lock:
        return sum(f"[lr:{lead_id}]" in r["content"] for r in state.store["records"].values())


def test_an_in_doubt_lead_is_looked_up_before_a_backlog_buries_it(
    make_ctx: Callable[..., WorkerContext], unpaged: str
) -> None:
    """
    Its answer lost, then 250 fresh leads queue up: the lookup comes first and
    finds it on the newest page, so it is never sent twice. Behind the backlog,
    it would be 250 deep in a list whose pages all repeat the newest 200.
    """
    table = salesman_table(unpaged, timeout=0.3, retry_initial=0.1, retry_max=0.1, rate=500)
    ctx = make_ctx({"salesman": {**table, "burst": 50}})
    producer = Producer(ctx, waker=None)
    (first,) = producer.submit_many("salesman", [salesman_lead()])
    _add_then_cut(unpaged)
    delivery.drain(ctx, "salesman", budget=1)
    assert states(ctx) == {"retry_wait": 1}
    producer.submit_many("salesman", [salesman_lead() for _ in range(250)])
    time.sleep(0.4)  # the in-doubt lead is due again, after the fresh ones
    deadline = time.monotonic() + 60
    while states(ctx) != {"delivered": 251}:
        assert time.monotonic() < deadline, states(ctx)
        delivery.drain(ctx, "salesman", budget=300)
    log = httpx.get(f"{unpaged}/__sandbox__/log").json()
    assert [e.get("action") for e in log[:3]] == ["add", None, "list"]  # the cut, then the lookup
    assert held_by_crm(first.lead_id) == 1
    assert len(adds(unpaged)) == 251


def test_an_in_doubt_lead_the_lookup_cannot_reach_is_held_not_sent_twice(
    make_ctx: Callable[..., WorkerContext], unpaged: str
) -> None:
    """250 newer leads arrived from elsewhere: the pages repeat, so it ends dead, in doubt."""
    ctx = make_ctx({"salesman": salesman_table(unpaged, retry_initial=0.1, retry_max=0.1)})
    (lead,) = Producer(ctx, waker=None).submit_many("salesman", [salesman_lead()])
    _add_then_cut(unpaged)
    delivery.drain(ctx, "salesman", budget=1)
    httpx.post(f"{unpaged}/__sandbox__/salesman/seed", json={"count": 250}).raise_for_status()
    deadline = time.monotonic() + 15
    while states(ctx) != {"dead": 1}:
        assert time.monotonic() < deadline, states(ctx)
        delivery.drain(ctx, "salesman", budget=2)
        time.sleep(0.15)
    assert len(adds(unpaged)) == 1  # never sent twice
    with ctx.sessions() as s:
        row = s.scalars(select(DeliveryRow)).one()
    assert row.in_doubt
    assert f"[lr:{lead.lead_id}]" in row.detail


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"code": "400", "text": "Не верный API key"}},
        {"error": {"code": 401}},
        {"code": "402"},
    ],
)
def test_an_auth_code_without_result_pauses_and_rejects_nothing(
    make_ctx: Callable[..., WorkerContext], salesman: str, body: dict[str, object]
) -> None:
    """No `result` key, the code alone: the destination pauses and the lead waits."""
    ctx = make_ctx({"salesman": salesman_table(salesman)})
    Producer(ctx, waker=None).submit_many("salesman", [salesman_lead()])
    fault = {"status": 200, "body": json.dumps(body), "content_type": "text/html"}
    httpx.post(f"{salesman}/__sandbox__/faults", json=fault).raise_for_status()
    delivery.drain(ctx, "salesman")
    assert states(ctx) == {"queued": 1}
    with ctx.sessions() as s:
        assert ledger.active_pause(s, "salesman", ctx.clock()) is not None


def test_reconciliation_brings_in_a_buried_leads_status_by_info(
    make_ctx: Callable[..., WorkerContext], unpaged: str
) -> None:
    """Two delivered leads, 200 newer ones: the list misses the first, info alone finds it."""
    ctx = make_ctx({"salesman": salesman_table(unpaged, poll_interval=0.01, rate=100)})
    Producer(ctx, waker=None).submit_many("salesman", [salesman_lead(), salesman_lead()])
    delivery.drain(ctx, "salesman")
    with ctx.sessions() as s:
        ids = list(s.scalars(select(DeliveryRow.external_id).order_by(DeliveryRow.id)))
    httpx.post(f"{unpaged}/__sandbox__/salesman/seed", json={"count": 200}).raise_for_status()
    for crm_id in ids:
        httpx.post(
            f"{unpaged}/__sandbox__/salesman/status",
            json={"id": crm_id, "status": "3", "rezult": "1"},
        ).raise_for_status()
    time.sleep(0.05)
    polling.poll(ctx, "salesman")
    with ctx.sessions() as s:
        crm = [r.data.get("crm", {}) for r in s.scalars(select(DeliveryRow))]
    assert [c.get("status_name") for c in crm] == ["Закрыт", "Закрыт"]
    actions = [e.get("action") for e in httpx.get(f"{unpaged}/__sandbox__/log").json()]
    assert actions.count("info") >= 2
