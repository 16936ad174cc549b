"""The SalesMan emulator over a real socket, driven by the SalesMan adapter."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from sandbox import salesman as salesman_sandbox
from sandbox import serve
from worker.leads import Delivery, LeadState
from worker.outcomes import Delivered, Failed, NotSeen, Rejected, StatusUpdate, Suspended
from worker.platforms.salesman import (
    LOOKUP_PAGES,
    PAGE,
    SalesmanAdapter,
    SalesmanDestination,
    list_request,
    marker,
    records,
)

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


def test_the_documents_own_get_example_is_accepted(http: httpx.Client) -> None:
    """The add URL from the document, with this CRM's login and key, adds the lead."""
    query = (
        "action=add&title=%D0%90%D0%BD%D0%B4%D1%80%D0%B5%D0%B5%D0%B2+%D0%B2%D0%BB%D0%B0%D0%B4"
        "%D0%B8%D1%81%D0%BB%D0%B0%D0%B2&email=vladislav%40god.ry&phone=%2B79001234567"
        "&company=SalesMan&description=The+best+crm+practice&ip=127.0.0.1&country=Ruusia"
        "&city=Perm&path=Test+Path&partner="
    )
    auth = httpx.QueryParams({"login": LOGIN, "apikey": KEY})
    body = json.loads(http.get(f"{LEADS}?{auth}&{query}").text)
    assert body["result"]["text"] == "Success"
    (record,) = [r for r in log(http) if r.get("action") == "add"]
    assert record["id"] == body["result"]["id"]


def test_a_form_field_wins_over_the_same_name_in_the_query(
    http: httpx.Client, dest: SalesmanDestination
) -> None:
    """PHP's `$_REQUEST`: the POSTed value of a parameter beats the query's."""
    answer = http.post(
        LEADS,
        params={"login": LOGIN, "apikey": "wrong", "action": "stat"},
        data={"apikey": KEY, "action": "add", "email": "a@b.ru"},
    )
    assert json.loads(answer.text)["result"]["text"] == "Success"
    (record,) = listed(http, dest)
    assert record["email"] == "a@b.ru"


@pytest.mark.parametrize(
    ("action", "extra"),
    [
        ("add", {"name": "Иван"}),  # the document's field is `title`
        ("add", {"utm_referrer": "x"}),  # in the public source, not in the document
        ("stat", {"id": "1"}),
        ("info", {"offset": "0"}),
        ("list", {"limit": "500"}),
    ],
)
def test_a_parameter_the_document_does_not_give_is_refused(
    http: httpx.Client, dest: SalesmanDestination, action: str, extra: dict[str, str]
) -> None:
    """A misread field fails loudly here instead of vanishing as it would in PHP."""
    params = {"login": LOGIN, "apikey": KEY, "action": action, "email": "a@b.ru", **extra}
    if action != "add":
        params.pop("email")
    answer = http.post(LEADS, data=params)
    assert answer.status_code == 400
    assert next(iter(extra)) in answer.text
    assert listed(http, dest) == []


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


def test_info_answers_with_a_data_array(http: httpx.Client, dest: SalesmanDestination) -> None:
    """ "В поле “data” приходит массив": one record in an array; an empty one for an unknown id."""
    crm_id = add(http, dest, delivery()).external_id
    asked = {"login": LOGIN, "apikey": KEY, "action": "info"}
    known = json.loads(http.post(LEADS, data={**asked, "id": crm_id}).text)
    assert isinstance(known["data"], list)
    assert [r["id"] for r in known["data"]] == [crm_id]
    assert json.loads(http.post(LEADS, data={**asked, "id": "1"}).text) == {"data": []}


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


# --- a CRM that ignores list's paging, order and dates, as the public source does -----


@pytest.fixture(scope="module")
def unpaged_url() -> Iterator[str]:
    """An emulator whose `list` ignores offset, order, first, dateStart and dateEnd."""
    app = salesman_sandbox.create_app(login=LOGIN, api_key=KEY, honours_paging=False)
    with serve(app) as url:
        yield url


@pytest.fixture
def unpaged(unpaged_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=unpaged_url, timeout=5) as client:
        client.post("/__sandbox__/reset").raise_for_status()
        yield client


def test_an_unpaged_list_is_the_newest_200_whatever_is_asked(unpaged: httpx.Client) -> None:
    """Every page, either order, any dates: the same newest 200 records, newest first."""
    dest = destination(str(unpaged.base_url))
    old = seed(unpaged, 50, datum="2026-01-10")
    new = seed(unpaged, PAGE + 10)
    newest = [r["id"] for r in listed(unpaged, dest)]
    assert newest == new[::-1][:PAGE]
    for kw in (
        {"page": 1},
        {"page": 3, "first": "old"},
        {"date_start": date(2026, 1, 9), "date_end": date(2026, 1, 11)},
    ):
        assert [r["id"] for r in listed(unpaged, dest, **kw)] == newest
    assert old[0] not in newest


def lookup_pages(client: httpx.Client, dest: SalesmanDestination, lead: Delivery) -> list[Any]:
    """The lookup's verdict page after page, as the delivery loop reads them."""
    verdicts: list[Any] = []
    for page in range(LOOKUP_PAGES):
        request = ADAPTER.build_lookup(lead, dest, datetime.now(UTC), page)
        assert request is not None
        verdicts.append(ADAPTER.parse_lookup(client.send(request), lead, dest))
        if not isinstance(verdicts[-1], NotSeen):
            break
    return verdicts


def test_an_unpaged_crm_never_makes_a_buried_lead_look_absent(unpaged: httpx.Client) -> None:
    """Our add landed, 250 came after it: the pages repeat, so the lead is held, not resent."""
    dest = destination(str(unpaged.base_url))
    lead = delivery()
    unpaged.post("/__sandbox__/faults", json={"handle": True, "cut": True}).raise_for_status()
    with pytest.raises(httpx.HTTPError):
        unpaged.send(ADAPTER.build_request([lead], dest))
    seed(unpaged, 250)
    *looked, last = lookup_pages(unpaged, dest, lead)
    assert looked == [NotSeen()] * (LOOKUP_PAGES - 1)
    assert isinstance(last, Rejected)
    assert last.state == LeadState.DEAD
    assert marker(lead.lead_id) in last.reason


def test_an_unpaged_crm_shows_a_lead_on_its_newest_page(unpaged: httpx.Client) -> None:
    """Looked up before newer leads bury it, the lead is on the one page there is."""
    dest = destination(str(unpaged.base_url))
    seed(unpaged, PAGE + 50)
    lead = delivery()
    outcome = add(unpaged, dest, lead)
    (found,) = lookup_pages(unpaged, dest, lead)
    assert isinstance(found, Delivered)
    assert found.external_id == outcome.external_id


def test_an_unpaged_crm_with_few_leads_proves_a_lead_absent(unpaged: httpx.Client) -> None:
    """Fewer than 200 records in all: the page is the whole CRM, so the lead is not there."""
    dest = destination(str(unpaged.base_url))
    seed(unpaged, 30)
    assert lookup_pages(unpaged, dest, delivery()) == [None]


def test_an_unpaged_crm_whose_page_reaches_old_records_proves_a_lead_absent(
    unpaged: httpx.Client,
) -> None:
    """The newest 200 go back past the lead's time: had it arrived, it would be among them."""
    dest = destination(str(unpaged.base_url))
    seed(unpaged, PAGE + 20, datum="2026-01-10")
    assert lookup_pages(unpaged, dest, delivery()) == [None]


def test_an_unpaged_crm_full_of_the_day_befores_records_holds_the_lead(
    unpaged: httpx.Client,
) -> None:
    """
    A full page of the day before's records (which "after the day before" may
    keep): nothing proves the lead absent, the repeated pages never reach it,
    so it is held after the last page, never resent.
    """
    dest = destination(str(unpaged.base_url))
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    seed(unpaged, PAGE, datum=yesterday)
    *looked, held = lookup_pages(unpaged, dest, delivery())
    assert all(isinstance(v, NotSeen) for v in looked)
    assert isinstance(held, Rejected) and held.state == LeadState.DEAD


def test_a_paged_crm_finds_a_buried_lead_pages_further(
    http: httpx.Client, dest: SalesmanDestination
) -> None:
    """The same 250 newer leads, a CRM that pages: found on page 1, never held."""
    lead = delivery()
    outcome = add(http, dest, lead)
    seed(http, 250)
    assert lookup_pages(http, dest, lead)[:1] == [NotSeen()]
    found = lookup_pages(http, dest, lead)[-1]
    assert isinstance(found, Delivered)
    assert found.external_id == outcome.external_id


def test_a_paged_crm_deeper_than_the_lookup_reads_holds_the_lead(
    http: httpx.Client, dest: SalesmanDestination
) -> None:
    """Buried under more than LOOKUP_PAGES pages: held (dead, in doubt), never sent blind."""
    lead = delivery()
    add(http, dest, lead)
    seed(http, PAGE * LOOKUP_PAGES + 1)
    *looked, last = lookup_pages(http, dest, lead)
    assert looked == [NotSeen()] * (LOOKUP_PAGES - 1)
    assert isinstance(last, Rejected)
    assert last.state == LeadState.DEAD


def test_reconciliation_reaches_a_buried_lead_by_info_on_an_unpaged_crm(
    unpaged: httpx.Client,
) -> None:
    """Not on the one page there is: NotSeen, then info alone brings its status in."""
    dest = destination(str(unpaged.base_url))
    first, second = delivery(), delivery()
    ids = [add(unpaged, dest, d).external_id for d in (first, second)]
    seed(unpaged, PAGE)
    for crm_id in ids:
        moved = {"id": crm_id, "status": "3", "rezult": "2"}
        unpaged.post("/__sandbox__/salesman/status", json=moved).raise_for_status()
    batch = [
        replace(d, external_id=i, state=LeadState.DELIVERED)
        for d, i in zip((first, second), ids, strict=True)
    ]
    request = ADAPTER.build_poll(batch, dest, datetime.now(UTC))
    assert request is not None
    answers = ADAPTER.parse_poll(unpaged.send(request), batch, dest)
    assert answers == [NotSeen(), NotSeen()]
    alone = ADAPTER.build_poll(batch[:1], dest, datetime.now(UTC))
    assert alone is not None
    (update,) = ADAPTER.parse_poll(unpaged.send(alone), batch[:1], dest)  # type: ignore[misc]
    assert isinstance(update, StatusUpdate)
    assert update.detail == "Закрыт/Дубль"
    assert [e["action"] for e in log(unpaged)][-2:] == ["list", "info"]


def test_reconciliation_pages_on_a_paged_crm(http: httpx.Client, dest: SalesmanDestination) -> None:
    """Page 0 misses the older lead, page 1 has it."""
    first, second = delivery(), delivery()
    crm_first = add(http, dest, first).external_id
    seed(http, PAGE)
    crm_second = add(http, dest, second).external_id
    http.post("/__sandbox__/salesman/status", json={"id": crm_first, "status": "1"})
    batch = [
        replace(first, external_id=crm_first, state=LeadState.DELIVERED),
        replace(second, external_id=crm_second, state=LeadState.DELIVERED),
    ]
    now = datetime.now(UTC)
    page0 = ADAPTER.build_poll(batch, dest, now)
    assert page0 is not None
    missed, seen = ADAPTER.parse_poll(http.send(page0), batch, dest)  # type: ignore[misc]
    assert missed == NotSeen()
    assert isinstance(seen, StatusUpdate) and seen.detail == "Открыт"
    page1 = ADAPTER.build_poll(batch, dest, now, page=1)
    assert page1 is not None
    update, _ = ADAPTER.parse_poll(http.send(page1), batch, dest)  # type: ignore[misc]
    assert isinstance(update, StatusUpdate) and update.detail == "В работе"
