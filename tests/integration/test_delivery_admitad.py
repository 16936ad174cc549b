"""
Admitad through the loop: real PostgreSQL and Redis, the emulator over a socket.
Pauses are scaled (a pause minute lasts half a second), never mocked away.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from producers.client import Producer
from sandbox import admitad as admitad_sandbox
from sandbox import serve
from tests.factories import admitad_lead, admitad_table
from worker.delivery import loop as delivery
from worker.delivery import polling
from worker.delivery.context import WorkerContext
from worker.leads import FINAL_STATES, LeadState
from worker.ledger.tables import AttemptRow, DeliveryRow


@pytest.fixture(scope="module")
def admitad_url() -> Iterator[str]:
    app = admitad_sandbox.create_app(
        client_id="client",
        client_secret="admitad-client-secret",
        decide_after=0.3,
        outcomes={16126: "declined", 17288: "declined"},
    )
    with serve(app) as url:
        yield url


@pytest.fixture
def admitad(admitad_url: str) -> str:
    httpx.post(f"{admitad_url}/__sandbox__/reset")
    return admitad_url


def rows(ctx: WorkerContext) -> list[DeliveryRow]:
    with ctx.sessions() as s:
        return list(s.scalars(select(DeliveryRow).order_by(DeliveryRow.lead_id, DeliveryRow.stage)))


def run_until(
    ctx: WorkerContext, done: Callable[[list[DeliveryRow]], bool], limit: float = 30
) -> None:
    """What workers and beat do: drain due deliveries, poll undecided ones."""
    dest = ctx.settings.destination("admitad")
    deadline = time.monotonic() + limit
    while not done(rows(ctx)):
        assert time.monotonic() < deadline, [(r.stage, r.state, r.detail) for r in rows(ctx)]
        delivery.drain(ctx, "admitad", budget=2)
        polling.poll(ctx, dest.name)
        time.sleep(0.05)


def sends(ctx: WorkerContext) -> list[tuple[float, str]]:
    with ctx.sessions() as s:
        return [
            (a.at.timestamp(), a.request["url"])
            for a in s.scalars(
                select(AttemptRow).where(AttemptRow.kind == "send").order_by(AttemptRow.id)
            )
        ]


def test_one_token_serves_many_applications(
    make_ctx: Callable[..., WorkerContext], admitad: str
) -> None:
    ctx = make_ctx({"admitad": admitad_table(admitad)})
    Producer(ctx, waker=None).submit_many("admitad", [admitad_lead() for _ in range(5)])
    run_until(ctx, lambda rs: all(r.state == LeadState.APPROVED for r in rs))
    tokens = [e for e in httpx.get(f"{admitad}/__sandbox__/log").json() if e["path"] == "/token/"]
    assert len(tokens) == 1


def test_an_expired_token_is_renewed_once_and_the_request_sent_again(
    make_ctx: Callable[..., WorkerContext], admitad: str
) -> None:
    ctx = make_ctx({"admitad": admitad_table(admitad)})
    producer = Producer(ctx, waker=None)
    producer.submit_many("admitad", [admitad_lead()])
    delivery.drain(ctx, "admitad")
    httpx.post(f"{admitad}/__sandbox__/admitad/expire")
    producer.submit_many("admitad", [admitad_lead()])
    delivery.drain(ctx, "admitad")
    assert [r.state for r in rows(ctx)] == [LeadState.AWAITING_STATUS] * 2
    tokens = [e for e in httpx.get(f"{admitad}/__sandbox__/log").json() if e["path"] == "/token/"]
    assert len(tokens) == 2


def test_statuses_are_polled_until_final_and_polling_stops(
    make_ctx: Callable[..., WorkerContext], admitad: str
) -> None:
    ctx = make_ctx({"admitad": admitad_table(admitad)})
    Producer(ctx, waker=None).submit_many("admitad", [admitad_lead(campaigns=[[17809, 16126]])])
    run_until(ctx, lambda rs: rs[0].state in FINAL_STATES)
    (row,) = rows(ctx)
    assert row.state == LeadState.APPROVED  # one program approved, one declined
    assert {r["status"] for r in row.data["responses"]} == {"approved", "declined"}
    assert row.due_at is None
    assert not polling.poll(ctx, "admitad")  # nothing left to ask


def test_applications_beyond_the_first_page_are_found_on_the_next_pages(
    make_ctx: Callable[..., WorkerContext], admitad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More applications than one page holds (scaled: a page of 4 here, 500 in production)."""
    from worker.platforms.admitad import adapter as admitad_adapter

    monkeypatch.setattr(admitad_adapter, "POLL_PAGE", 4)
    ctx = make_ctx({"admitad": admitad_table(admitad, batch_size=1)})
    Producer(ctx, waker=None).submit_many("admitad", [admitad_lead() for _ in range(10)])
    delivery.drain(ctx, "admitad", budget=10)
    assert {r.state for r in rows(ctx)} == {LeadState.AWAITING_STATUS}
    time.sleep(0.7)  # every application decided at the emulator
    dest = ctx.settings.destination("admitad")
    polling.poll(ctx, dest.name)
    assert {r.state for r in rows(ctx)} == {LeadState.APPROVED}, "a pass left some unseen"
    with ctx.sessions() as s:
        polls = [
            a.request["url"] for a in s.scalars(select(AttemptRow).where(AttemptRow.kind == "poll"))
        ]
    assert len(polls) == 3  # pages of 4, 4 and 2: never one request per application
    assert sum("id=" in url for url in polls) == 0


def test_three_stages_declined_goes_on_at_once_accepted_waits_the_pause(
    make_ctx: Callable[..., WorkerContext], admitad: str
) -> None:
    """Stage 1 all declined → stage 2 at once; stage 2 accepted → stage 3 after its pause."""
    ctx = make_ctx({"admitad": admitad_table(admitad)})
    campaigns: list[Any] = [
        {"ids": [16126, 17288], "pause": 0},
        {"ids": [17809], "pause": 3},
        {"ids": [16633], "pause": 4},
    ]
    Producer(ctx, waker=None).submit_many("admitad", [admitad_lead(campaigns=campaigns)])
    run_until(ctx, lambda rs: all(r.state in FINAL_STATES for r in rs), limit=40)
    states = [(r.stage, r.state) for r in rows(ctx)]
    assert states == [(1, "declined"), (2, "approved"), (3, "approved")]
    (t1, _), (t2, _), (t3, _) = sends(ctx)
    decide = 0.3  # the emulator decides a stage 0.3 s after it arrives
    pause_3 = 4 * 0.5
    assert t2 - t1 < decide + 1.0, "stage 2 waited although stage 1 was all declined"
    assert t3 - t2 >= decide + pause_3, "stage 3 did not wait its pause after an accepted stage 2"
    assert t3 - t2 < decide * 2 + pause_3 + 1.5


def test_a_stage_whose_every_program_breaks_its_rules_is_rejected_unsent(
    make_ctx: Callable[..., WorkerContext], admitad: str
) -> None:
    ctx = make_ctx({"admitad": admitad_table(admitad)})
    Producer(ctx, waker=None).submit_many(
        "admitad", [admitad_lead(campaigns=[17810], first_name="Иван")]
    )
    delivery.drain(ctx, "admitad")
    (row,) = rows(ctx)
    assert row.state == LeadState.REJECTED
    assert "campaign 17810: first_name: must match ^[a-zA-Z]+$" in row.detail
    assert row.data["dropped"][0]["campaign_id"] == 17810
    creates = [
        e for e in httpx.get(f"{admitad}/__sandbox__/log").json() if e["path"].endswith("/create/")
    ]
    assert creates == []  # refused before sending


def test_test_mode_creates_nothing_and_the_ledger_says_so(
    make_ctx: Callable[..., WorkerContext], admitad: str
) -> None:
    ctx = make_ctx({"admitad": admitad_table(admitad, test_mode=True)})
    Producer(ctx, waker=None).submit_many("admitad", [admitad_lead()])
    delivery.drain(ctx, "admitad")
    (row,) = rows(ctx)
    assert (row.state, row.external_id) == (LeadState.DELIVERED, None)
    assert "test mode" in row.detail


def test_above_600_a_minute_admitad_answers_503_and_the_destination_cools(
    make_ctx: Callable[..., WorkerContext],
) -> None:
    app = admitad_sandbox.create_app(client_secret="admitad-client-secret", per_minute=3)
    with serve(app) as url:
        ctx = make_ctx({"admitad": admitad_table(url, rate=100, burst=10)})
        Producer(ctx, waker=None).submit_many("admitad", [admitad_lead() for _ in range(5)])
        report = delivery.drain(ctx, "admitad")
        assert report.deferred is not None
        assert report.outcomes["throttled"] == 1
        with ctx.sessions() as s:
            created = s.scalar(select(func.count()).where(DeliveryRow.state == "awaiting_status"))
        assert created == 2  # 3 a minute: the program's settings (cached after), then 2 creates


def test_an_sms_verified_application_waits_for_its_code_then_is_polled(
    make_ctx: Callable[..., WorkerContext], admitad: str
) -> None:
    from worker.delivery import confirm as sms

    ctx = make_ctx({"admitad": admitad_table(admitad)})
    lead = admitad_lead(campaigns=[65], sms_verification=True)
    Producer(ctx, waker=None).submit_many("admitad", [lead])
    delivery.drain(ctx, "admitad")
    (row,) = rows(ctx)
    assert row.state == LeadState.WAITING_CODE and row.external_id
    # whatever the bank answers (the document: waiting_sms_verification), the lead is polled
    wrong = sms.confirm(ctx, row.external_id, "0000")
    assert wrong.state == "awaiting_status"
    time.sleep(0.15)
    polling.poll(ctx, "admitad")
    assert rows(ctx)[0].state == LeadState.AWAITING_STATUS  # still waits for verification
    right = sms.confirm(ctx, row.external_id, "1234")  # another code, before it expires
    assert right.state == "awaiting_status"
    run_until(ctx, lambda rs: rs[0].state in FINAL_STATES)
    assert rows(ctx)[0].state == LeadState.APPROVED
    late = sms.confirm(ctx, row.external_id, "1234")
    assert late.state == "unknown"  # a final application takes no code


def test_a_code_that_never_comes_expires_the_application(
    make_ctx: Callable[..., WorkerContext], admitad: str
) -> None:
    ctx = make_ctx({"admitad": admitad_table(admitad, code_ttl=0.3)})
    Producer(ctx, waker=None).submit_many(
        "admitad", [admitad_lead(campaigns=[65], sms_verification=True)]
    )
    delivery.drain(ctx, "admitad")
    time.sleep(0.4)
    polling.poll(ctx, "admitad")
    (row,) = rows(ctx)
    assert (row.state, row.detail) == (LeadState.EXPIRED, "no SMS code in time")


def creates(admitad: str) -> list[dict[str, Any]]:
    return [
        e for e in httpx.get(f"{admitad}/__sandbox__/log").json() if e["path"].endswith("/create/")
    ]


def test_one_programs_broken_rule_drops_that_program_and_the_stage_goes_to_the_rest(
    make_ctx: Callable[..., WorkerContext], admitad: str
) -> None:
    """17810 wants a Latin first_name: the stage [17809, 17810] goes to 17809 alone."""
    ctx = make_ctx({"admitad": admitad_table(admitad)})
    Producer(ctx, waker=None).submit_many(
        "admitad", [admitad_lead(campaigns=[[17809, 17810]], first_name="Иван")]
    )
    run_until(ctx, lambda rs: rs[0].state in FINAL_STATES)
    (row,) = rows(ctx)
    assert row.state == LeadState.APPROVED
    assert [r["campaign_id"] for r in row.data["responses"]] == [17809]
    [dropped] = row.data["dropped"]
    assert dropped["campaign_id"] == 17810
    assert "first_name: must match ^[a-zA-Z]+$" in dropped["message"]
    assert len(creates(admitad)) == 1


def test_settings_that_keep_failing_drop_their_program_not_the_lead(
    make_ctx: Callable[..., WorkerContext], admitad: str
) -> None:
    """17809's settings answer 500 twice: after settings_attempts sends, 16126 gets the stage."""
    ctx = make_ctx({"admitad": admitad_table(admitad, settings_attempts=2)})
    producer = Producer(ctx, waker=None)
    # a first lead settles the token and 16126's settings, so only 17809's fetches remain
    producer.submit_many("admitad", [admitad_lead(campaigns=[16126])])
    run_until(ctx, lambda rs: rs[0].state in FINAL_STATES)
    httpx.post(f"{admitad}/__sandbox__/faults", json={"status": 500, "count": 2})
    producer.submit_many("admitad", [admitad_lead(campaigns=[[17809, 16126]])])
    run_until(ctx, lambda rs: len(rs) == 2 and all(r.state in FINAL_STATES for r in rs))
    row = next(
        r for r in rows(ctx) if len(r.data.get("responses", [])) != 1 or r.data.get("dropped")
    )
    assert [d["campaign_id"] for d in row.data["dropped"]] == [17809]
    assert "could not be fetched: HTTP 500" in row.data["dropped"][0]["message"]
    assert [r["campaign_id"] for r in row.data["responses"]] == [16126]
    assert row.attempts == 2


def test_a_lead_that_fills_the_markers_field_is_refused_at_the_door(
    make_ctx: Callable[..., WorkerContext], admitad: str
) -> None:
    """subid4 carries the relay's marker: a lead's own subid4 would be overwritten."""
    from worker.errors import LeadInvalid

    ctx = make_ctx({"admitad": admitad_table(admitad)})
    with pytest.raises(LeadInvalid) as info:
        Producer(ctx, waker=None).submit("admitad", admitad_lead(subid4="partner-7"))
    assert info.value.errors[0].field == "subid4"
    assert rows(ctx) == []


def test_the_first_stage_waits_its_own_pause(
    make_ctx: Callable[..., WorkerContext], admitad: str
) -> None:
    """`pause` is the pause before the group is sent: stage 1's 2 minutes (1 s here) count."""
    ctx = make_ctx({"admitad": admitad_table(admitad, pause_minute=0.5)})
    campaigns = [{"ids": [17809], "pause": 2}, 16633]
    Producer(ctx, waker=None).submit_many("admitad", [admitad_lead(campaigns=campaigns)])
    accepted = time.time()
    assert delivery.drain(ctx, "admitad").requests == 0  # not due yet
    run_until(ctx, lambda rs: rs[0].state not in ("queued", "sending"))
    (t1, _), *_ = sends(ctx)
    assert t1 - accepted >= 1.0


def test_a_look_that_never_reached_admitad_keeps_the_quick_cadence(
    make_ctx: Callable[..., WorkerContext],
) -> None:
    """A 500 to a poll is no look: the stage is asked again as soon, not twice as late."""
    slow = admitad_sandbox.create_app(client_secret="admitad-client-secret", decide_after=60)
    with serve(slow) as url:
        ctx = make_ctx({"admitad": admitad_table(url, poll_interval=300, first_look=0.2)})
        Producer(ctx, waker=None).submit_many("admitad", [admitad_lead(campaigns=[17809, 16633])])
        delivery.drain(ctx, "admitad")
        dest = ctx.settings.destination("admitad")

        def look(after: float) -> tuple[int, float]:
            """The looks counted, and the next look's wait from before this poll began:
            at least the wait itself, more only by the poll's own time (a busy machine's)."""
            time.sleep(after)
            began = ctx.clock()
            polling.poll(ctx, dest.name)
            row = rows(ctx)[0]
            assert row.due_at is not None
            return int(row.data["looks"]), (row.due_at - began).total_seconds()

        looks, wait = look(0.25)
        assert looks == 1 and 0.4 <= wait < 0.8  # seen, undecided: the next look waits 0.4 s
        httpx.post(f"{url}/__sandbox__/faults", json={"status": 500, "count": 1})
        looks, wait = look(0.45)
        assert looks == 1 and 0.4 <= wait < 0.8  # not seen: the same cadence, the count unchanged
        looks, wait = look(0.45)
        assert looks == 2 and 0.8 <= wait < 1.6  # seen again: twice as long


def test_a_token_endpoint_failing_with_500_is_retried_not_an_auth_pause(
    make_ctx: Callable[..., WorkerContext], admitad: str
) -> None:
    """Admitad's /token/ answering 500 is a passing failure: no pause, the lead goes later."""
    from worker.ledger.tables import PauseRow

    ctx = make_ctx({"admitad": admitad_table(admitad)})
    httpx.post(f"{admitad}/__sandbox__/faults", json={"status": 500, "count": 1})
    Producer(ctx, waker=None).submit_many("admitad", [admitad_lead()])
    delivery.drain(ctx, "admitad")
    with ctx.sessions() as s:
        assert s.scalars(select(PauseRow)).all() == []
    (row,) = rows(ctx)
    assert row.state == LeadState.RETRY_WAIT and not row.in_doubt
    run_until(ctx, lambda rs: rs[0].state in FINAL_STATES)
    assert rows(ctx)[0].state == LeadState.APPROVED


def test_a_token_answer_that_holds_no_token_is_retried_not_an_auth_pause(
    make_ctx: Callable[..., WorkerContext], admitad: str
) -> None:
    """A 200 from /token/ with a broken body is a passing failure, not a refusal."""
    from worker.ledger.tables import PauseRow

    ctx = make_ctx({"admitad": admitad_table(admitad)})
    httpx.post(
        f"{admitad}/__sandbox__/faults",
        json={"status": 200, "body": "<html>busy</html>", "content_type": "text/html"},
    )
    Producer(ctx, waker=None).submit_many("admitad", [admitad_lead()])
    delivery.drain(ctx, "admitad")
    with ctx.sessions() as s:
        assert s.scalars(select(PauseRow)).all() == []
    run_until(ctx, lambda rs: rs[0].state in FINAL_STATES)
    assert rows(ctx)[0].state == LeadState.APPROVED
