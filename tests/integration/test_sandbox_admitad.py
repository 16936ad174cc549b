"""
The Admitad emulator over a real socket, spoken to with the adapter's own requests
and its OAuth2 flow (an in-memory cache stands in for Redis).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from sandbox import admitad as admitad_sandbox
from sandbox import serve
from worker.leads import Delivery, LeadState
from worker.outcomes import Pending, Rejected, StatusUpdate, Throttled
from worker.platforms.admitad import AdmitadAdapter, AdmitadDestination

ADAPTER = AdmitadAdapter()
SECRET = "admitad-secret"


class MemoryCache:
    """The KeyValueCache protocol over a dict, with expiry: a fake, not a mock."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[str, float]] = {}

    def get(self, key: str) -> str | None:
        value, until = self.items.get(key, ("", 0.0))
        return value if until > time.monotonic() else None

    def set(self, key: str, value: str, ttl: timedelta) -> None:
        self.items[key] = (value, time.monotonic() + ttl.total_seconds())


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    app = admitad_sandbox.create_app(
        client_secret=SECRET, decide_after=0.2, outcomes={16126: "declined"}
    )
    with serve(app) as base:
        yield base


@pytest.fixture
def sandbox(url: str) -> str:
    httpx.post(f"{url}/__sandbox__/reset")
    return url


def destination(url: str, **overrides: Any) -> AdmitadDestination:
    table = {
        "name": "admitad",
        "platform": "admitad",
        "base_url": url,
        "website_id": 1,
        "client_id": "client",
        "client_secret": SECRET,
        **overrides,
    }
    return AdmitadDestination.model_validate(table)


def delivery(campaigns: Any = (17809,), **fields: Any) -> Delivery:
    raw = {"campaigns": list(campaigns), "user_notified": 1, "first_name": "Ivan", **fields}
    return Delivery(1, "lead-1", ADAPTER.validate(raw), 1, datetime.now(UTC), stage=1)


def log(url: str, path_end: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = httpx.get(f"{url}/__sandbox__/log").json()
    return [e for e in entries if str(e["path"]).endswith(path_end)]


def create(client: httpx.Client, dest: AdmitadDestination, d: Delivery) -> Any:
    request = ADAPTER.build_request([d], dest)
    response = client.send(request, auth=ADAPTER.auth(dest, CACHE))
    return ADAPTER.parse_response(response, [d], dest)


CACHE = MemoryCache()


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    CACHE.items.clear()


def test_one_token_serves_many_requests(sandbox: str) -> None:
    """The token endpoint is hit once; every later request takes the cached token."""
    dest = destination(sandbox)
    with httpx.Client() as client:
        outcomes = [create(client, dest, delivery()) for _ in range(5)]
    assert all(isinstance(o, list) and isinstance(o[0], Pending) for o in outcomes)
    assert len(log(sandbox, "/token/")) == 1


def test_an_expired_token_is_renewed_once_and_the_request_sent_again(sandbox: str) -> None:
    """401 error_code 0: one renewal, the same create sent again and taken."""
    dest = destination(sandbox)
    with httpx.Client() as client:
        create(client, dest, delivery())
        httpx.post(f"{sandbox}/__sandbox__/admitad/expire")
        (outcome,) = create(client, dest, delivery())
    assert isinstance(outcome, Pending)
    tokens = log(sandbox, "/token/")
    assert [e["status"] for e in tokens] == [200, 200]
    assert [e["status"] for e in log(sandbox, "/create/")] == [200, 401, 200]


def test_the_log_never_holds_a_token(sandbox: str) -> None:
    """Tokens stay out of the emulator's record."""
    dest = destination(sandbox)
    with httpx.Client() as client:
        create(client, dest, delivery())
    token = CACHE.get("leadrelay:admitad:token:admitad")
    assert token is not None
    assert token not in httpx.get(f"{sandbox}/__sandbox__/log").text


def test_statuses_move_to_final_and_polling_says_so(sandbox: str) -> None:
    """processing → waiting/declined → approved; the application ends approved."""
    dest = destination(sandbox)
    with httpx.Client(auth=ADAPTER.auth(dest, CACHE)) as client:
        (pending,) = create(client, dest, delivery([[17809, 16126]]))
        assert isinstance(pending, Pending)
        polled = Delivery(
            1,
            "lead-1",
            delivery().payload,
            1,
            datetime.now(UTC),
            stage=1,
            external_id=pending.external_id,
            data=pending.data,
            state=LeadState.AWAITING_STATUS,
        )
        seen: list[LeadState] = []
        deadline = time.monotonic() + 5
        while not seen or seen[-1] == LeadState.AWAITING_STATUS:
            assert time.monotonic() < deadline, seen
            request = ADAPTER.build_poll([polled], dest, datetime.now(UTC))
            assert request is not None
            (update,) = ADAPTER.parse_poll(client.send(request), [polled], dest)  # type: ignore[misc]
            if isinstance(update, StatusUpdate):
                seen.append(update.state)
                final = update
            time.sleep(0.05)
    assert seen[-1] == LeadState.APPROVED
    assert {r["status"] for r in final.data["responses"]} == {"approved", "declined"}


def test_a_program_that_takes_no_broker_applications_rejects(sandbox: str) -> None:
    """Every program in errors[]: Rejected with Admitad's message."""
    dest = destination(sandbox)
    with httpx.Client() as client:
        (outcome,) = create(client, dest, delivery([99999]))
    assert isinstance(outcome, Rejected)
    assert "99999: Кампания не принимает заявки брокеров." in outcome.reason


def test_campaign_settings_are_served_and_checked(sandbox: str) -> None:
    """A program's regexp refusal names the program, the field and the rule."""
    dest = destination(sandbox)
    d = delivery([17810], first_name="Иван", middle_name="Ivanovich")
    with httpx.Client(auth=ADAPTER.auth(dest, CACHE)) as client:
        answers = {p.key: client.send(p.request).text for p in ADAPTER.prerequisites(d, dest)}
    outcome = ADAPTER.check(d, dest, answers)
    assert isinstance(outcome, Rejected)
    assert outcome.reason == (
        "no program of this stage is left: campaign 17810: first_name: must match ^[a-zA-Z]+$"
    )


def test_above_the_rate_admitad_answers_503_and_the_adapter_throttles() -> None:
    """Past the per-application rate the emulator answers 503 error_code 4: Throttled."""
    app = admitad_sandbox.create_app(client_secret=SECRET, per_minute=2)
    with serve(app) as url, httpx.Client() as client:
        dest = destination(url)
        outcomes = [create(client, dest, delivery()) for _ in range(3)]
    assert isinstance(outcomes[-1], Throttled)
    assert "error_code 4" in outcomes[-1].reason


def test_repeated_campaigns_keys_are_refused(sandbox: str) -> None:
    """`campaigns` is one JSON array string, never repeated keys."""
    dest = destination(sandbox)
    request = httpx.Request(
        "POST",
        f"{sandbox}/website/1/broker/applications/create/",
        content=b"campaigns=17809&campaigns=17810&user_notified=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with httpx.Client() as client:
        response = client.send(request, auth=ADAPTER.auth(dest, CACHE))
    assert response.status_code == 400


def test_sync_create_then_confirm_then_the_list_says_whether_the_code_was_right(
    sandbox: str,
) -> None:
    """
    The bank waits for the SMS code. Admitad answers every confirm as its
    example does (`waiting_sms_verification`), so both answers mean "poll";
    only the list shows the application move once the right code came.
    """
    dest = destination(sandbox)
    d = delivery([65], sms_verification=True)
    with httpx.Client(auth=ADAPTER.auth(dest, CACHE)) as client:
        (waiting,) = ADAPTER.parse_response(
            client.send(ADAPTER.build_request([d], dest)), [d], dest
        )
        assert isinstance(waiting, Pending)
        assert waiting.state == LeadState.WAITING_CODE
        assert waiting.external_id is not None
        polled = replace(d, external_id=waiting.external_id, state=LeadState.AWAITING_STATUS)

        def look() -> list[dict[str, object]]:
            request = ADAPTER.build_poll([polled], dest, datetime.now(UTC))
            assert request is not None
            (record,) = client.send(request).json()["results"]
            return list(record["responses"])

        for code in ("0000", "1234"):
            answer = ADAPTER.parse_confirm(
                client.send(ADAPTER.build_confirm(waiting.external_id, code, dest)), dest
            )
            assert isinstance(answer, Pending)
            assert (answer.state, answer.external_id) == (
                LeadState.AWAITING_STATUS,
                waiting.external_id,
            )
            if code == "0000":
                assert look() == []  # a wrong code: still waiting for verification
        assert [r["campaign_id"] for r in look()] == [65]
