"""
Golden tests: the examples of Calltouch's document "Добавление
пользовательских полей к лидам", as the document prints them, against our
adapter. Its request example is what `validate` then `build_request` send;
each of its answers is read by `parse_response` with the meaning the
document gives it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from worker.leads import Delivery
from worker.outcomes import Delivered, Rejected, Retry
from worker.platforms.calltouch import CalltouchAdapter, CalltouchDestination

# The request example, copied from the document with three repairs and
# nothing else: the comments `// Лид 1` and `// Лид N` and the `...` that
# stands for more leads are left out (the one lead is the whole body), and the
# `}` that closes `leadContactParams` is put back: the document closes the
# leadContact rule with `},` but never the params object inside it.
DOC_REQUEST_TEXT = """
{
    "leads": [
        {
            "matching": [
                {
                    "type": "request",
                    "requestParams": {
                        "requestId": 1,
                        "tags": ["тег1", "тег2"],
                        "tagsLogic": "and"
                    }
                },
                {
                    "type": "leadContact",
                    "leadContactParams": {
                         "emails": ["name@server.com"],
                         "phones": ["79157771122", "+7 (915) 888-11-22"],
                         "searchAmongPhonesInText": false,
                         "date": "Дата и время лида",
                         "tags": ["тег1","тег2"],
                         "tagsLogic": "and",
                         "leadTypeToMatch": "nearest",
                         "searchDepth": 262800
                    }
                },
                {
                    "type": "requestContact",
                    "requestContactParams": {
                        "emails": ["name@server.com"],
                        "phones": ["79157771122", "+7 (915) 888-11-22"],
                        "md5Phones": ["4fec00b25336e719d4a0b255ea5aa0f5"],
                        "date": "Дата и время заявки",
                        "requestTypeToMatch": "nearestUniq",
                        "searchDepth": 262800
                    }
                }
            ],
            "addCustomFields": {
                "overwrite": false,
                "customFields":
                    [
                         {"field": "test_field", "value": "test value"},
                         {"field": "name", "value": 123.4},
                         {"field": "birthday", "value": "1990-01-01"}
                    ]
             }
        }
    ]
}
"""

# The success answer, copied with one repair: the comma after
# `"isCustomFieldsAdded": true` that the document leaves out.
DOC_SUCCESS_TEXT = """
{
    "meta": [],
    "data": {
        "leads": [
            {
                "matchedType": "request",
                "callInfo": null,
                "requestInfo": {
                    "requestId": 1257513,
                    "requestNumber": "1257513"
                },
                "isCustomFieldsAdded": true,
                "error": null
            }
        ]
    }
}
"""

# The validation error answer, copied as printed.
DOC_VALIDATION_ERROR_TEXT = """
{
    "meta": [],
    "data": {
        "type": "validationError",
        "apiErrorData": null,
        "validationErrorData": {
            "violations": [{
                "fieldPath": "leads[0].addCustomFields.customFields",
                "message": "This value should not be blank."
            }]
        }
    }
}
"""

DOC_REQUEST: dict[str, Any] = json.loads(DOC_REQUEST_TEXT)
DOC_SUCCESS: dict[str, Any] = json.loads(DOC_SUCCESS_TEXT)
DOC_VALIDATION_ERROR: dict[str, Any] = json.loads(DOC_VALIDATION_ERROR_TEXT)

#: "POST: https://api.calltouch.ru/lead-service/v1/api/customfield/lead/add"
DOC_URL = "https://api.calltouch.ru/lead-service/v1/api/customfield/lead/add"
SITE_ID, TOKEN = "48213", "doc-access-token"
ADAPTER = CalltouchAdapter()
DEST = CalltouchDestination(
    name="ct",
    platform="calltouch",
    base_url="https://api.calltouch.ru",
    site_id=SITE_ID,
    access_token=TOKEN,
)


def deliveries(payloads: Sequence[Mapping[str, Any]]) -> list[Delivery]:
    return [
        Delivery(id=i, lead_id=f"l{i}", payload=p, attempt=1, created_at=datetime.now(UTC))
        for i, p in enumerate(payloads)
    ]


def read(status: int, body: Any, leads: int = 1) -> Any:
    """parse_response of one answer for `leads` deliveries of the doc's lead."""
    batch = deliveries([ADAPTER.validate(DOC_REQUEST["leads"][0])] * leads)
    return ADAPTER.parse_response(httpx.Response(status, json=body), batch, DEST)


# --- the request -------------------------------------------------------------------


def test_the_docs_request_example_is_what_we_send() -> None:
    """The doc's lead, through validate and build_request, is the doc's body to the doc's URL.

    One difference, and only one: the masked phone `+7 (915) 888-11-22` goes as
    its digits. The example itself mixes both forms in one array, so Calltouch
    takes either; we send one form so the same phone is the same lead.
    """
    leads = [ADAPTER.validate(lead) for lead in DOC_REQUEST["leads"]]
    request = ADAPTER.build_request(deliveries(leads), DEST)
    as_digits = DOC_REQUEST_TEXT.replace('"+7 (915) 888-11-22"', '"79158881122"')
    assert as_digits != DOC_REQUEST_TEXT
    assert json.loads(request.content) == json.loads(as_digits)
    assert request.method == "POST"
    assert str(request.url) == DOC_URL


def test_the_request_carries_access_token_and_site_id() -> None:
    """The doc's two headers: Access-Token (the API key) and SiteId (the project)."""
    request = ADAPTER.build_request(deliveries([ADAPTER.validate(DOC_REQUEST["leads"][0])]), DEST)
    assert request.headers["Access-Token"] == TOKEN
    assert request.headers["SiteId"] == SITE_ID
    assert request.headers["Content-Type"] == "application/json"  # "в формате JSON"


# --- the answers -------------------------------------------------------------------


def test_the_docs_success_answer_delivers_the_lead_to_its_request() -> None:
    """isCustomFieldsAdded true: added; requestInfo filled: added to request 1257513."""
    [outcome] = read(200, DOC_SUCCESS)
    assert isinstance(outcome, Delivered)
    assert outcome.external_id == "1257513"
    assert outcome.data["matchedType"] == "request"
    assert outcome.data["requestInfo"] == {"requestId": 1257513, "requestNumber": "1257513"}
    assert "callInfo" not in outcome.data  # null: nothing was added to a call


def test_the_flag_as_the_docs_table_spells_it_is_read_too() -> None:
    """The table names the flag `isCustonFieldsAdded`; an answer spelled so means the same."""
    body = json.loads(DOC_SUCCESS_TEXT.replace("isCustomFieldsAdded", "isCustonFieldsAdded"))
    [outcome] = read(200, body)
    assert isinstance(outcome, Delivered) and outcome.external_id == "1257513"


def test_the_docs_success_answer_with_the_flag_false_is_not_delivered() -> None:
    """false: the fields were not added, and `error` is the reason the doc says it shows."""
    body = json.loads(DOC_SUCCESS_TEXT)
    answer = body["data"]["leads"][0]
    answer.update(isCustomFieldsAdded=False, error="Поле не найдено")
    [outcome] = read(200, body)
    assert isinstance(outcome, Rejected) and outcome.reason == "Поле не найдено"


@pytest.mark.parametrize("status", [200, 400, 422])
def test_the_docs_validation_error_rejects_the_lead_it_names(status: int) -> None:
    """The doc's violation names leads[0]: that lead is refused with its path and message.

    The doc does not give the HTTP status of this answer, so its meaning must not
    depend on one.
    """
    [outcome] = read(status, DOC_VALIDATION_ERROR)
    assert isinstance(outcome, Rejected)
    assert outcome.reason == "addCustomFields.customFields: This value should not be blank."
    assert outcome.data == {
        "violations": [
            {
                "fieldPath": "addCustomFields.customFields",
                "message": "This value should not be blank.",
            }
        ]
    }


def test_after_the_docs_validation_error_the_other_leads_are_sent_again() -> None:
    """Nothing was added ("добавление ... не выполняется"): the others go again at once."""
    rejected, *others = read(400, DOC_VALIDATION_ERROR, leads=3)
    assert isinstance(rejected, Rejected)
    assert [type(o) for o in others] == [Retry, Retry]
    assert all(isinstance(o, Retry) and o.after == timedelta(0) for o in others)
