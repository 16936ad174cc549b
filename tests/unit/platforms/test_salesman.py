"""The SalesMan adapter: the body decides, never the status; markers; reconciliation."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from worker.errors import LeadInvalid
from worker.leads import Delivery, LeadState
from worker.outcomes import Delivered, Failed, Rejected, Suspended, Throttled
from worker.platforms.salesman import SalesmanAdapter, SalesmanDestination, marker

ADAPTER = SalesmanAdapter()
DEST = SalesmanDestination(
    name="s",
    platform="salesman",
    base_url="https://crm.example",
    login="manager@example.com",
    api_key="APIKEY123",
)
GOOD = {"title": "Иван", "phone": "8 (900) 123-45-67", "email": "ivan@example.com"}


def delivery(**kw: Any) -> Delivery:
    return Delivery(
        id=1,
        lead_id="abc123",
        payload=ADAPTER.validate(GOOD),
        attempt=1,
        created_at=datetime(2026, 11, 22, 10, tzinfo=UTC),
        **kw,
    )


def html(body: Any, status: int = 200) -> httpx.Response:
    text = body if isinstance(body, str) else json.dumps(body)
    return httpx.Response(status, text=text, headers={"Content-Type": "text/html"})


def test_the_lead_is_normalised() -> None:
    assert ADAPTER.validate(GOOD)["phone"] == "+79001234567"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"ip": "999.1.1.1"}, "ip"),
        ({"phone": "12"}, "phone"),
        ({"title": 5}, "title"),
        ({"fax": "x"}, "fax"),
        ({"phone": None, "email": None}, "lead"),
    ],
)
def test_broken_rules_name_the_field(change: dict[str, Any], field: str) -> None:
    lead = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(LeadInvalid) as info:
        ADAPTER.validate(lead)
    assert field in [e.field for e in info.value.errors]
    assert "123-45" not in str(info.value)


def test_the_apikey_travels_in_the_body_never_the_url_and_the_marker_is_added() -> None:
    request = ADAPTER.build_request([delivery()], DEST)
    assert "APIKEY123" not in str(request.url)
    form = parse_qs(request.content.decode())
    assert form["apikey"] == ["APIKEY123"]
    assert form["action"] == ["add"]
    assert form["description"] == [marker("abc123")]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"result": {"text": "Success", "id": 940}}, Delivered),
        ({"result": "Error", "error": {"code": "400", "text": "Не верный API key"}}, Suspended),
        ({"result": "Error", "error": {"code": "401", "text": "?"}}, Suspended),
        ({"result": "Error", "error": {"code": "402", "text": "?"}}, Suspended),
        (
            {"error": {"code": "1", "text": "Не переданы данные"}, "Error": "Не переданы данные"},
            Rejected,
        ),
        ("<b>Fatal error</b>: Uncaught exception in /var/www/api.php", Failed),
    ],
)
def test_the_body_decides_whatever_the_status(body: Any, expected: type) -> None:
    answer = ADAPTER.parse_response(html(body), [delivery()], DEST)
    got = answer[0] if isinstance(answer, list) else answer
    assert isinstance(got, expected)
    if isinstance(got, Delivered):
        assert got.external_id == "940"


def test_429_is_throttled() -> None:
    assert isinstance(ADAPTER.parse_response(html("", 429), [delivery()], DEST), Throttled)


def test_a_lost_add_is_found_by_its_marker() -> None:
    records = [
        {"id": "7", "content": "title: other"},
        {"id": "8", "content": f"description: {marker('abc123')}", "status": "1"},
    ]
    found = ADAPTER.parse_lookup(html({"data": records}), delivery(in_doubt=True), DEST)
    assert isinstance(found, Delivered)
    assert found.external_id == "8"
    assert ADAPTER.parse_lookup(html({"data": records[:1]}), delivery(), DEST) is None


def test_reconciliation_names_status_and_result() -> None:
    record = {"id": "8", "status": "3", "rezult": "2"}
    (update,) = ADAPTER.parse_poll(html({"data": [record]}), [delivery(external_id="8")], DEST)  # type: ignore[misc]
    assert update is not None
    assert update.state == LeadState.DELIVERED
    assert update.data["crm"]["status_name"] == "Закрыт"
    assert update.data["crm"]["rezult_name"] == "Дубль"
