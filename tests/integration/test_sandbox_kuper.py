"""The Kuper emulator over a real socket: as strict as Kuper's document, and fault-ready."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from worker.sandbox import kuper as kuper_sandbox
from worker.sandbox import serve

IMPORT = "/partner-candidate/v2/leads/import"
AUTH = ("partner", "kuper-secret-pw")
_phones = itertools.count(9150000001)


@pytest.fixture(scope="module")
def kuper_url() -> Iterator[str]:
    """One emulator for the module, on a loopback port."""
    with serve(kuper_sandbox.create_app(username=AUTH[0], password=AUTH[1])) as url:
        yield url


@pytest.fixture
def client(kuper_url: str) -> Iterator[httpx.Client]:
    """A client authenticated as the emulator's partner, on an emulator just reset."""
    with httpx.Client(base_url=kuper_url, auth=AUTH, timeout=5) as http:
        http.post("/__sandbox__/reset").raise_for_status()
        yield http


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


@pytest.mark.parametrize("auth", [None, ("partner", "wrong"), ("other", "kuper-secret-pw")])
def test_missing_or_wrong_basic_auth_is_401_with_a_json_error(
    kuper_url: str, auth: tuple[str, str] | None
) -> None:
    """Basic Auth is checked on every request; a refusal is 401 with a JSON body."""
    response = httpx.post(kuper_url + IMPORT, json=[lead()], auth=auth)
    assert response.status_code == 401
    assert response.json()["message"]


def test_a_good_lead_is_created_with_a_uuid(client: httpx.Client) -> None:
    """The doc's answer: created_count, skipped_count, total_rows and a detail with uuid."""
    one = lead()
    body = client.post(IMPORT, json=[one]).json()
    assert body["created_count"] == 1 and body["skipped_count"] == 0 and body["total_rows"] == 1
    [detail] = body["details"]
    assert detail["success"] is True and detail["error"] == "" and detail["phone"] == one["phone"]
    assert detail["uuid"] and detail["deduplication"]["applied"] is False


def test_a_string_vacancy_id_is_refused_for_that_lead_only(client: httpx.Client) -> None:
    """ "3" instead of 3 (the doc's common mistake) fails its lead; the others are created."""
    body = client.post(IMPORT, json=[lead(vacancy_id="3"), lead()]).json()
    assert body["created_count"] == 1 and body["skipped_count"] == 1
    bad, good = body["details"]
    assert bad["success"] is False and "vacancy_id" in bad["error"] and "uuid" not in bad
    assert good["success"] is True


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"phone": "+79150000000"}, "phone"),
        ({"phone": "89150000000"}, "phone"),
        ({"phone": "79150000000\n"}, "phone"),
        ({"phone": 79150000000}, "phone"),
        ({"utm": {"utm_source": ""}}, "utm_source"),
        ({"utm": {}}, "utm_source"),
        ({"city_id": "53"}, "city_id"),
        ({"city_id": True}, "city_id"),
        ({"first_name": 5}, "first_name"),
    ],
)
def test_each_documented_rule_refuses_its_lead(
    client: httpx.Client, change: dict[str, Any], field: str
) -> None:
    """phone 79XXXXXXXXX as a string, utm_source filled, integer ids, string names."""
    [detail] = client.post(IMPORT, json=[lead(**change)]).json()["details"]
    assert detail["success"] is False and field in detail["error"]


def test_301_leads_are_refused_whole(client: httpx.Client) -> None:
    """More than 300 leads in one request is a 400; nothing is created."""
    response = client.post(IMPORT, json=[lead() for _ in range(301)])
    assert response.status_code == 400 and response.json()["message"]
    [entry] = log(client)
    assert (entry["status"], entry["leads"], entry["created"]) == (400, 301, 0)


@pytest.mark.parametrize("content", [b"{not json", b'{"phone": "79150000000"}', b"[]"])
def test_a_body_that_is_not_an_array_of_leads_is_400(client: httpx.Client, content: bytes) -> None:
    """Malformed JSON, an object, or an empty array: the request is refused whole."""
    response = client.post(IMPORT, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["message"]


def test_sending_a_lead_again_is_answered_as_skipped(client: httpx.Client) -> None:
    """Same phone, same utm_source: skipped with deduplication applied, never a second lead."""
    one = lead()
    first = client.post(IMPORT, json=[one]).json()
    again = client.post(IMPORT, json=[one]).json()
    assert first["created_count"] == 1
    assert again["created_count"] == 0 and again["skipped_count"] == 1
    [detail] = again["details"]
    assert detail["success"] is False and "uuid" not in detail
    assert detail["deduplication"]["applied"] is True and detail["deduplication"]["message"]
    assert [e["created"] for e in log(client)] == [1, 0]


def test_the_same_phone_from_another_source_is_created(client: httpx.Client) -> None:
    """Deduplication is per utm_source: another source's lead with that phone is new."""
    one = lead()
    client.post(IMPORT, json=[one])
    other = {**one, "utm": {"utm_source": "another_source"}}
    assert client.post(IMPORT, json=[other]).json()["created_count"] == 1


def test_the_log_counts_leads_and_created_per_request(client: httpx.Client) -> None:
    """state.log: one entry per request, with how many leads it carried and how many were new."""
    client.post(IMPORT, json=[lead(), lead(), lead(city_id="1")])
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
