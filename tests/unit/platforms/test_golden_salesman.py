"""
SalesMan's document, example by example: each request it shows, built by our
adapter with the same parameters; each answer it shows, read with the meaning
it gives. The examples are copied from `salesman-crm-leads.txt` as they stand.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from worker.leads import Delivery, LeadState
from worker.outcomes import Delivered, StatusUpdate, Suspended
from worker.platforms.salesman import (
    SalesmanAdapter,
    SalesmanDestination,
    list_request,
    marker,
)

ADAPTER = SalesmanAdapter()

ADD_EXAMPLE = (
    "http(s)://crm_url/developer/v1/leads?login=vladislav%40isaler.ru"
    "&apikey=aMgiCQyj8bCToNc47BZZYrRICoWSIl&action=add"
    "&title=%D0%90%D0%BD%D0%B4%D1%80%D0%B5%D0%B5%D0%B2+%D0%B2%D0%BB%D0%B0%D0%B4%D0%B8%D1%81"
    "%D0%BB%D0%B0%D0%B2&email=vladislav%40god.ry&phone=%2B79001234567&company=SalesMan"
    "&description=The+best+crm+practice&ip=127.0.0.1&country=Ruusia&city=Perm&path=Test+Path"
    "&partner="
)
STAT_EXAMPLE = (
    "http(s)://crm_url/developer/v1/leads?login=vladislav@isaler.ru"
    "&apikey=aMgiCQyj8bCToNc47BZZYrRICoWSIl&action=stat"
)
INFO_EXAMPLE = (
    "http(s)://crm_url/developer/v1/leads?login=vladislav@isaler.ru"
    "&apikey=aMgiCQyj8bCToNc47BZZYrRICoWSIl&action=info&id=1"
)
LIST_EXAMPLE = (
    "http(s)://crm_url/developer/v1/leads?login=vladislav%40isaler.ru"
    "&apikey=gCG01Q5MA8msP1jXuQUC&action=list&offset=0&order=datum&first="
    "&dateStart=2016-03-20&dateEnd=2017-03-29"
)
ADD_ANSWER = '{"result":{"text":"Success","id":940}}'
STAT_ANSWER = """{
 "data":[
  {"title":"vladislav@isaler.ru","open":"2","processed":"1"},
  {"title":"viktor@isaler.ru","open":"0","processed":"0"}
 ]
}"""
#: the fields the document lists for a `list` record, filled as a processed lead
LIST_RECORD = {
    "id": "940",
    "datum": "2017-03-28",
    "datum_do": "2017-03-29",
    "email": "vladislav@god.ry",
    "phone": "+79001234567",
    "site": "",
    "company": "SalesMan",
    "city": "Perm",
    "country": "Ruusia",
    "content": "The best crm practice",
    "clid": "12",
    "client": "SalesMan",
    "pid": "34",
    "person": "Андреев владислав",
    "did": "0",
    "deal": "",
    "user": "5",
    "userName": "Владислав",
    "status": "2",
    "statusName": "Обработан",
    "rezult": "4",
    "rezultName": "Не целевой",
    "clientpath": "3",
    "clientpathName": "Test Path",
}


def example(url: str) -> dict[str, str]:
    """An example's parameters, decoded, one value each."""
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def sent(request: httpx.Request) -> dict[str, str]:
    """What a request of ours carries: its query string and its form body together."""
    params = dict(parse_qsl(request.url.query.decode(), keep_blank_values=True))
    params.update(parse_qsl(request.content.decode(), keep_blank_values=True))
    return params


def dest_of(url: str) -> SalesmanDestination:
    """A destination with the example's own login and key, on the example's host."""
    params = example(url)
    return SalesmanDestination.model_validate(
        {
            "name": "crm",
            "platform": "salesman",
            "base_url": "https://crm_url",
            "login": params["login"],
            "api_key": params["apikey"],
        }
    )


def delivery(payload: dict[str, Any], **kw: Any) -> Delivery:
    return Delivery(
        id=1,
        lead_id="golden",
        payload=ADAPTER.validate(payload),
        attempt=1,
        created_at=datetime(2017, 3, 28, 12, tzinfo=UTC),
        **kw,
    )


def answer(text: str, request: httpx.Request | None = None) -> httpx.Response:
    return httpx.Response(200, text=text, headers={"Content-Type": "text/html"}, request=request)


# --- requests -------------------------------------------------------------------------


def test_the_add_example_is_what_we_send() -> None:
    """
    The same parameters, as a form POST to the same path. Two differences, both
    ours by design: our marker ends the description, and the blank `partner`
    is left out (to the CRM a blank and an absent field are the same).
    """
    doc = example(ADD_EXAMPLE)
    fields = {k: v for k, v in doc.items() if k not in ("login", "apikey", "action")}
    request = ADAPTER.build_request([delivery(fields)], dest_of(ADD_EXAMPLE))
    assert (request.method, request.url.path) == ("POST", "/developer/v1/leads")
    assert request.url.query == b""  # the key stays out of the URL
    expected = {k: v for k, v in doc.items() if v != ""}
    expected["description"] = f"{doc['description']} {marker('golden')}"
    assert sent(request) == expected
    assert doc["title"] == "Андреев владислав"


def test_the_stat_example_is_what_we_send() -> None:
    request = ADAPTER.build_stat(dest_of(STAT_EXAMPLE))
    assert request.url.path == "/developer/v1/leads"
    assert sent(request) == example(STAT_EXAMPLE)


def test_the_info_example_is_what_we_send_for_ops_and_for_a_poll_alone() -> None:
    dest = dest_of(INFO_EXAMPLE)
    lead = delivery({"email": "vladislav@god.ry"}, external_id="1", state=LeadState.DELIVERED)
    info = ADAPTER.build_info(lead, dest)
    poll = ADAPTER.build_poll([lead], dest, datetime(2017, 3, 29, tzinfo=UTC))
    assert info is not None and poll is not None
    assert sent(info) == sent(poll) == example(INFO_EXAMPLE)


def test_the_list_example_is_what_we_send() -> None:
    """`first=` blank in the example: the CRM's default order (new)."""
    dest = dest_of(LIST_EXAMPLE)
    request = list_request(
        dest, page=0, date_start=date(2016, 3, 20), date_end=date(2017, 3, 29), first=""
    )
    assert sent(request) == example(LIST_EXAMPLE)


def test_lookups_and_polls_use_only_the_list_examples_parameters() -> None:
    """No parameter the document does not give `list`."""
    dest = dest_of(LIST_EXAMPLE)
    lead = delivery({"email": "vladislav@god.ry"}, external_id="1")
    now = datetime(2017, 3, 29, tzinfo=UTC)
    lookup = ADAPTER.build_lookup(lead, dest, now, page=2)
    poll = ADAPTER.build_poll([lead, lead], dest, now, page=1)
    assert lookup is not None and poll is not None
    for request in (lookup, poll):
        assert set(sent(request)) <= set(example(LIST_EXAMPLE))
        assert sent(request)["action"] == "list"


# --- answers --------------------------------------------------------------------------


def test_the_add_answer_is_a_delivery_with_its_id() -> None:
    """`{"result":{"text":"Success","id":940}}`: the lead is in the CRM as record 940."""
    lead = delivery({"email": "vladislav@god.ry"})
    got = ADAPTER.parse_response(answer(ADD_ANSWER), [lead], dest_of(ADD_EXAMPLE))
    assert got == [Delivered(external_id="940", detail="Success")]


def test_the_stat_answer_counts_open_and_processed_per_manager() -> None:
    """ "Логин сотрудника => Открыто, Обработано", the counts as numbers."""
    assert ADAPTER.parse_stat(answer(STAT_ANSWER)) == {
        "managers": [
            {"login": "vladislav@isaler.ru", "open": 2, "processed": 1},
            {"login": "viktor@isaler.ru", "open": 0, "processed": 0},
        ]
    }


@pytest.mark.parametrize(
    ("code", "meaning"),
    [("400", "API key"), ("401", "login"), ("402", "method")],
)
def test_the_three_error_codes_pause_the_destination(code: str, meaning: str) -> None:
    """400 – Не верный API key, 401 – Неизвестный пользователь, 402 – Неизвестный метод."""
    lead = delivery({"email": "vladislav@god.ry"})
    body = json.dumps({"error": {"code": code}})
    got = ADAPTER.parse_response(answer(body), [lead], dest_of(ADD_EXAMPLE))
    assert isinstance(got, Suspended)
    assert meaning in got.reason


def test_a_list_record_reads_its_status_and_result_by_the_documents_tables() -> None:
    """status '2' => 'Обработан', rezult '4' => 'Не целевой'; names ours when the CRM omits them."""
    dest = dest_of(LIST_EXAMPLE)
    lead = delivery({"email": "vladislav@god.ry"}, external_id="940")
    other = delivery({"email": "viktor@isaler.ru"}, external_id="941")
    bare = {k: v for k, v in LIST_RECORD.items() if k not in ("statusName", "rezultName")}
    for record in (LIST_RECORD, bare):
        request = ADAPTER.build_poll([lead, other], dest, datetime(2017, 3, 29, tzinfo=UTC))
        body = json.dumps({"data": [record]}, ensure_ascii=False)
        first, _ = ADAPTER.parse_poll(answer(body, request), [lead, other], dest)  # type: ignore[misc]
        assert isinstance(first, StatusUpdate)
        assert first.detail == "Обработан/Не целевой"


def test_the_info_answer_is_a_data_array() -> None:
    """ "В поле “data” приходит массив с данными по заявке"."""
    dest = dest_of(INFO_EXAMPLE)
    lead = delivery({"email": "vladislav@god.ry"}, external_id="940")
    request = ADAPTER.build_info(lead, dest)
    body = json.dumps({"data": [LIST_RECORD]}, ensure_ascii=False)
    shown = ADAPTER.parse_info(answer(body, request))
    assert (shown["id"], shown["status_name"], shown["rezult_name"]) == (
        "940",
        "Обработан",
        "Не целевой",
    )
