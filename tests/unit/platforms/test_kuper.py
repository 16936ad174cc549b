"""The Kuper adapter: the door's rules, the request, and each detail settling its own lead."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from worker.errors import LeadInvalid
from worker.leads import Delivery
from worker.outcomes import Delivered, Failed, Rejected, Suspended, Throttled
from worker.platforms.kuper import KuperAdapter, KuperDestination

ADAPTER = KuperAdapter()
DEST = KuperDestination(
    name="k", platform="kuper", base_url="https://k.example/", username="partner", password="pw"
)
GOOD = {
    "phone": "+7 (915) 888-11-22",
    "utm": {"utm_source": "src"},
    "vacancy_id": 3,
    "city_id": "53",
}


def deliveries(*phones: str) -> list[Delivery]:
    return [
        Delivery(
            id=i,
            lead_id=f"l{i}",
            payload={**GOOD, "phone": p},
            attempt=1,
            created_at=datetime.now(UTC),
        )
        for i, p in enumerate(phones)
    ]


@pytest.mark.parametrize(
    "phone", ["+7 (915) 888-11-22", "8 915 888 11 22", "79158881122", "9158881122"]
)
def test_phones_are_normalised_to_79(phone: str) -> None:
    assert ADAPTER.validate({**GOOD, "phone": phone})["phone"] == "79158881122"


def test_numeric_string_ids_are_coerced() -> None:
    assert ADAPTER.validate(GOOD)["city_id"] == 53


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"phone": "+1 202 555 0100"}, "phone"),
        ({"phone": "79158881122x"}, "phone"),
        ({"phone": 79158881122}, "phone"),
        ({"vacancy_id": "three"}, "vacancy_id"),
        ({"vacancy_id": 2.5}, "vacancy_id"),
        ({"vacancy_id": True}, "vacancy_id"),
        ({"city_id": None}, "city_id"),
        ({"utm": {}}, "utm.utm_source"),
        ({"utm": {"utm_source": ""}}, "utm.utm_source"),
        ({"surname": "x"}, "surname"),
    ],
)
def test_a_broken_rule_names_the_field_and_never_the_value(
    change: dict[str, Any], field: str
) -> None:
    with pytest.raises(LeadInvalid) as info:
        ADAPTER.validate({**GOOD, **change})
    assert field in [e.field for e in info.value.errors]
    assert "888" not in str(info.value) and "three" not in str(info.value)


def test_request_is_a_json_array_with_basic_auth() -> None:
    request = ADAPTER.build_request(deliveries("79158881122", "79158881133"), DEST)
    assert request.url == "https://k.example/partner-candidate/v2/leads/import"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"partner:pw").decode()
    assert [x["phone"] for x in json.loads(request.content)] == ["79158881122", "79158881133"]


def answer(*details: dict[str, Any], status: int = 200) -> httpx.Response:
    return httpx.Response(
        status,
        json={
            "created_count": 0,
            "details": list(details),
            "skipped_count": 0,
            "total_rows": len(details),
        },
    )


def test_each_detail_settles_its_own_lead_by_phone() -> None:
    """Kuper answers per lead; a duplicate rejects that lead only, whatever the order."""
    batch = deliveries("79158881122", "79158881133")
    response = answer(
        {
            "phone": "79158881133",
            "success": False,
            "error": "",
            "deduplication": {"applied": True, "message": "дубль"},
        },
        {
            "phone": "79158881122",
            "success": True,
            "error": "",
            "uuid": "a5dc71af-4870-41c4-a816-8bc32146d7d6",
        },
    )
    outcomes = ADAPTER.parse_response(response, batch, DEST)
    assert isinstance(outcomes, list)
    assert outcomes[0] == Delivered("a5dc71af-4870-41c4-a816-8bc32146d7d6", "", {})
    assert isinstance(outcomes[1], Rejected) and outcomes[1].reason == "дубль"


def test_status_codes_map_to_request_outcomes() -> None:
    batch = deliveries("79158881122")
    assert ADAPTER.parse_response(
        httpx.Response(429, headers={"Retry-After": "2"}), batch, DEST
    ) == Throttled(retry_after=__import__("datetime").timedelta(seconds=2), reason="HTTP 429")
    assert isinstance(ADAPTER.parse_response(httpx.Response(401), batch, DEST), Suspended)
    assert isinstance(ADAPTER.parse_response(httpx.Response(502), batch, DEST), Failed)
    assert isinstance(
        ADAPTER.parse_response(httpx.Response(200, text="<html>"), batch, DEST), Failed
    )


def test_too_few_details_is_a_failure_not_a_guess() -> None:
    batch = deliveries("79158881122", "79158881133")
    response = answer({"phone": "79158881122", "success": True})
    assert isinstance(ADAPTER.parse_response(response, batch, DEST), Failed)


def test_a_lead_in_doubt_that_kuper_deduplicates_was_our_own_earlier_send() -> None:
    """After a lost answer, Kuper's dedup of the resend means the first send arrived."""
    (fresh,) = deliveries("79158881122")
    doubtful = Delivery(
        id=9,
        lead_id="l9",
        payload=fresh.payload,
        attempt=2,
        created_at=fresh.created_at,
        in_doubt=True,
    )
    dup = {
        "phone": "79158881122",
        "success": False,
        "error": "",
        "deduplication": {"applied": True, "message": "дубль"},
    }
    assert isinstance(ADAPTER.parse_response(answer(dup), [doubtful], DEST)[0], Delivered)  # type: ignore[index]
    assert isinstance(ADAPTER.parse_response(answer(dup), [fresh], DEST)[0], Rejected)  # type: ignore[index]
