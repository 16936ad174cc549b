"""
Admitad's document, example by example: each request example is built by our
adapter with the same method, path and parameters (modulo order), and each
answer example is read with the meaning the document gives it.

The document's JSON answers end objects with a trailing comma (`"algorithm":
[...],\n}`), which no JSON parser takes; they are copied here verbatim and the
comma removed by `_doc_json`, nothing else.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx

from worker.leads import Delivery, LeadState
from worker.outcomes import Pending, StatusUpdate
from worker.platforms.admitad import AdmitadAdapter, AdmitadDestination, campaigns, rules

ADAPTER = AdmitadAdapter()
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
W_ID = 7


def destination(**overrides: Any) -> AdmitadDestination:
    table = {
        "name": "admitad",
        "platform": "admitad",
        "base_url": "https://api.admitad.com",
        "website_id": W_ID,
        "client_id": "client",
        "client_secret": "s3cret",
        "staging": "server",
        **overrides,
    }
    return AdmitadDestination.model_validate(table)


def _doc_json(text: str) -> Any:
    """An answer as the document prints it, less its trailing commas."""
    return json.loads(re.sub(r",(\s*[}\]])", r"\1", text))


def form(request: httpx.Request) -> dict[str, str]:
    parsed = parse_qs(request.content.decode(), keep_blank_values=True)
    assert all(len(v) == 1 for v in parsed.values()), "a field sent twice"
    return {k: v[0] for k, v in parsed.items()}


def delivery(raw: dict[str, Any], stage: int = 0, **kw: Any) -> Delivery:
    return Delivery(1, "lead-1", ADAPTER.validate(raw), 1, NOW, stage=stage, **kw)


# ---------------------------------------------------------------- create

#: curl … -X POST https://api.admitad.com/website/{w_id}/broker/applications/create/
CREATE_EXAMPLE = {
    "campaigns": "[17809, 17810]",
    "first_name": "Иван",
    "last_name": "Иванов",
    "middle_name": "Иванович",
    "mobile_phone": "03512345678",
    "work_date": "11.11.2016",
    "email": "ivanov11123test@gmail.com",
}

CREATE_ANSWER = """{
"id": 1,
"subid": "",
"subid1": "",
"subid3": "",
"subid2": "",
"subid4": "",
"responses": [
{
"campaign_id": 17809,
"status": "processing",
"order_id": null,
"server_response": {
"message": "objects_list_returned_ok",
"code": 200,
"data": false
}
}
],
"errors": [
{
"campaign_id": 17810,
"message": "Кампания не принимает заявки брокеров."
}
],
"algorithm": [{"ids": [17809],
"pause": 0}],
}"""


def test_the_create_example_is_built_field_for_field() -> None:
    """
    The document's curl create: the same URL and fields, `campaigns` byte for
    byte. Ours adds what the document requires (`user_notified`) and the marker.
    """
    raw: dict[str, Any] = {
        **{k: v for k, v in CREATE_EXAMPLE.items() if k != "campaigns"},
        "campaigns": json.loads(CREATE_EXAMPLE["campaigns"]),
        "user_notified": 1,
    }
    request = ADAPTER.build_request([delivery(raw)], destination())
    assert request.method == "POST"
    assert str(request.url) == f"https://api.admitad.com/website/{W_ID}/broker/applications/create/"
    sent = form(request)
    assert {k: sent[k] for k in CREATE_EXAMPLE} == CREATE_EXAMPLE
    assert set(sent) - set(CREATE_EXAMPLE) == {"user_notified", "subid4"}
    assert sent["user_notified"] == "1"


def test_the_algorithm_example_is_sent_as_written() -> None:
    """The document's algorithm example, with pauses, goes as the same JSON array."""
    example = (
        '[{"ids": [17809, 16126], "pause": 0}, {"ids": [17288, 16651],\n'
        '"pause": 150},{"ids": [16633],"pause": 80}]'
    )
    raw = {"campaigns": example, "user_notified": 1}
    sent = form(ADAPTER.build_request([delivery(raw)], destination()))
    assert campaigns.normalise(sent["campaigns"]) == campaigns.normalise(example)
    assert json.loads(sent["campaigns"]) == [
        [17809, 16126],
        {"ids": [17288, 16651], "pause": 150},
        {"ids": [16633], "pause": 80},
    ]


def test_the_equivalence_example_reads_as_the_document_says() -> None:
    """`[17809, 16126, [17288, 16651], {"ids": [16633]}, …]` is five stages, bare ids one each."""
    short = '[17809, 16126, [17288, 16651], {"ids": [16633]}, {"ids": [16326, 14605],"pause": 150}]'
    long = """[{"ids": [17809], "pause": 0},
{"ids": [16126], "pause": 0},
{"ids": [17288, 16651], "pause": 0},
{"ids": [16633], "pause": 0},
{"ids": [16326, 14605], "pause": 150}]"""
    assert campaigns.normalise(short) == campaigns.normalise(long)
    assert [s.ids for s in campaigns.normalise(short)] == [
        (17809,),
        (16126,),
        (17288, 16651),
        (16633,),
        (16326, 14605),
    ]
    assert campaigns.compact(campaigns.normalise(long)) == json.loads(
        short.replace('{"ids": [16633]}', "16633")
    )


def test_the_create_answer_example_is_a_pending_application() -> None:
    """
    id 1 created; 17809 `processing` (queued for the program); 17810 in
    errors[] ("takes no broker applications") and left out of `algorithm`.
    """
    raw = {"campaigns": [17809, 17810], "user_notified": 1}
    d = delivery(raw, stage=0)
    (outcome,) = ADAPTER.parse_response(
        httpx.Response(200, json=_doc_json(CREATE_ANSWER)), [d], destination()
    )
    assert isinstance(outcome, Pending)
    assert outcome.external_id == "1"
    assert outcome.state == LeadState.AWAITING_STATUS
    assert outcome.data["errors"] == [
        {"campaign_id": 17810, "message": "Кампания не принимает заявки брокеров."}
    ]
    assert outcome.detail == "17809: processing"


def test_the_create_answer_leaves_a_client_stage_undecided() -> None:
    """The same answer for stage [17809, 17810] sent by us: 17810 answered, 17809 still queued."""
    raw = {"campaigns": [[17809, 17810], 16633], "user_notified": 1}
    d, dest = delivery(raw, stage=1), destination(staging="client")
    body = _doc_json(CREATE_ANSWER)
    waiting = LeadState.AWAITING_STATUS
    assert ADAPTER.next_stage_due(d, dest, waiting, body, NOW) is None
    body["responses"][0]["status"] = "declined"
    assert ADAPTER.next_stage_due(d, dest, waiting, body, NOW) == NOW


# ---------------------------------------------------------------- sync_create and confirm

SYNC_EXAMPLE = (
    "campaign_id=65&first_name=Иван&last_name=Иванов&middle_name=Иванович"
    "&mobile_phone=03512345678&work_date=11.11.2016&email=ivanov11123test@gmail.com"
)

SMS_ANSWER = """{
"status": "waiting_sms_verification",
"application_id": 123,
"server_response":
{
"bank": "responded this"
},
}"""


def test_the_sync_create_example_is_built_field_for_field() -> None:
    """The document's sync_create: the same URL and fields, plus consent and the marker."""
    expected = dict(pair.split("=", 1) for pair in SYNC_EXAMPLE.split("&"))
    raw = {
        **{k: v for k, v in expected.items() if k != "campaign_id"},
        "campaigns": [65],
        "user_notified": 1,
        "sms_verification": True,
    }
    request = ADAPTER.build_request([delivery(raw)], destination())
    assert str(request.url) == (
        f"https://api.admitad.com/website/{W_ID}/broker/applications/sync_create/"
    )
    sent = form(request)
    assert {k: sent[k] for k in expected} == expected
    assert set(sent) - set(expected) == {"user_notified", "subid4"}


def test_the_sync_create_answer_waits_for_the_code() -> None:
    """`waiting_sms_verification` with application_id 123: the lead waits for its code."""
    outcome = ADAPTER.parse_sync_create(
        httpx.Response(200, json=_doc_json(SMS_ANSWER)), destination()
    )
    assert isinstance(outcome, Pending)
    assert (outcome.state, outcome.external_id) == (LeadState.WAITING_CODE, "123")
    assert outcome.wait == timedelta(minutes=15)


def test_the_confirm_example_and_its_answer() -> None:
    """`-d 'code=1234'`; the answer (waiting_sms_verification again) means: poll the application."""
    request = ADAPTER.build_confirm("123", "1234", destination())
    assert request.method == "POST"
    assert str(request.url) == (
        f"https://api.admitad.com/website/{W_ID}/broker/applications/sync_create/123/confirm"
    )
    assert form(request) == {"code": "1234"}
    outcome = ADAPTER.parse_confirm(httpx.Response(200, json=_doc_json(SMS_ANSWER)), destination())
    assert isinstance(outcome, Pending)
    assert (outcome.state, outcome.external_id) == (LeadState.AWAITING_STATUS, "123")


# ---------------------------------------------------------------- list

LIST_ANSWER = """{
"results": [
{
"id": 1,
"subid": "",
"subid1": "",
"subid3": "",
"subid2": "",
"subid4": "",
"responses": [
{
"campaign_id": 17809,
"status": "processing",
"order_id": null,
"server_response": {
"message": "objects_list_returned_ok",
"code": 200,
"data": false
}
}
],
"algorithm": [{
"ids": [17809],"pause": 0}],
}
],
"_meta": {
"count": 1,
"limit": 1,
"offset": 0
}
}"""

#: the list's documented parameters
LIST_PARAMS = {
    "offset",
    "limit",
    "order_by",
    "id",
    "campaign",
    "status",
    "date_start",
    "date_end",
    "order_id",
    "subid",
    "subid1",
    "subid2",
    "subid3",
    "subid4",
}


def test_polls_and_lookups_use_the_list_with_documented_parameters_only() -> None:
    """`GET …/broker/applications/?offset=0&limit=1` and friends: no parameter of our own."""
    dest = destination()
    one = delivery({"campaigns": [17809], "user_notified": 1}, external_id="1")
    requests = [
        ADAPTER.build_poll([one], dest, NOW),
        ADAPTER.build_poll([one, one], dest, NOW, page=1),
        ADAPTER.build_lookup(one, dest, NOW),
    ]
    for request in requests:
        assert request is not None
        assert request.method == "GET"
        assert request.url.path == f"/website/{W_ID}/broker/applications/"
        assert set(request.url.params) <= LIST_PARAMS
        date = request.url.params.get("date_start")
        assert date is None or datetime.strptime(date, "%d.%m.%Y")
        assert request.url.params.get("order_by", "date_created") in (
            "date_created",
            "-date_created",
        )


def test_the_list_answer_example_is_an_application_still_queued() -> None:
    """17809 `processing`: the application awaits its status; nothing changed for a fresh one."""
    d = delivery(
        {"campaigns": [17809], "user_notified": 1},
        external_id="1",
        state=LeadState.AWAITING_STATUS,
    )
    response = httpx.Response(200, json=_doc_json(LIST_ANSWER))
    (update,) = ADAPTER.parse_poll(response, [d], destination())  # type: ignore[misc]
    assert isinstance(update, StatusUpdate)
    assert update.state == LeadState.AWAITING_STATUS
    assert update.detail == "17809: processing"


# ---------------------------------------------------------------- campaign_settings

SETTINGS_ANSWER = """{
"results": [
{
"field_name": "first_name",
"regexp": "^[a-zA-Z]+$",
"required": true,
"description": ""
},
{
"field_name": "last_name",
"regexp": "^[a-zA-Z]+$",
"required": true,
"description": ""
},
{
"field_name": "middle_name",
"regexp": "",
"required": true,
"description": ""
},
{
"field_name": "product_type",
"regexp": "^[1,3,7,8]{1}$",
"required": true,
"description": "1-credit; 3-card; 7-gold-card; 8-platinum-card"
}
]
}"""


def test_the_settings_example_is_the_programs_rules() -> None:
    """
    `GET /broker/campaign_settings/{c_id}/`; its answer: four required fields,
    Latin names, product_type one of 1, 3, 7, 8, middle_name by the table's rule.
    """
    request = rules.build_settings_request(17809, destination())
    assert (request.method, str(request.url)) == (
        "GET",
        "https://api.admitad.com/broker/campaign_settings/17809/",
    )
    program = rules.parse_settings(SETTINGS_ANSWER)
    assert [(r.field, r.regexp, r.required) for r in program.fields] == [
        ("first_name", "^[a-zA-Z]+$", True),
        ("last_name", "^[a-zA-Z]+$", True),
        ("middle_name", "", True),
        ("product_type", "^[1,3,7,8]{1}$", True),
    ]
    good = {"first_name": "Ivan", "last_name": "Ivanov", "middle_name": "I", "product_type": "3"}
    assert rules.check_program(good, 17809, program) == []
    bad = {"first_name": "Иван", "last_name": "Ivanov", "product_type": "2"}
    assert [str(e) for e in rules.check_program(bad, 17809, program)] == [
        "campaign 17809: first_name: must match ^[a-zA-Z]+$",
        "campaign 17809: middle_name: required by the program",
        "campaign 17809: product_type: must match ^[1,3,7,8]{1}$",
    ]
