"""The Calltouch adapter: the door's rules, the request, and each answer read as outcomes."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from sandbox import calltouch as calltouch_sandbox
from worker.errors import LeadInvalid
from worker.leads import Delivery, LeadState
from worker.outcomes import Delivered, Failed, LeadOutcome, Rejected, Retry, Suspended, Throttled
from worker.platforms.calltouch import (
    POINTS_EXHAUSTED,
    RESEND_REASON,
    CalltouchAdapter,
    CalltouchDestination,
)

ADAPTER = CalltouchAdapter()
DEST = CalltouchDestination(
    name="ct",
    platform="calltouch",
    base_url="https://ct.example/",
    site_id="1234",
    access_token="ct-token",
)

#: the doc's own example lead, as written there
DOC_LEAD: dict[str, Any] = {
    "matching": [
        {
            "type": "request",
            "requestParams": {"requestId": 1, "tags": ["тег1", "тег2"], "tagsLogic": "and"},
        },
        {
            "type": "leadContact",
            "leadContactParams": {
                "emails": ["name@server.com"],
                "phones": ["79157771122", "+7 (915) 888-11-22"],
                "searchAmongPhonesInText": False,
                "date": "Дата и время лида",
                "tags": ["тег1", "тег2"],
                "tagsLogic": "and",
                "leadTypeToMatch": "nearest",
                "searchDepth": 262800,
            },
        },
        {
            "type": "requestContact",
            "requestContactParams": {
                "emails": ["name@server.com"],
                "phones": ["79157771122", "+7 (915) 888-11-22"],
                "md5Phones": ["4fec00b25336e719d4a0b255ea5aa0f5"],
                "date": "Дата и время заявки",
                "requestTypeToMatch": "nearestUniq",
                "searchDepth": 262800,
            },
        },
    ],
    "addCustomFields": {
        "overwrite": False,
        "customFields": [
            {"field": "test_field", "value": "test value"},
            {"field": "name", "value": 123.4},
            {"field": "birthday", "value": "1990-01-01"},
        ],
    },
}


def lead(**changes: Any) -> dict[str, Any]:
    """The doc's lead with top-level keys replaced."""
    return {**copy.deepcopy(DOC_LEAD), **changes}


def rule(n: int) -> dict[str, Any]:
    return {"type": "request", "requestParams": {"requestId": n}}


def deliveries(n: int) -> list[Delivery]:
    payload = ADAPTER.validate(DOC_LEAD)
    return [
        Delivery(id=i, lead_id=f"l{i}", payload=payload, attempt=1, created_at=datetime.now(UTC))
        for i in range(n)
    ]


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers=headers)


def parse(response: httpx.Response, n: int) -> list[LeadOutcome]:
    """parse_response for n leads, where the answer must be one outcome per lead."""
    outcomes = ADAPTER.parse_response(response, deliveries(n), DEST)
    assert isinstance(outcomes, list), outcomes
    return outcomes


def added(request_id: int) -> dict[str, Any]:
    return {
        "matchedType": "request",
        "callInfo": None,
        "requestInfo": {"requestId": request_id, "requestNumber": str(request_id)},
        "isCustomFieldsAdded": True,
        "error": None,
    }


def not_added(error: str, matched: str | None = None) -> dict[str, Any]:
    return {
        "matchedType": matched,
        "callInfo": None,
        "requestInfo": None,
        "isCustomFieldsAdded": False,
        "error": error,
    }


def api_error(code: str, message: str) -> dict[str, Any]:
    return {
        "meta": [],
        "data": {
            "type": "apiError",
            "apiErrorData": {"errorCode": code, "errorMessage": message},
            "validationErrorData": None,
        },
    }


def violations(*pairs: tuple[str, str]) -> dict[str, Any]:
    found = [{"fieldPath": path, "message": message} for path, message in pairs]
    return {
        "meta": [],
        "data": {
            "type": "validationError",
            "apiErrorData": None,
            "validationErrorData": {"violations": found},
        },
    }


# --- validation at the door ----------------------------------------------------


def test_the_docs_example_lead_is_accepted_and_normalised() -> None:
    """The doc's lead passes; masked phones become digits, nothing else changes."""
    normalised = ADAPTER.validate(DOC_LEAD)
    params = normalised["matching"][1]["leadContactParams"]
    assert params["phones"] == ["79157771122", "79158881122"]
    assert normalised["matching"][0] == DOC_LEAD["matching"][0]
    assert normalised["addCustomFields"] == DOC_LEAD["addCustomFields"]


@pytest.mark.parametrize(
    ("raw", "field", "rule_words"),
    [
        (lead(matching=[]), "matching", "at least 1"),
        (lead(matching=[rule(n) for n in range(1, 22)]), "matching", "at most 20"),
        (lead(matching=[{"type": "email", "emailParams": {}}]), "matching[0].type", "'call'"),
        (lead(matching=[{"type": "request"}]), "matching[0]", "needs requestParams"),
        (
            lead(matching=[{**rule(1), "callParams": {"callId": 2}}]),
            "matching[0]",
            "no other params",
        ),
        (
            lead(matching=[{"type": "request", "requestParams": {"requestId": "777001"}}]),
            "matching[0].requestParams.requestId",
            "integer",
        ),
        (
            lead(matching=[{"type": "callContact", "callContactParams": {"date": "x"}}]),
            "matching[0].callContactParams",
            "needs phones to search by",
        ),
        (
            lead(matching=[{"type": "leadContact", "leadContactParams": {"date": "x"}}]),
            "matching[0].leadContactParams",
            "needs phones or emails to search by",
        ),
        (
            lead(matching=[{"type": "requestContact", "requestContactParams": {"date": "x"}}]),
            "matching[0].requestContactParams",
            "needs phones, emails or md5Phones to search by",
        ),
        (
            lead(addCustomFields={"customFields": [{"field": "f", "value": "v"}] * 21}),
            "addCustomFields.customFields",
            "at most 20",
        ),
        (
            lead(addCustomFields={"customFields": []}),
            "addCustomFields.customFields",
            "at least 1",
        ),
        (
            lead(
                addCustomFields={"overwrite": "yes", "customFields": [{"field": "f", "value": 1}]}
            ),
            "addCustomFields.overwrite",
            "boolean",
        ),
        (
            lead(addCustomFields={"customFields": [{"field": " ", "value": 1}]}),
            "addCustomFields.customFields[0].field",
            "at least 1",
        ),
        (
            lead(addCustomFields={"customFields": [{"field": "f", "value": True}]}),
            "addCustomFields.customFields[0].value",
            "a string or a number",
        ),
        ({"matching": [rule(1)]}, "addCustomFields", "required"),
    ],
)
def test_a_broken_rule_names_calltouchs_field_path(
    raw: dict[str, Any], field: str, rule_words: str
) -> None:
    """Each refusal names the path as Calltouch's fieldPath would, and the rule broken."""
    with pytest.raises(LeadInvalid) as info:
        ADAPTER.validate(raw)
    errors = {e.field: e.rule for e in info.value.errors}
    assert field in errors, errors
    assert rule_words in errors[field]


def test_a_refusal_never_carries_the_value() -> None:
    """Phones, e-mails and ids a lead carries never appear in the error."""
    raw = lead(
        matching=[
            {"type": "request", "requestParams": {"requestId": "777001"}},
            {"type": "leadContact", "leadContactParams": {"phones": ["call 79150001122"]}},
            {"type": "requestContact", "requestContactParams": {"emails": ["who@where"]}},
        ]
    )
    with pytest.raises(LeadInvalid) as info:
        ADAPTER.validate(raw)
    text = str(info.value)
    assert "777001" not in text and "0001122" not in text and "who@where" not in text


PHONE = "79157771122"


def contact(kind: str, **params: Any) -> dict[str, Any]:
    """The doc's lead with one rule of `kind` (`leadContact`, …) holding `params`."""
    return lead(matching=[{"type": kind, f"{kind}Params": params}])


def refusals(raw: dict[str, Any]) -> dict[str, str]:
    """The door's errors for `raw`, field path → rule."""
    with pytest.raises(LeadInvalid) as info:
        ADAPTER.validate(raw)
    return {e.field: e.rule for e in info.value.errors}


@pytest.mark.parametrize("key", ["tags", "tagsLogic"])
@pytest.mark.parametrize("value", [["тег1"], "and", None])
def test_request_contact_refuses_tags_the_doc_shows_only_elsewhere(key: str, value: Any) -> None:
    """requestContactParams takes no tags or tagsLogic (the doc: request and leadContact only)."""
    errors = refusals(contact("requestContact", phones=[PHONE], **{key: value}))
    path = f"matching[0].requestContactParams.{key}"
    assert list(errors) == [path]
    assert "not taken by requestContact" in errors[path]
    assert "request and leadContact only" in errors[path]


@pytest.mark.parametrize(
    "params",
    [
        {"phones": [PHONE], "emails": ["name@server.com"]},
        {"emails": ["name@server.com"]},
        {"phones": [PHONE], "emails": None},
    ],
    ids=["beside a phone", "the only key", "null"],
)
def test_call_contact_refuses_emails(params: dict[str, Any]) -> None:
    """The doc finds a call by phone and date: callContactParams.emails is refused, named."""
    errors = refusals(contact("callContact", **params))
    path = "matching[0].callContactParams.emails"
    assert list(errors) == [path]
    assert errors[path] == "not taken by callContact: Calltouch finds a call by phone and date"


@pytest.mark.parametrize(
    "raw",
    [
        lead(matching=[{"type": "request", "requestParams": {"requestId": 1, "tags": []}}]),
        contact("leadContact", phones=[PHONE], tags=[], tagsLogic="and"),
        contact("callContact", phones=[PHONE], tags=[]),
    ],
    ids=["request", "leadContact", "callContact"],
)
def test_an_empty_tags_array_is_refused_as_blank(raw: dict[str, Any]) -> None:
    """Calltouch reads `tags: []` as blank; the door refuses it with the path and the rule."""
    kind = raw["matching"][0]["type"]
    path = f"matching[0].{kind}Params.tags"
    errors = refusals(raw)
    assert list(errors) == [path]
    assert "at least 1 item" in errors[path]


def test_every_key_the_doc_shows_is_still_taken() -> None:
    """Each params key of the doc's example, and callContact's phone search, pass the door."""
    call = {
        "phones": [PHONE],
        "date": "Дата и время звонка",
        "tags": ["тег1"],
        "tagsLogic": "or",
        "callTypeToMatch": "nearest",
        "searchDepth": 60,
    }
    raw = lead(matching=[*DOC_LEAD["matching"], {"type": "callContact", "callContactParams": call}])
    normalised = ADAPTER.validate(raw)
    assert normalised["matching"][2] == {
        **DOC_LEAD["matching"][2],
        "requestContactParams": {
            **DOC_LEAD["matching"][2]["requestContactParams"],
            "phones": [PHONE, "79158881122"],
        },
    }
    assert normalised["matching"][3]["callContactParams"] == call
    emails_only = ADAPTER.validate(contact("requestContact", emails=["name@server.com"]))
    assert emails_only["matching"][0]["requestContactParams"] == {"emails": ["name@server.com"]}


#: rule shapes near the edges of what each params object takes, the refused ones included
SHAPES: list[dict[str, Any]] = [
    {"type": "request", "requestParams": {"requestId": 1, "tags": ["t"], "tagsLogic": "or"}},
    {"type": "request", "requestParams": {"requestId": 1, "tags": []}},
    {"type": "requestContact", "requestContactParams": {"emails": ["a@b.ru"], "tags": ["t"]}},
    {"type": "requestContact", "requestContactParams": {"phones": [PHONE], "tagsLogic": "and"}},
    {"type": "requestContact", "requestContactParams": {"md5Phones": ["0" * 32]}},
    {"type": "callContact", "callContactParams": {"emails": ["a@b.ru"]}},
    {"type": "callContact", "callContactParams": {"phones": [PHONE], "emails": ["a@b.ru"]}},
    {"type": "callContact", "callContactParams": {"phones": [PHONE], "tags": ["t"]}},
    {"type": "callContact", "callContactParams": {"phones": [PHONE], "tags": []}},
    {"type": "leadContact", "leadContactParams": {"emails": ["a@b.ru"], "tags": []}},
    {"type": "leadContact", "leadContactParams": {"emails": ["a@b.ru"], "tags": ["t"]}},
    {"type": "leadContact", "leadContactParams": {"phones": ["+7 (915) 888-11-22"]}},
]


@pytest.mark.parametrize("shape", SHAPES, ids=[json.dumps(s) for s in SHAPES])
def test_what_the_door_takes_the_emulator_takes(shape: dict[str, Any]) -> None:
    """
    A lead the door accepts is valid to Calltouch's emulator as we send it; a
    lead the door refuses, the emulator refuses too: none is accepted by us
    and then rejected by the platform.
    """
    raw = lead(matching=[shape])
    try:
        sent = ADAPTER.validate(raw)
    except LeadInvalid:
        assert calltouch_sandbox.violations({"leads": [raw]})
    else:
        assert calltouch_sandbox.violations({"leads": [sent]}) == []


def test_destination_caps_the_batch_at_100_and_takes_durations_as_seconds() -> None:
    """batch_size above 100 is refused; unmatched_retry may be written in seconds."""
    base = {"name": "ct", "platform": "calltouch", "base_url": "https://x", "site_id": "1"}
    with pytest.raises(ValidationError):
        CalltouchDestination.model_validate({**base, "access_token": "t", "batch_size": 101})
    dest = CalltouchDestination.model_validate({**base, "access_token": "t", "unmatched_retry": 90})
    assert dest.unmatched_retry == timedelta(seconds=90)
    assert dest.batch_size == 100


def test_destinations_on_one_egress_share_one_limiter_scope() -> None:
    """Calltouch counts per source IP: the scope is the egress, not the account."""
    one = DEST.model_copy(update={"egress": "nat-1"})
    other = one.model_copy(update={"name": "ct2", "site_id": "99"})
    assert one.limiter_scope == other.limiter_scope == "calltouch:egress:nat-1"
    assert one.model_copy(update={"limiter_key": "own"}).limiter_scope == "own"
    assert DEST.limiter_scope.startswith("calltouch:egress:")


# --- the request -----------------------------------------------------------------


def test_request_carries_the_leads_and_both_headers() -> None:
    """POST {"leads": [...]} to the documented path, with Access-Token and SiteId."""
    request = ADAPTER.build_request(deliveries(2), DEST)
    assert request.method == "POST"
    assert request.url == "https://ct.example/lead-service/v1/api/customfield/lead/add"
    assert request.headers["Access-Token"] == "ct-token"
    assert request.headers["SiteId"] == "1234"
    body = json.loads(request.content)
    assert len(body["leads"]) == 2
    assert body["leads"][0] == ADAPTER.validate(DOC_LEAD)


# --- the answer -----------------------------------------------------------------------


def test_added_fields_deliver_with_the_matched_id() -> None:
    """isCustomFieldsAdded true → Delivered, with Calltouch's id and what matched."""
    body = {"meta": [], "data": {"leads": [added(1257513), added(8)]}}
    outcomes = ADAPTER.parse_response(answer(200, body), deliveries(2), DEST)
    assert outcomes == [
        Delivered(
            external_id="1257513",
            detail="custom fields added to request",
            data={
                "matchedType": "request",
                "requestInfo": {"requestId": 1257513, "requestNumber": "1257513"},
            },
        ),
        Delivered(
            external_id="8",
            detail="custom fields added to request",
            data={"matchedType": "request", "requestInfo": {"requestId": 8, "requestNumber": "8"}},
        ),
    ]


def test_a_call_match_delivers_with_the_call_id() -> None:
    """A match on a call takes callInfo.callId as the external id."""
    one = {
        **added(1),
        "matchedType": "call",
        "requestInfo": None,
        "callInfo": {"callId": "5501", "callReferenceId": None, "sipCallId": "s"},
    }
    [outcome] = parse(answer(200, {"data": {"leads": [one]}}), 1)
    assert isinstance(outcome, Delivered) and outcome.external_id == "5501"


def test_nothing_matched_retries_until_the_horizon_then_unmatched() -> None:
    """Not found yet → Retry every unmatched_retry until unmatched_horizon, ending unmatched."""
    body = {"data": {"leads": [not_added("Лид не найден")]}}
    [outcome] = parse(answer(200, body), 1)
    assert outcome == Retry(
        reason="Лид не найден",
        after=timedelta(minutes=30),
        horizon=timedelta(hours=24),
        give_up_as=LeadState.UNMATCHED,
    )


def test_other_lead_errors_reject_in_calltouchs_words() -> None:
    """Found but not added (a missing custom field) is final, in the platform's words."""
    body = {
        "data": {
            "leads": [
                not_added("Пользовательское поле не создано", matched="request"),
                not_added("Пользовательское поле «x» не создано в ЛК"),
            ]
        }
    }
    outcomes = parse(answer(200, body), 2)
    assert [type(o) for o in outcomes] == [Rejected, Rejected]
    assert isinstance(outcomes[0], Rejected)
    assert outcomes[0].reason == "Пользовательское поле не создано"


def test_a_validation_error_rejects_the_named_lead_and_resends_the_others() -> None:
    """Each violation rejects lead i with its fieldPath; the rest go again at once."""
    body = violations(
        ("leads[1].addCustomFields.customFields", "This value should not be blank."),
        ("leads[1].matching[0].type", "The value you selected is not a valid choice."),
    )
    outcomes = ADAPTER.parse_response(answer(400, body), deliveries(3), DEST)
    resend = Retry(RESEND_REASON, after=timedelta(0))
    assert outcomes == [
        resend,
        Rejected(
            "addCustomFields.customFields: This value should not be blank.; "
            "matching[0].type: The value you selected is not a valid choice.",
            data={
                "violations": [
                    {
                        "fieldPath": "addCustomFields.customFields",
                        "message": "This value should not be blank.",
                    },
                    {
                        "fieldPath": "matching[0].type",
                        "message": "The value you selected is not a valid choice.",
                    },
                ]
            },
        ),
        resend,
    ]


def test_a_validation_error_naming_no_lead_fails_the_request() -> None:
    """A violation about the request itself (leads too many) blames no lead: Failed."""
    body = violations(("leads", "This collection should contain 100 elements or less."))
    outcome = ADAPTER.parse_response(answer(400, body), deliveries(2), DEST)
    assert isinstance(outcome, Failed) and "100 elements" in outcome.reason


def test_429_throttles_with_retry_after() -> None:
    """429 → Throttled, carrying Retry-After when Calltouch sends one."""
    response = answer(429, api_error("tooManyRequests", "Too Many Requests"), {"Retry-After": "2"})
    assert ADAPTER.parse_response(response, deliveries(1), DEST) == Throttled(
        retry_after=timedelta(seconds=2), reason="HTTP 429"
    )


def test_5xx_fails_the_request() -> None:
    """A 502 retries every lead of the request."""
    outcome = ADAPTER.parse_response(answer(502, b"bad gateway"), deliveries(2), DEST)
    assert isinstance(outcome, Failed)


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_suspend_the_destination(status: int) -> None:
    """401/403 → Suspended (auth), in Calltouch's words, never the token."""
    body = api_error("invalidToken", "Некорректный API-токен")
    outcome = ADAPTER.parse_response(answer(status, body), deliveries(1), DEST)
    assert isinstance(outcome, Suspended) and not outcome.until_quota_reset
    assert "invalidToken" in outcome.reason and "ct-token" not in outcome.reason


def test_spent_points_suspend_until_the_quota_resets() -> None:
    """The points-exhausted apiError pauses the destination until its daily reset."""
    body = api_error(POINTS_EXHAUSTED, "Суточный лимит баллов API исчерпан")
    outcome = ADAPTER.parse_response(answer(403, body), deliveries(1), DEST)
    assert isinstance(outcome, Suspended) and outcome.until_quota_reset


@pytest.mark.parametrize(
    "response",
    [
        answer(200, b"<html>not json</html>"),
        answer(200, {"meta": [], "data": {"something": "else"}}),
        answer(200, {"data": {"leads": [{"matchedType": "request"}]}}),
        answer(200, {"data": {"leads": [added(1), added(2)]}}),
        answer(200, [1, 2]),
        answer(400, api_error("badRequest", "Malformed JSON")),
    ],
    ids=["not-json", "unknown-shape", "lead-shape", "count-mismatch", "array", "api-error"],
)
def test_an_answer_we_cannot_map_fails_without_raising(response: httpx.Response) -> None:
    """Broken JSON, an unknown shape or a wrong count of leads → Failed, never an exception."""
    assert isinstance(ADAPTER.parse_response(response, deliveries(1), DEST), Failed)


@pytest.mark.parametrize("address", ["a@b..ru", "a..b@mail.ru", "a@-mail.ru", "name@server"])
def test_matching_emails_follow_email_validators_rules(address: str) -> None:
    raw = lead(matching=[{"type": "requestContact", "requestContactParams": {"emails": [address]}}])
    with pytest.raises(LeadInvalid) as info:
        ADAPTER.validate(raw)
    [error] = [e for e in info.value.errors if "emails" in e.field]
    assert "not a valid email address" in error.rule
    assert address not in str(info.value)
