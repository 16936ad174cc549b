"""
The Kuper emulator over a real socket: what Kuper's document shows, answered
in the shape of its examples, the rest refused; and fault-ready.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox import kuper as kuper_sandbox
from sandbox import serve
from tests.unit.platforms.test_golden_kuper import (
    REQUEST_ONE,
    REQUEST_TWO,
    RESPONSE_ONE,
    RESPONSE_TWO,
    SECOND_PHONE,
    canonical,
    example,
)

IMPORT = "/partner-candidate/v2/leads/import"
AUTH = ("partner", "kuper-secret-pw")
_phones = itertools.count(9150000001)


@pytest.fixture(scope="module")
def kuper_url() -> Iterator[str]:
    """One emulator for the module, its sources without "Дедублицировать всегда"."""
    with serve(kuper_sandbox.create_app(username=AUTH[0], password=AUTH[1])) as url:
        yield url


@pytest.fixture(scope="module")
def dedup_url() -> Iterator[str]:
    """An emulator whose sources all have "Дедублицировать всегда" switched on."""
    app = kuper_sandbox.create_app(username=AUTH[0], password=AUTH[1], deduplicate=True)
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def sources_url() -> Iterator[str]:
    """A partner with two sources, one with the switch on and one without."""
    app = kuper_sandbox.create_app(
        username=AUTH[0], password=AUTH[1], sources={"always": True, "never": False}
    )
    with serve(app) as url:
        yield url


def _client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, auth=AUTH, timeout=5) as http:
        http.post("/__sandbox__/reset").raise_for_status()
        yield http


@pytest.fixture
def client(kuper_url: str) -> Iterator[httpx.Client]:
    """A client authenticated as the emulator's partner, on an emulator just reset."""
    yield from _client(kuper_url)


@pytest.fixture
def dedup(dedup_url: str) -> Iterator[httpx.Client]:
    yield from _client(dedup_url)


@pytest.fixture
def sources(sources_url: str) -> Iterator[httpx.Client]:
    yield from _client(sources_url)


def lead(**changes: Any) -> dict[str, Any]:
    """A lead as the doc's example, with a phone no other call returns."""
    base = {
        "phone": f"7{next(_phones)}",
        "utm": {"utm_source": "test_ushakov"},
        "vacancy_id": 3,
        "city_id": 53,
        "first_name": "Тест",
        "last_name": "Тест",
    }
    return {**base, **changes}


def log(http: httpx.Client) -> list[dict[str, Any]]:
    return [e for e in http.get("/__sandbox__/log").json() if e["path"] == IMPORT]


def candidates(http: httpx.Client) -> int:
    """Candidates created, by the emulator's own log."""
    return sum(e["created"] for e in log(http))


# --- Basic Auth, path, method, media type --------------------------------------------


@pytest.mark.parametrize("auth", [None, ("partner", "wrong"), ("other", "kuper-secret-pw")])
def test_missing_or_wrong_basic_auth_is_401_with_a_json_error(
    kuper_url: str, auth: tuple[str, str] | None
) -> None:
    """Basic Auth is checked on every request; a refusal is 401 with a JSON body."""
    response = httpx.post(kuper_url + IMPORT, json=[lead()], auth=auth)
    assert response.status_code == 401
    assert response.json()["message"]


@pytest.mark.parametrize(
    "header",
    [
        "Bearer cGFydG5lcjprdXBlci1zZWNyZXQtcHc=",  # the right token under another scheme
        "Basic not-base64!",
        "Basic cGFydG5lcmt1cGVyLXNlY3JldC1wdw==",  # partnerkuper-secret-pw: no colon
        "Basic",
    ],
)
def test_an_authorization_header_that_is_not_basic_auth_is_401(kuper_url: str, header: str) -> None:
    response = httpx.post(kuper_url + IMPORT, json=[lead()], headers={"Authorization": header})
    assert response.status_code == 401


def test_the_scheme_of_basic_auth_is_read_without_regard_to_case(client: httpx.Client) -> None:
    """RFC 7617: the scheme name is case-insensitive."""
    token = base64.b64encode(":".join(AUTH).encode()).decode()
    response = httpx.post(
        str(client.base_url) + IMPORT, json=[lead()], headers={"Authorization": f"basic {token}"}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/partner-candidate/v1/leads/import", 404),
        ("POST", "/partner-candidate/v2/leads/check", 404),
        ("GET", IMPORT, 405),
        ("PUT", IMPORT, 405),
    ],
)
def test_only_the_documented_path_and_method_exist(
    client: httpx.Client, method: str, path: str, status: int
) -> None:
    assert client.request(method, path, json=[lead()]).status_code == status
    assert candidates(client) == 0


def test_a_body_not_sent_as_json_is_415(client: httpx.Client) -> None:
    body = json.dumps([lead()])
    response = client.post(IMPORT, content=body, headers={"Content-Type": "text/plain"})
    assert response.status_code == 415 and response.json()["message"]
    assert candidates(client) == 0


# --- the document's examples, answered in their shape --------------------------------


def test_a_new_phone_is_created_with_its_uuid_as_the_documents_second_candidate(
    client: httpx.Client,
) -> None:
    """The detail of a created candidate: error, phone, success and uuid; no deduplication."""
    one = lead()
    body = client.post(IMPORT, json=[one]).json()
    assert (body["created_count"], body["skipped_count"], body["total_rows"]) == (1, 0, 1)
    [detail] = body["details"]
    assert set(detail) == {"error", "phone", "success", "uuid"}
    assert detail["success"] is True and detail["error"] == "" and detail["phone"] == one["phone"]
    assert detail["uuid"]


def test_the_documents_first_request_sent_again_gets_the_documents_first_answer(
    client: httpx.Client,
) -> None:
    """A source without deduplication imports the phone again: the doc's answer, exactly."""
    client.post(IMPORT, json=[example(REQUEST_ONE)])
    again = client.post(IMPORT, json=[example(REQUEST_ONE)])
    assert again.status_code == 200
    assert canonical(again.json()) == canonical(example(RESPONSE_ONE))
    assert candidates(client) == 2


def test_the_documents_two_candidates_get_the_documents_answer_for_two(
    client: httpx.Client,
) -> None:
    """The first phone known (not deduplicated, no uuid), the second new (created, uuid)."""
    client.post(IMPORT, json=[example(REQUEST_TWO)])
    body = client.post(
        IMPORT, json=[example(REQUEST_TWO), {**example(REQUEST_TWO), "phone": SECOND_PHONE}]
    ).json()
    expected = example(RESPONSE_TWO)
    assert body["details"][1]["uuid"]
    expected["details"][1]["uuid"] = body["details"][1]["uuid"]
    assert canonical(body) == canonical(expected)


# --- "Дедублицировать всегда", per source --------------------------------------------


def test_a_source_without_deduplication_creates_the_same_phone_again(
    client: httpx.Client,
) -> None:
    """What makes a lost answer dangerous: the resend is a second candidate."""
    one = lead()
    client.post(IMPORT, json=[one])
    [detail] = client.post(IMPORT, json=[one]).json()["details"]
    assert detail["success"] is True and detail["deduplication"]["applied"] is False
    assert [e["created"] for e in log(client)] == [1, 1]


def test_a_deduplicating_source_skips_a_phone_it_already_holds(dedup: httpx.Client) -> None:
    """Same phone, same source: skipped with deduplication applied, never a second candidate."""
    one = lead()
    first = dedup.post(IMPORT, json=[one]).json()
    again = dedup.post(IMPORT, json=[one]).json()
    assert first["created_count"] == 1
    assert again["created_count"] == 0 and again["skipped_count"] == 1
    [detail] = again["details"]
    assert detail["success"] is False and "uuid" not in detail
    assert detail["deduplication"]["applied"] is True and detail["deduplication"]["message"]
    assert [e["created"] for e in log(dedup)] == [1, 0]


def test_deduplication_is_per_source(dedup: httpx.Client) -> None:
    """Another source's lead with that phone is new to that source."""
    one = lead()
    dedup.post(IMPORT, json=[one])
    other = {**one, "utm": {"utm_source": "another_source"}}
    assert dedup.post(IMPORT, json=[other]).json()["created_count"] == 1


def test_each_source_has_its_own_switch(sources: httpx.Client) -> None:
    """The same phone twice into each source: once where it is on, twice where it is off."""
    one = lead()
    for source in ("always", "never", "always", "never"):
        sources.post(IMPORT, json=[{**one, "utm": {"utm_source": source}}])
    assert [e["created"] for e in log(sources)] == [1, 1, 0, 1]


def test_a_source_the_partner_does_not_have_refuses_that_lead(sources: httpx.Client) -> None:
    body = sources.post(
        IMPORT, json=[lead(utm={"utm_source": "elsewhere"}), lead(utm={"utm_source": "never"})]
    ).json()
    bad, good = body["details"]
    assert bad["success"] is False and "utm_source" in bad["error"]
    assert good["success"] is True and body["created_count"] == 1


# --- the schema: a wrong type refuses the request whole ------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"vacancy_id": "3"}, "vacancy_id"),
        ({"city_id": "53"}, "city_id"),
        ({"city_id": True}, "city_id"),
        ({"city_id": 53.0}, "city_id"),
        ({"phone": 79150000000}, "phone"),
        ({"utm": "test_ushakov"}, "utm"),
        ({"utm": {}}, "utm"),
        ({"utm": {"utm_source": 5}}, "utm"),
        ({"utm": {"utm_source": "s", "utm_medium": "cpc"}}, "utm"),
        ({"first_name": 5}, "first_name"),
        ({"last_name": None}, "last_name"),
        ({"surname": "Тест"}, "surname"),
    ],
)
def test_a_lead_of_the_wrong_schema_refuses_the_whole_request_with_422(
    client: httpx.Client, change: dict[str, Any], field: str
) -> None:
    """Kuper's fields are numbers and strings; one lead of the wrong type and nothing is created."""
    response = client.post(IMPORT, json=[lead(), lead(**change), lead()])
    assert response.status_code == 422
    assert field in response.json()["message"]
    assert candidates(client) == 0
    [entry] = log(client)
    assert (entry["status"], entry["leads"], entry["created"]) == (422, 3, 0)


@pytest.mark.parametrize("missing", ["phone", "utm", "vacancy_id", "city_id"])
def test_a_lead_without_a_required_field_refuses_the_whole_request(
    client: httpx.Client, missing: str
) -> None:
    one = lead()
    del one[missing]
    response = client.post(IMPORT, json=[one])
    assert response.status_code == 422 and missing in response.json()["message"]


def test_names_are_optional(client: httpx.Client) -> None:
    one = lead()
    del one["first_name"], one["last_name"]
    assert client.post(IMPORT, json=[one]).json()["created_count"] == 1


# --- a right type with a wrong value refuses that lead only --------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"phone": "+79150000000"}, "phone"),
        ({"phone": "89150000000"}, "phone"),
        ({"phone": "79150000000\n"}, "phone"),
        ({"phone": "7915000000"}, "phone"),
        ({"phone": "٧٩١٥٠٠٠٠٠٠٠"}, "phone"),
        ({"utm": {"utm_source": ""}}, "utm_source"),
    ],
)
def test_a_wrong_value_refuses_its_lead_and_the_others_are_created(
    client: httpx.Client, change: dict[str, Any], field: str
) -> None:
    """phone: 11 digits from 79, without +; utm_source filled: the detail says which and why."""
    body = client.post(IMPORT, json=[lead(**change), lead()]).json()
    assert (body["created_count"], body["skipped_count"], body["total_rows"]) == (1, 1, 2)
    bad, good = body["details"]
    assert bad["success"] is False and field in bad["error"] and "uuid" not in bad
    assert good["success"] is True


# --- the body as a whole -------------------------------------------------------------


def test_301_leads_are_refused_whole(client: httpx.Client) -> None:
    """More than 300 leads in one request is a 400; nothing is created."""
    response = client.post(IMPORT, json=[lead() for _ in range(301)])
    assert response.status_code == 400 and response.json()["message"]
    [entry] = log(client)
    assert (entry["status"], entry["leads"], entry["created"]) == (400, 301, 0)


def test_300_leads_are_taken(client: httpx.Client) -> None:
    assert client.post(IMPORT, json=[lead() for _ in range(300)]).json()["created_count"] == 300


@pytest.mark.parametrize("content", [b"{not json", b'{"phone": "79150000000"}', b"[]"])
def test_a_body_that_is_not_an_array_of_leads_is_400(client: httpx.Client, content: bytes) -> None:
    """Malformed JSON, an object, or an empty array: the request is refused whole."""
    response = client.post(IMPORT, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["message"]


def test_the_log_counts_leads_and_created_per_request(client: httpx.Client) -> None:
    """state.log: one entry per request, with how many leads it carried and how many were new."""
    client.post(IMPORT, json=[lead(), lead(), lead(phone="+7")])
    client.post(IMPORT, json=[lead()])
    assert [(e["status"], e["leads"], e["created"]) for e in log(client)] == [
        (200, 3, 2),
        (200, 1, 1),
    ]


def test_an_ordered_fault_comes_back_then_the_emulator_answers_again(
    client: httpx.Client,
) -> None:
    """POST /__sandbox__/faults: the next request gets the fault, the one after is handled."""
    fault = {"status": 503, "retry_after": "7", "body": '{"message": "down"}'}
    client.post("/__sandbox__/faults", json=fault).raise_for_status()
    faulted = client.post(IMPORT, json=[lead()])
    assert faulted.status_code == 503 and faulted.headers["retry-after"] == "7"
    assert client.post(IMPORT, json=[lead()]).json()["created_count"] == 1
