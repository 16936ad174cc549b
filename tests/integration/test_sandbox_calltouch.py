"""
The Calltouch emulator over a real socket, and the Calltouch adapter driven
against it: build_request → send → parse_response → the outcomes we expect.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from sandbox import calltouch as calltouch_sandbox
from sandbox import serve
from tests.unit.platforms.test_golden_calltouch import (
    DOC_REQUEST,
    DOC_SUCCESS,
    DOC_VALIDATION_ERROR,
)
from worker.leads import Delivery, LeadState
from worker.outcomes import (
    Answer,
    Delivered,
    Failed,
    LeadOutcome,
    Rejected,
    Retry,
    Suspended,
    Throttled,
)
from worker.platforms.calltouch import RESEND_REASON, CalltouchAdapter, CalltouchDestination

#: the document's path, written out here as the emulator writes it out
ADD_PATH = "/lead-service/v1/api/customfield/lead/add"
SITE_ID, TOKEN = "1234", "ct-secret-token"
UNKNOWN_PHONE = "79990001122"
FIELDS = {"test_field", "name", "birthday"}
HEADERS = {"Access-Token": TOKEN, "SiteId": SITE_ID}
ADAPTER = CalltouchAdapter()


@pytest.fixture(scope="module")
def calltouch_url() -> Iterator[str]:
    """One emulator for the module: one project, a phone it has never seen, three fields."""
    app = calltouch_sandbox.create_app(
        site_id=SITE_ID, access_token=TOKEN, unknown_phones={UNKNOWN_PHONE}, custom_fields=FIELDS
    )
    with serve(app) as url:
        yield url


@pytest.fixture
def client(calltouch_url: str) -> Iterator[httpx.Client]:
    """A client on an emulator just reset (log, stored fields and the rate window)."""
    with httpx.Client(base_url=calltouch_url, timeout=5) as http:
        http.post("/__sandbox__/reset").raise_for_status()
        yield http


@pytest.fixture
def dest(client: httpx.Client) -> CalltouchDestination:
    """A destination on the emulator with its credentials."""
    return CalltouchDestination(
        name="ct",
        platform="calltouch",
        base_url=str(client.base_url),
        site_id=SITE_ID,
        access_token=TOKEN,
    )


def raw_lead(request_id: int = 1, **fields: Any) -> dict[str, Any]:
    """A lead matched by request id, adding `test_field` (or `fields`)."""
    custom = [{"field": k, "value": v} for k, v in (fields or {"test_field": "v"}).items()]
    return {
        "matching": [{"type": "request", "requestParams": {"requestId": request_id}}],
        "addCustomFields": {"overwrite": False, "customFields": custom},
    }


def by_phone(phone: str) -> dict[str, Any]:
    return {
        "matching": [{"type": "leadContact", "leadContactParams": {"phones": [phone]}}],
        "addCustomFields": {"customFields": [{"field": "name", "value": 123.4}]},
    }


def deliveries(*payloads: Mapping[str, Any]) -> list[Delivery]:
    return [
        Delivery(id=i, lead_id=f"l{i}", payload=p, attempt=1, created_at=datetime.now(UTC))
        for i, p in enumerate(payloads)
    ]


def exchange(
    http: httpx.Client, dest: CalltouchDestination, *payloads: Mapping[str, Any]
) -> Answer:
    """What the delivery loop does with one batch: build, send, read."""
    batch = deliveries(*payloads)
    response = http.send(ADAPTER.build_request(batch, dest))
    return ADAPTER.parse_response(response, batch, dest)


def outcomes_of(answer: Answer) -> list[LeadOutcome]:
    """The per-lead outcomes of an answer that must be per lead."""
    assert isinstance(answer, list), answer
    return answer


def post(http: httpx.Client, body: Any, headers: Mapping[str, str] = HEADERS) -> httpx.Response:
    return http.post(ADD_PATH, json=body, headers=dict(headers))


def log(http: httpx.Client) -> list[dict[str, Any]]:
    return [e for e in http.get("/__sandbox__/log").json() if e["path"] == ADD_PATH]


# --- the emulator, as strict as the doc -------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Access-Token": "wrong", "SiteId": SITE_ID}, 401),
        ({"Access-Token": TOKEN}, 403),
        ({"Access-Token": TOKEN, "SiteId": "9999"}, 403),
    ],
)
def test_wrong_or_missing_credentials_get_an_api_error(
    client: httpx.Client, headers: dict[str, str], status: int
) -> None:
    """A bad Access-Token is 401, a bad SiteId 403, both in Calltouch's apiError shape."""
    response = post(client, {"leads": [raw_lead()]}, headers)
    assert response.status_code == status
    body = response.json()
    assert body["meta"] == [] and body["data"]["type"] == "apiError"
    assert body["data"]["validationErrorData"] is None
    assert set(body["data"]["apiErrorData"]) == {"errorCode", "errorMessage"}


def test_six_quick_requests_meet_a_429(client: httpx.Client) -> None:
    """5 requests a second per IP run; the rest are 429 (the doc's own example)."""
    statuses = [post(client, {"leads": [raw_lead()]}).status_code for _ in range(6)]
    assert statuses.count(200) <= 5 and 429 in statuses
    assert [e["status"] for e in log(client)] == statuses


def test_a_validation_error_has_the_docs_exact_shape(client: httpx.Client) -> None:
    """Blank customFields: the doc's example answer, word for word."""
    lead = raw_lead()
    lead["addCustomFields"]["customFields"] = []
    response = post(client, {"leads": [lead]})
    assert response.status_code == 400
    assert response.json() == DOC_VALIDATION_ERROR


def with_lead(**changes: Any) -> dict[str, Any]:
    """A body of one lead, its top-level keys changed."""
    return {"leads": [{**raw_lead(), **changes}]}


ONE_FIELD = [{"field": "test_field", "value": 1}]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"leads": [raw_lead()] * 101}, "leads"),
        ({"leads": []}, "leads"),
        (with_lead(matching=raw_lead()["matching"] * 21), "leads[0].matching"),
        (with_lead(matching=[{"type": "email"}]), "leads[0].matching[0].type"),
        (
            with_lead(matching=[{"type": "request", "requestParams": {"requestId": "1"}}]),
            "leads[0].matching[0].requestParams.requestId",
        ),
        (
            with_lead(addCustomFields={"overwrite": "no", "customFields": ONE_FIELD}),
            "leads[0].addCustomFields.overwrite",
        ),
        (
            with_lead(addCustomFields={"customFields": ONE_FIELD * 21}),
            "leads[0].addCustomFields.customFields",
        ),
    ],
    ids=["101-leads", "no-leads", "21-rules", "bad-type", "string-id", "overwrite", "21-fields"],
)
def test_each_documented_limit_is_a_violation_at_its_path(
    client: httpx.Client, body: dict[str, Any], path: str
) -> None:
    """100 leads, 1..20 rules of five types, integer ids, boolean overwrite, 1..20 fields."""
    response = post(client, body)
    assert response.status_code == 400
    paths = [v["fieldPath"] for v in response.json()["data"]["validationErrorData"]["violations"]]
    assert path in paths


def test_a_refused_request_adds_nothing(client: httpx.Client) -> None:
    """One invalid lead refuses the whole request: the valid one gets no fields either."""
    bad = copy.deepcopy(raw_lead())
    bad["addCustomFields"]["customFields"] = []
    post(client, {"leads": [raw_lead(5), bad]})
    assert [(e["status"], e["leads"], e["added"]) for e in log(client)] == [(400, 2, 0)]


def test_an_ordered_fault_comes_back_then_the_emulator_answers_again(
    client: httpx.Client,
) -> None:
    """POST /__sandbox__/faults: the next request gets the fault, the one after is handled."""
    fault = {"status": 502, "body": "bad gateway", "content_type": "text/plain"}
    client.post("/__sandbox__/faults", json=fault).raise_for_status()
    faulted = post(client, {"leads": [raw_lead()]})
    assert faulted.status_code == 502 and faulted.text == "bad gateway"
    assert post(client, {"leads": [raw_lead()]}).status_code == 200


def test_the_emulator_is_written_without_our_adapters() -> None:
    """Importing the emulator loads no adapter nor any of the loop's modules."""
    ours = (
        "worker.platforms",
        "worker.delivery.loop",
        "worker.ledger",
        "worker.delivery.polling",
        "worker.platforms.admitad.staging",
    )
    code = (
        "import sys, sandbox.calltouch; "
        f"print(sorted(m for m in sys.modules if m.startswith({ours!r})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def shape(value: Any) -> Any:
    """A JSON value with every leaf replaced by its type: what an answer's shape is."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


def test_the_docs_request_is_answered_in_the_shape_of_the_docs_answer(
    client: httpx.Client,
) -> None:
    """The doc's body, sent as printed: 200 and the doc's success answer, key for key."""
    response = post(client, DOC_REQUEST)
    assert response.status_code == 200
    body = response.json()
    assert shape(body) == shape(DOC_SUCCESS)
    assert list(body["data"]["leads"][0]) == list(DOC_SUCCESS["data"]["leads"][0])
    assert body["data"]["leads"][0]["requestInfo"] == {"requestId": 1, "requestNumber": "1"}


def test_a_call_is_answered_with_the_call_info_the_docs_table_lists(
    client: httpx.Client,
) -> None:
    """A match on a call fills callInfo (callId, callReferenceId, sipCallId), not requestInfo."""
    lead = {**raw_lead(), "matching": [{"type": "call", "callParams": {"callId": 44}}]}
    [answer] = post(client, {"leads": [lead]}).json()["data"]["leads"]
    assert answer["matchedType"] == "call" and answer["requestInfo"] is None
    assert answer["callInfo"] == {"callId": "44", "callReferenceId": None, "sipCallId": "sip-44"}


def test_the_docs_request_as_we_build_it_is_delivered(
    client: httpx.Client, dest: CalltouchDestination
) -> None:
    """The doc's lead through our door and our request: the emulator adds its fields."""
    [outcome] = outcomes_of(exchange(client, dest, ADAPTER.validate(DOC_REQUEST["leads"][0])))
    assert isinstance(outcome, Delivered) and outcome.external_id == "1"
    assert [(e["status"], e["added"]) for e in log(client)] == [(200, 1)]


def rule_of(kind: str, **params: Any) -> dict[str, Any]:
    """A body of one lead whose only matching rule is `kind` with these params."""
    name = f"{kind}Params"
    return with_lead(matching=[{"type": kind, name: params}])


PHONES = ["79157771122"]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (rule_of("requestContact", phones=PHONES, tags=["t"]), "requestContactParams.tags"),
        (
            rule_of("requestContact", phones=PHONES, tagsLogic="and"),
            "requestContactParams.tagsLogic",
        ),
        (rule_of("callContact", phones=PHONES, emails=["a@b.ru"]), "callContactParams.emails"),
        (
            rule_of("callContact", phones=PHONES, md5Phones=["0" * 32]),
            "callContactParams.md5Phones",
        ),
        (
            rule_of("leadContact", phones=PHONES, md5Phones=["0" * 32]),
            "leadContactParams.md5Phones",
        ),
        (rule_of("request", requestId=1, phones=PHONES), "requestParams.phones"),
        (rule_of("call", callId=1, searchDepth=5), "callParams.searchDepth"),
    ],
    ids=[
        "requestContact-tags",
        "requestContact-tagsLogic",
        "callContact-emails",
        "callContact-md5",
        "leadContact-md5",
        "request-phones",
        "call-searchDepth",
    ],
)
def test_a_param_the_doc_does_not_show_for_its_type_is_refused(
    client: httpx.Client, body: dict[str, Any], path: str
) -> None:
    """Each params object takes the keys the doc shows for it and no other."""
    response = post(client, body)
    assert response.status_code == 400
    violations = response.json()["data"]["validationErrorData"]["violations"]
    wanted = {
        "fieldPath": f"leads[0].matching[0].{path}",
        "message": "This field was not expected.",
    }
    assert wanted in violations


def test_a_callcontact_with_only_an_email_has_nothing_to_search_by(client: httpx.Client) -> None:
    """The doc finds a call by phone and date: e-mails alone leave a callContact blank."""
    response = post(client, rule_of("callContact", emails=["a@b.ru"]))
    assert response.status_code == 400
    paths = [v["fieldPath"] for v in response.json()["data"]["validationErrorData"]["violations"]]
    assert "leads[0].matching[0].callContactParams" in paths


def test_a_long_list_of_phones_is_no_violation(client: httpx.Client) -> None:
    """The doc caps leads, rules and fields, not the phones of a rule."""
    phones = [f"7915{n:07d}" for n in range(1001)]
    lead = {
        **raw_lead(),
        "matching": [{"type": "leadContact", "leadContactParams": {"phones": phones}}],
    }
    assert post(client, {"leads": [lead]}).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", ADD_PATH, 405),
        ("PUT", ADD_PATH, 405),
        ("POST", ADD_PATH + "/", 404),
        ("POST", "/lead-service/v1/api/tag/lead/add", 404),
    ],
    ids=["get", "put", "trailing-slash", "other-path"],
)
def test_only_the_documented_path_and_method_are_served(
    client: httpx.Client, method: str, path: str, status: int
) -> None:
    """POST on the doc's path and nothing else: no redirect to it, no other verb."""
    response = client.request(method, path, json={"leads": [raw_lead()]}, headers=HEADERS)
    assert response.status_code == status
    assert log(client) == []


# --- the adapter against the emulator ---------------------------------------------------


def test_validated_leads_are_delivered_with_calltouchs_ids(
    client: httpx.Client, dest: CalltouchDestination
) -> None:
    """Leads that pass the door and match are Delivered with the request's id."""
    payloads = [ADAPTER.validate(raw_lead(17)), ADAPTER.validate(by_phone("+7 (915) 111-22-33"))]
    by_id, by_contact = outcomes_of(exchange(client, dest, *payloads))
    assert isinstance(by_id, Delivered) and isinstance(by_contact, Delivered)
    assert by_id.external_id == "17" and by_id.data["matchedType"] == "request"
    assert by_contact.data["matchedType"] == "leadContact"


def test_the_first_rule_that_finds_something_wins(
    client: httpx.Client, dest: CalltouchDestination
) -> None:
    """An unknown request id falls through to the next rule, a phone Calltouch knows."""
    lead = raw_lead(5_000_000)
    lead["matching"].append(by_phone("79151112233")["matching"][0])
    [outcome] = outcomes_of(exchange(client, dest, ADAPTER.validate(lead)))
    assert isinstance(outcome, Delivered) and outcome.data["matchedType"] == "leadContact"


@pytest.mark.parametrize(
    "lead", [raw_lead(5_000_000), by_phone(UNKNOWN_PHONE)], ids=["request-id", "phone"]
)
def test_a_lead_calltouch_has_not_seen_waits_to_end_unmatched(
    client: httpx.Client, dest: CalltouchDestination, lead: dict[str, Any]
) -> None:
    """Nothing matched → Retry after unmatched_retry, bounded by unmatched_horizon."""
    [outcome] = outcomes_of(exchange(client, dest, ADAPTER.validate(lead)))
    assert isinstance(outcome, Retry)
    assert outcome.reason == calltouch_sandbox.NOT_FOUND
    assert (outcome.after, outcome.horizon) == (dest.unmatched_retry, dest.unmatched_horizon)
    assert outcome.give_up_as is LeadState.UNMATCHED


def test_a_field_the_project_lacks_is_rejected_in_calltouchs_words(
    client: httpx.Client, dest: CalltouchDestination
) -> None:
    """A custom field not created in the project is Calltouch's final word for that lead."""
    [outcome] = outcomes_of(exchange(client, dest, ADAPTER.validate(raw_lead(3, stage="won"))))
    assert isinstance(outcome, Rejected) and "stage" in outcome.reason


def test_a_lead_the_door_would_refuse_is_rejected_and_its_batch_resent(
    client: httpx.Client, dest: CalltouchDestination
) -> None:
    """A violation rejects its lead with the fieldPath; the others go again and arrive."""
    bad = raw_lead(2)
    bad["matching"][0]["requestParams"]["requestId"] = "2"  # what validate() would refuse
    good = ADAPTER.validate(raw_lead(1))
    first = exchange(client, dest, good, bad)
    assert isinstance(first, list)
    assert first[0] == Retry(RESEND_REASON, after=timedelta(0))
    assert isinstance(first[1], Rejected)
    assert (
        first[1].reason == "matching[0].requestParams.requestId: This value should be of type int."
    )
    [again] = outcomes_of(exchange(client, dest, good))
    assert isinstance(again, Delivered)


def test_sending_a_lead_twice_is_harmless(
    client: httpx.Client, dest: CalltouchDestination, calltouch_url: str
) -> None:
    """A resend is Delivered again and, with overwrite false, changes nothing."""
    first = ADAPTER.validate(raw_lead(9, test_field="first"))
    second = ADAPTER.validate(raw_lead(9, test_field="second"))
    assert [type(o) for o in outcomes_of(exchange(client, dest, first))] == [Delivered]
    assert [type(o) for o in outcomes_of(exchange(client, dest, second))] == [Delivered]
    assert [e["added"] for e in log(client)] == [1, 1]


def test_wrong_credentials_suspend_the_destination(
    client: httpx.Client, dest: CalltouchDestination
) -> None:
    """A refused token pauses the destination (auth), and the reason holds no token."""
    wrong = dest.model_copy(update={"access_token": SecretStr("not-the-token")})
    outcome = exchange(client, wrong, ADAPTER.validate(raw_lead()))
    assert isinstance(outcome, Suspended) and not outcome.until_quota_reset
    assert "not-the-token" not in outcome.reason and TOKEN not in outcome.reason


def test_a_site_id_the_token_does_not_open_suspends_the_destination(
    client: httpx.Client, dest: CalltouchDestination
) -> None:
    """The emulator's 403 accessDenied is read as refused credentials, not as spent points."""
    wrong = dest.model_copy(update={"site_id": "9999"})
    outcome = exchange(client, wrong, ADAPTER.validate(raw_lead()))
    assert isinstance(outcome, Suspended) and not outcome.until_quota_reset
    assert "accessDenied" in outcome.reason


def test_a_429_from_the_emulator_throttles(
    client: httpx.Client, dest: CalltouchDestination
) -> None:
    """The sixth request in a second is Throttled, the batch due again."""
    payload = ADAPTER.validate(raw_lead())
    answers = [exchange(client, dest, payload) for _ in range(6)]
    assert any(isinstance(a, Throttled) for a in answers)


@pytest.mark.parametrize(
    ("fault", "in_reason"),
    [
        ({"status": 500, "body": "oops", "content_type": "text/plain"}, "HTTP 500"),
        ({"status": 200, "body": "<html>", "content_type": "text/html"}, "not JSON"),
        ({"status": 200, "body": '{"meta": [], "data": {"leads": []}}'}, "0 leads for 1"),
    ],
    ids=["500", "not-json", "count"],
)
def test_ordered_faults_fail_the_request(
    client: httpx.Client, dest: CalltouchDestination, fault: dict[str, Any], in_reason: str
) -> None:
    """A 5xx, a body that is not JSON, a wrong count of leads: Failed, every lead retried."""
    client.post("/__sandbox__/faults", json=fault).raise_for_status()
    outcome = exchange(client, dest, ADAPTER.validate(raw_lead()))
    assert isinstance(outcome, Failed) and in_reason in outcome.reason


def test_a_spent_points_budget_suspends_until_the_quota_resets() -> None:
    """With one point a day, the second request is the points error: pause until reset."""
    with (
        serve(calltouch_sandbox.create_app(SITE_ID, TOKEN, daily_points=1)) as url,
        httpx.Client(timeout=5) as http,
    ):
        dest = CalltouchDestination(
            name="ct", platform="calltouch", base_url=url, site_id=SITE_ID, access_token=TOKEN
        )
        payload = ADAPTER.validate(raw_lead())
        assert [type(o) for o in outcomes_of(exchange(http, dest, payload))] == [Delivered]
        spent = http.post(url + ADD_PATH, json={"leads": [payload]}, headers=HEADERS)
        assert spent.status_code == 403
        assert spent.json() == {
            "meta": [],
            "data": {
                "type": "apiError",
                "apiErrorData": {
                    "errorCode": calltouch_sandbox.POINTS_SPENT,
                    "errorMessage": "Суточный лимит баллов API исчерпан",
                },
                "validationErrorData": None,
            },
        }
        outcome = exchange(http, dest, payload)
    assert isinstance(outcome, Suspended) and outcome.until_quota_reset
