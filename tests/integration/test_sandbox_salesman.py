"""The SalesMan emulator over a real socket, driven by the SalesMan adapter."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest

from worker.leads import Delivery, LeadState
from worker.outcomes import Delivered, Failed, NotSeen, Rejected, StatusUpdate, Suspended
from worker.platforms.salesman import (
    PAGE,
    SalesmanAdapter,
    SalesmanDestination,
    list_request,
    marker,
    records,
)
from worker.sandbox import salesman as salesman_sandbox
from worker.sandbox import serve

LOGIN = "manager@example.com"
KEY = "salesman-sandbox-apikey"
LEADS = "/developer/v1/leads"
ADAPTER = SalesmanAdapter()
_phones = itertools.count(9001000001)


@pytest.fixture(scope="module")
def salesman_url() -> Iterator[str]:
    """One emulator for the module, on a loopback port."""
    with serve(salesman_sandbox.create_app(login=LOGIN, api_key=KEY)) as url:
        yield url


@pytest.fixture
def http(salesman_url: str) -> Iterator[httpx.Client]:
    """A client on an emulator just reset (no records, faults or log)."""
    with httpx.Client(base_url=salesman_url, timeout=5) as client:
        client.post("/__sandbox__/reset").raise_for_status()
        yield client


@pytest.fixture
def dest(salesman_url: str) -> SalesmanDestination:
    """A destination with the emulator's own credentials."""
    return destination(salesman_url)


def destination(url: str, **changes: Any) -> SalesmanDestination:
    """A destination on the emulator, with the emulator's credentials unless changed."""
    table = {"name": "crm", "platform": "salesman", "base_url": url, "login": LOGIN}
    return SalesmanDestination.model_validate({**table, "api_key": KEY, **changes})


def delivery(**changes: Any) -> Delivery:
    """A fresh lead, validated at the door, claimed now."""
    payload = ADAPTER.validate(
        {
            "title": "Иван Петров",
            "phone": f"+7 {next(_phones)}",
            "email": "ivan@example.com",
            "description": "хочет демо",
            **changes,
        }
    )
    return Delivery(
        id=1,
        lead_id=uuid.uuid4().hex,
        payload=payload,
        attempt=1,
        created_at=datetime.now(UTC),
    )


def add(http: httpx.Client, dest: SalesmanDestination, lead: Delivery) -> Any:
    """Send the lead's add and read the answer the adapter's way (one outcome)."""
    response = http.send(ADAPTER.build_request([lead], dest))
    answer = ADAPTER.parse_response(response, [lead], dest)
    return answer[0] if isinstance(answer, list) else answer


def listed(http: httpx.Client, dest: SalesmanDestination, **kw: Any) -> list[dict[str, Any]]:
    """One `list` page through the adapter's own request builder."""
    return [dict(r) for r in records(http.send(list_request(dest, **kw)))]


def seed(http: httpx.Client, count: int, datum: str | None = None) -> list[str]:
    """Leads that reached the CRM some other way."""
    spec: dict[str, Any] = {"count": count} | ({"datum": datum} if datum else {})
    response = http.post("/__sandbox__/salesman/seed", json=spec)
    response.raise_for_status()
    return list(response.json()["ids"])


def log(http: httpx.Client) -> list[dict[str, Any]]:
    """What the emulator recorded, in order."""
    return list(http.get("/__sandbox__/log").json())


# --- add ------------------------------------------------------------------------------


def test_an_add_is_delivered_with_the_crm_id_and_its_marker(
    http: httpx.Client, dest: SalesmanDestination
) -> None:
    """Success carries an id; the CRM's record holds our marker in its content."""
    lead = delivery()
    outcome = add(http, dest, lead)
    assert isinstance(outcome, Delivered)
    assert outcome.external_id is not None
    (record,) = listed(http, dest)
    assert record["id"] == outcome.external_id
    assert marker(lead.lead_id) in record["content"]
    assert record["phone"] == lead.payload["phone"]


def test_ids_increase_from_add_to_add(http: httpx.Client, dest: SalesmanDestination) -> None:
    """Each success names a new, larger id."""
    ids = [int(add(http, dest, delivery()).external_id) for _ in range(3)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 3


def test_every_answer_is_http_200_labelled_html(
    http: httpx.Client, dest: SalesmanDestination
) -> None:
    """Success and errors alike: the status never tells, the body does."""
    ok = http.send(ADAPTER.build_request([delivery()], dest))
    wrong = http.send(
        ADAPTER.build_request([delivery()], destination(str(http.base_url), api_key="x"))
    )
    for response in (ok, wrong):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
    assert json.loads(wrong.text)["error"]["code"] == "400"


def test_parameters_may_come_in_the_query_string_too(http: httpx.Client) -> None:
    """PHP reads `$_REQUEST`: the document's own GET example works."""
    params = {"login": LOGIN, "apikey": KEY, "action": "add", "email": "a@b.ru"}
    assert json.loads(http.get(LEADS, params=params).text)["result"]["text"] == "Success"


@pytest.mark.parametrize(
    ("changes", "code"),
    [({"api_key": "wrong-key"}, "400"), ({"login": "nobody@example.com"}, "401")],
)
def test_wrong_credentials_suspend_the_destination(
    http: httpx.Client, salesman_url: str, changes: dict[str, Any], code: str
) -> None:
    """400 wrong key, 401 unknown user (strings, HTTP 200): nothing is stored."""
    outcome = add(http, destination(salesman_url, **changes), delivery())
    assert isinstance(outcome, Suspended)
    assert code in outcome.reason
    assert listed(http, destination(salesman_url)) == []
    assert log(http)[0]["error"] == code


def test_an_unknown_action_answers_402(http: httpx.Client) -> None:
    """An action SalesMan does not have is "unknown method"."""
    answer = http.post(LEADS, data={"login": LOGIN, "apikey": KEY, "action": "delete"})
    assert json.loads(answer.text) == {
        "result": "Error",
        "error": {"code": "402", "text": "Неизвестный метод"},
    }


def test_an_add_without_title_phone_or_email_is_a_failed_add(
    http: httpx.Client, dest: SalesmanDestination
) -> None:
    """The failed-add shape has no `result` key; the adapter rejects that lead."""
    response = http.post(
        LEADS, data={"login": LOGIN, "apikey": KEY, "action": "add", "company": "ООО"}
    )
    body = json.loads(response.text)
    assert "result" not in body
    assert body["error"]["code"] == "1"
    assert isinstance(ADAPTER.parse_response(response, [delivery()], dest)[0], Rejected)  # type: ignore[index]


def test_the_apikey_is_never_logged(http: httpx.Client, dest: SalesmanDestination) -> None:
    """The emulator's log holds the action and the outcome, never the key."""
    add(http, dest, delivery())
    add(http, destination(str(http.base_url), api_key="another-secret"), delivery())
    entries = log(http)
    assert [(e["action"], e.get("error")) for e in entries] == [("add", None), ("add", "400")]
    assert KEY not in json.dumps(entries)
    assert "another-secret" not in json.dumps(entries)


# --- no deduplication, and the lookup that makes up for it ----------------------------


def test_an_add_sent_twice_makes_two_records(http: httpx.Client, dest: SalesmanDestination) -> None:
    """SalesMan has no deduplication: the same request twice is two leads (two e-mails)."""
    request = ADAPTER.build_request([delivery()], dest)
    first, second = http.send(request), http.send(request)
    assert json.loads(first.text)["result"]["id"] != json.loads(second.text)["result"]["id"]
    assert len(listed(http, dest)) == 2


def test_a_lost_answer_is_found_by_the_lookup_so_nothing_is_sent_again(
    http: httpx.Client, dest: SalesmanDestination
) -> None:
    """The CRM stores the add, the answer is cut; the lookup finds the record by marker."""
    lead = delivery()
    seed(http, 5)
    http.post("/__sandbox__/faults", json={"handle": True, "cut": True}).raise_for_status()
    with pytest.raises(httpx.HTTPError):
        http.send(ADAPTER.build_request([lead], dest))
    stored = [r for r in listed(http, dest) if marker(lead.lead_id) in r["content"]]
    lookup = ADAPTER.build_lookup(lead, dest, datetime.now(UTC))
    assert lookup is not None
    found = ADAPTER.parse_lookup(http.send(lookup), lead, dest)
    assert isinstance(found, Delivered)
    assert found.external_id == stored[0]["id"]
    assert [e["action"] for e in log(http) if e.get("action")] == ["add", "list", "list"]


def test_an_add_that_never_arrived_is_not_found(
    http: httpx.Client, dest: SalesmanDestination
) -> None:
    """Cut before the CRM handled it: the lookup answers None, so the lead is sent again."""
    lead = delivery()
    http.post("/__sandbox__/faults", json={"cut": True}).raise_for_status()
    with pytest.raises(httpx.HTTPError):
        http.send(ADAPTER.build_request([lead], dest))
    lookup = ADAPTER.build_lookup(lead, dest, datetime.now(UTC))
    assert lookup is not None
    assert ADAPTER.parse_lookup(http.send(lookup), lead, dest) is None


def test_a_php_error_page_after_the_insert_is_in_doubt_and_found(
    http: httpx.Client, dest: SalesmanDestination
) -> None:
    """PHP dies e-mailing the manager after storing the lead: Failed in doubt, then found."""
    lead = delivery()
    http.post("/__sandbox__/salesman/php_errors", json={"count": 1}).raise_for_status()
    outcome = add(http, dest, lead)
    assert isinstance(outcome, Failed)
    assert outcome.in_doubt
    lookup = ADAPTER.build_lookup(lead, dest, datetime.now(UTC))
    assert lookup is not None
    assert isinstance(ADAPTER.parse_lookup(http.send(lookup), lead, dest), Delivered)


def test_a_php_error_page_before_the_insert_is_in_doubt_and_not_found(
    http: httpx.Client, dest: SalesmanDestination
) -> None:
    """PHP dies before storing anything: the lookup finds nothing and the lead goes again."""
    lead = delivery()
    http.post("/__sandbox__/faults", json=salesman_sandbox.php_error_fault()).raise_for_status()
    outcome = add(http, dest, lead)
    assert isinstance(outcome, Failed)
    assert outcome.in_doubt
    lookup = ADAPTER.build_lookup(lead, dest, datetime.now(UTC))
    assert lookup is not None
    assert ADAPTER.parse_lookup(http.send(lookup), lead, dest) is None
    assert isinstance(add(http, dest, lead), Delivered)


def test_the_lookup_fails_rather_than_answering_not_found_on_an_error(
    http: httpx.Client, salesman_url: str
) -> None:
    """A wrong key on the lookup must not read as "not there, send again"."""
    from worker.errors import PlatformContractError

    lead = delivery()
    wrong = destination(salesman_url, api_key="wrong-key")
    lookup = ADAPTER.build_lookup(lead, wrong, datetime.now(UTC))
    assert lookup is not None
    with pytest.raises(PlatformContractError, match="400"):
        ADAPTER.parse_lookup(http.send(lookup), lead, wrong)


# --- list: pages of 200, order, dates -------------------------------------------------


def test_list_pages_hold_200_records_newest_first(
    http: httpx.Client, dest: SalesmanDestination
) -> None:
    """offset is the page number; first=new (the default) puts the newest first."""
    ids = seed(http, PAGE + 51)
    page0, page1 = listed(http, dest, page=0), listed(http, dest, page=1)
    assert (len(page0), len(page1), len(listed(http, dest, page=2))) == (PAGE, 51, 0)
    assert [r["id"] for r in page0 + page1] == ids[::-1]
    oldest_first = listed(http, dest, first="old")
    assert [r["id"] for r in oldest_first] == ids[:PAGE]


def test_the_lookup_finds_a_lead_behind_200_older_ones(
    http: httpx.Client, dest: SalesmanDestination
) -> None:
    """Newest first: a just-lost add is on page 0 however many leads came before it."""
    seed(http, PAGE + 30)
    lead = delivery()
    assert isinstance(add(http, dest, lead), Delivered)
    lookup = ADAPTER.build_lookup(lead, dest, datetime.now(UTC))
    assert lookup is not None
    assert isinstance(ADAPTER.parse_lookup(http.send(lookup), lead, dest), Delivered)


def test_a_lead_buried_under_200_newer_ones_is_on_the_lookups_next_page(
    http: httpx.Client, dest: SalesmanDestination
) -> None:
    """A full page without the marker is NotSeen (look further), not None (send again)."""
    lead = delivery()
    outcome = add(http, dest, lead)
    seed(http, PAGE)
    first = ADAPTER.build_lookup(lead, dest, datetime.now(UTC))
    assert first is not None
    assert isinstance(ADAPTER.parse_lookup(http.send(first), lead, dest), NotSeen)
    second = ADAPTER.build_lookup(lead, dest, datetime.now(UTC), page=1)
    assert second is not None
    found = ADAPTER.parse_lookup(http.send(second), lead, dest)
    assert isinstance(found, Delivered) and found.external_id == outcome.external_id


def test_date_filters_read_after_and_before_strictly(
    http: httpx.Client, dest: SalesmanDestination
) -> None:
    """dateStart keeps records created after that date, dateEnd before it."""
    seed(http, 2, datum="2026-01-10")
    day, before, after = date(2026, 1, 10), date(2026, 1, 9), date(2026, 1, 11)
    assert len(listed(http, dest, date_start=before)) == 2
    assert listed(http, dest, date_start=day) == []
    assert len(listed(http, dest, date_start=before, date_end=after)) == 2
    assert listed(http, dest, date_end=day) == []


# --- statuses, info, stat -------------------------------------------------------------


def test_statuses_reconcile_into_updates(http: httpx.Client, dest: SalesmanDestination) -> None:
    """A manager processes one lead (Обработан/Другое); the other, untouched, gives no update."""
    first, second = delivery(), delivery()
    ids = [add(http, dest, d).external_id for d in (first, second)]
    moved = {"id": ids[0], "status": "2", "rezult": "3"}
    http.post("/__sandbox__/salesman/status", json=moved).raise_for_status()
    batch = [
        replace(first, external_id=ids[0], state=LeadState.DELIVERED),
        replace(second, external_id=ids[1], state=LeadState.DELIVERED, data={"crm": _open()}),
    ]
    request = ADAPTER.build_poll(batch, dest, datetime.now(UTC))
    assert request is not None
    updates = ADAPTER.parse_poll(http.send(request), batch, dest)
    assert isinstance(updates, list)
    assert updates[1] is None
    assert isinstance(updates[0], StatusUpdate)
    assert (updates[0].state, updates[0].detail) == (LeadState.DELIVERED, "Обработан/Другое")
    assert updates[0].data["crm"]["rezult"] == "3"


def test_info_and_stat_show_the_crm_state(http: httpx.Client, dest: SalesmanDestination) -> None:
    """info names a lead's status and result; stat counts open and processed leads."""
    lead = delivery()
    crm_id = add(http, dest, lead).external_id
    add(http, dest, delivery())
    http.post("/__sandbox__/salesman/status", json={"id": crm_id, "status": "3", "rezult": "1"})
    probe = replace(lead, external_id=crm_id)
    request = ADAPTER.build_info(probe, dest)
    assert request is not None
    shown = ADAPTER.parse_info(http.send(request))
    assert (shown["id"], shown["status_name"], shown["rezult_name"]) == (crm_id, "Закрыт", "Спам")
    assert shown["datum_do"]
    stat = ADAPTER.parse_stat(http.send(ADAPTER.build_stat(dest)))
    assert stat == {"managers": [{"login": LOGIN, "open": 1, "processed": 1}]}


def test_info_for_an_unknown_id_has_no_record(
    http: httpx.Client, dest: SalesmanDestination
) -> None:
    """An id the CRM does not have: an empty data array, shown as an error entry."""
    request = ADAPTER.build_info(replace(delivery(), external_id="1"), dest)
    assert request is not None
    assert "no such lead" in ADAPTER.parse_info(http.send(request))["error"]


def _open() -> dict[str, str]:
    """The CRM state of a lead nobody has touched, as the ledger keeps it."""
    return {"status": "0", "status_name": "Открыт", "rezult": "", "rezult_name": ""}
