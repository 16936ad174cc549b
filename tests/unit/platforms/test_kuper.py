"""
The Kuper adapter: the door's rules, the request, each detail settling its own
lead, a source's deduplication as the destination's setting, and a refusal of
the whole request split instead of rejecting every lead.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from worker.errors import LeadInvalid
from worker.leads import Delivery
from worker.outcomes import Delivered, Failed, Rejected, Split, Suspended, Throttled
from worker.platforms.kuper import KuperAdapter, KuperDestination

ADAPTER = KuperAdapter()
DEST = KuperDestination(
    name="k", platform="kuper", base_url="https://k.example/", username="partner", password="pw"
)
#: a destination whose Kuper source has "Дедублицировать всегда" switched on
DEDUP_DEST = DEST.model_copy(update={"deduplicate": True})
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
        ({"utm": {"utm_source": "src", "utm_medium": "cpc"}}, "utm.utm_medium"),
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
    ) == Throttled(retry_after=timedelta(seconds=2), reason="HTTP 429")
    assert isinstance(ADAPTER.parse_response(httpx.Response(401), batch, DEST), Suspended)
    assert isinstance(ADAPTER.parse_response(httpx.Response(502), batch, DEST), Failed)
    assert isinstance(
        ADAPTER.parse_response(httpx.Response(200, text="<html>"), batch, DEST), Failed
    )


def test_too_few_details_is_a_failure_not_a_guess() -> None:
    batch = deliveries("79158881122", "79158881133")
    response = answer({"phone": "79158881122", "success": True})
    assert isinstance(ADAPTER.parse_response(response, batch, DEST), Failed)


def in_doubt(delivery: Delivery) -> Delivery:
    """The same lead after a send whose answer was lost."""
    return Delivery(
        id=delivery.id,
        lead_id=delivery.lead_id,
        payload=delivery.payload,
        attempt=2,
        created_at=delivery.created_at,
        in_doubt=True,
    )


DUPLICATE = {
    "phone": "79158881122",
    "success": False,
    "error": "",
    "deduplication": {"applied": True, "message": "дубль"},
}


def test_deduplication_is_the_sources_setting_off_unless_the_destination_says_so() -> None:
    """Kuper deduplicates only where the source has "Дедублицировать всегда" on."""
    assert DEST.deduplicate is False
    assert ADAPTER.deduplicates_for(DEST) is False
    assert ADAPTER.deduplicates_for(DEDUP_DEST) is True


def test_on_a_deduplicating_source_a_skipped_lead_in_doubt_was_our_own_earlier_send() -> None:
    """After a lost answer, the source's dedup of the resend means the first send arrived."""
    (fresh,) = deliveries("79158881122")
    [outcome] = ADAPTER.parse_response(answer(DUPLICATE), [in_doubt(fresh)], DEDUP_DEST)  # type: ignore[misc]
    assert isinstance(outcome, Delivered) and "earlier send" in outcome.detail
    [fresh_outcome] = ADAPTER.parse_response(answer(DUPLICATE), [fresh], DEDUP_DEST)  # type: ignore[misc]
    assert fresh_outcome == Rejected("дубль", data={"deduplication": DUPLICATE["deduplication"]})


def test_without_the_sources_deduplication_a_skip_is_kupers_no_even_in_doubt() -> None:
    """The source does not deduplicate for us: a skip is not proof of our earlier send."""
    (fresh,) = deliveries("79158881122")
    [outcome] = ADAPTER.parse_response(answer(DUPLICATE), [in_doubt(fresh)], DEST)  # type: ignore[misc]
    assert isinstance(outcome, Rejected) and outcome.reason == "дубль"


@pytest.mark.parametrize("status", [400, 422])
def test_a_request_refused_whole_is_split_not_every_lead_rejected(status: int) -> None:
    """Kuper does not say which lead broke its schema: the loop halves the batch."""
    batch = deliveries("79158881122", "79158881133")
    response = httpx.Response(status, json={"message": "vacancy_id: должно быть числом"})
    assert ADAPTER.parse_response(response, batch, DEST) == Split(
        f"Kuper refused the request (HTTP {status}): vacancy_id: должно быть числом"
    )


@pytest.mark.parametrize(
    ("response", "words"),
    [
        (httpx.Response(422, json={"message": "vacancy_id: должно быть числом"}), "vacancy_id"),
        (httpx.Response(400, text="<html>Bad Request</html>"), "HTTP 400"),
    ],
)
def test_a_one_lead_request_refused_whole_is_that_leads_refusal(
    response: httpx.Response, words: str
) -> None:
    """Alone in its request, the lead is the one Kuper refused, in Kuper's words."""
    [outcome] = ADAPTER.parse_response(response, deliveries("79158881122"), DEST)  # type: ignore[misc]
    assert isinstance(outcome, Rejected) and words in outcome.reason


def test_a_refusal_of_many_leads_without_json_is_split_too() -> None:
    batch = deliveries("79158881122", "79158881133")
    answer_ = ADAPTER.parse_response(httpx.Response(400, text="<html>"), batch, DEST)
    assert isinstance(answer_, Split) and "HTTP 400" in answer_.reason


@pytest.mark.parametrize("status", [404, 405, 409, 413, 415])
def test_a_4xx_the_document_does_not_show_is_retried_not_a_refusal_of_the_leads(
    status: int,
) -> None:
    """A wrong path or method is ours or Kuper's to fix, not the leads' fault."""
    answer_ = ADAPTER.parse_response(
        httpx.Response(status, json={"message": "x"}), deliveries("79158881122"), DEST
    )
    assert isinstance(answer_, Failed) and f"HTTP {status}" in answer_.reason
