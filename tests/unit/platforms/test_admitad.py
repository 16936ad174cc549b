"""The Admitad adapter without sockets: field rules, requests built, answers mapped."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from worker.errors import LeadInvalid
from worker.leads import Delivery, LeadState
from worker.outcomes import (
    Delivered,
    Failed,
    Narrowed,
    NotSeen,
    Pending,
    Rejected,
    Retry,
    StatusUpdate,
    Suspended,
    Throttled,
)
from worker.platforms.admitad import AdmitadAdapter, AdmitadDestination, rules
from worker.platforms.base import FetchFailure

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
ADAPTER = AdmitadAdapter()


def destination(**overrides: Any) -> AdmitadDestination:
    table: dict[str, Any] = {
        "name": "admitad",
        "platform": "admitad",
        "base_url": "https://api.admitad.test",
        "website_id": 7,
        "client_id": "client",
        "client_secret": "s3cret",
    }
    return AdmitadDestination.model_validate({**table, **overrides})


def lead(**overrides: Any) -> dict[str, Any]:
    return {
        "campaigns": [17809],
        "user_notified": 1,
        "first_name": "Ivan",
        "last_name": "Ivanov",
        "work_date": "11.11.2016",
        "credit_sum": "150000",
        "credit_days": 30,
        **overrides,
    }


def delivery(raw: dict[str, Any] | None = None, stage: int = 1, **kw: Any) -> Delivery:
    payload = ADAPTER.validate(raw or lead())
    return Delivery(1, "lead-1", payload, 1, NOW, stage=stage, **kw)


def form(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(request.content.decode(), keep_blank_values=True)


def answer(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, json=body)


def response(c_id: int, status: str) -> dict[str, Any]:
    return {"campaign_id": c_id, "status": status, "order_id": None, "server_response": {}}


# ------------------------------------------------------------------ the door


def test_a_good_lead_is_normalised_with_its_stages() -> None:
    """Decimals get two places, integers are text, campaigns become stages."""
    payload = ADAPTER.validate(lead(campaigns=[1, [2, 3], {"ids": [4], "pause": 5}]))
    assert payload["credit_sum"] == "150000.00"
    assert payload["credit_days"] == "30"
    assert payload["campaigns"] == [
        {"ids": [1], "pause": 0},
        {"ids": [2, 3], "pause": 0},
        {"ids": [4], "pause": 5},
    ]


@pytest.mark.parametrize("value", [0, "0", None, 2, "yes"])
def test_user_notified_other_than_1_is_refused_at_the_door(value: Any) -> None:
    """Admitad would take the application and pass it on to nobody, silently."""
    with pytest.raises(LeadInvalid) as info:
        ADAPTER.validate(lead(user_notified=value))
    (error,) = info.value.errors
    assert error.field == "user_notified"
    assert "must be 1" in error.rule


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("first_name", "x" * 101, "at most 100 characters"),
        ("email", "a" * 76, "at most 75 characters"),
        ("work_house", "12345678901", "at most 10 characters"),
        ("birth_date", "31.02.1990", "DD.MM.YYYY"),
        ("birth_date", "1990-01-31", "DD.MM.YYYY"),
        ("birth_date", "1.1.1990", "DD.MM.YYYY"),
        ("credit_sum", "12345678901", "12 digits"),
        ("work_salary", "100.005", "2 after the point"),
        ("credit_sum", "-5", "non-negative"),
        ("credit_days", "30.5", "whole number"),
        ("credit_days", True, "whole number"),
        ("subid", "x" * 51, "at most 50 characters"),
        ("subid3", "a%00b", '"%00"'),
        ("mobile_phone", 79161234567, "a string"),
        ("test_mode", 2, "1 or 0"),
        ("favourite_colour", "green", "not an Admitad field"),
    ],
)
def test_each_field_is_checked_against_the_table(field: str, value: Any, rule: str) -> None:
    """A broken field is refused naming the field and the rule, never the value."""
    with pytest.raises(LeadInvalid) as info:
        ADAPTER.validate(lead(**{field: value}))
    (error,) = info.value.errors
    assert error.field == field
    assert rule in error.rule
    if isinstance(value, str) and len(value) > 3:
        assert value not in str(info.value)  # a value may be personal data


def test_subid4_takes_120_characters() -> None:
    """subid4 is longer than the other subids."""
    assert ADAPTER.validate(lead(subid4="x" * 120))["subid4"] == "x" * 120


def test_the_largest_decimal_the_table_allows_passes() -> None:
    """Ten digits before the point and two after: twelve in all."""
    assert ADAPTER.validate(lead(credit_sum="9999999999.99"))["credit_sum"] == "9999999999.99"


def test_every_broken_rule_is_reported_at_once() -> None:
    """Campaigns, consent and fields are all reported in one refusal."""
    with pytest.raises(LeadInvalid) as info:
        ADAPTER.validate(lead(campaigns=[], user_notified=0, birth_date="x"))
    assert {e.field for e in info.value.errors} == {"campaigns", "user_notified", "birth_date"}


def test_batch_size_other_than_1_is_refused_in_the_destination() -> None:
    """Admitad creates one application per request."""
    with pytest.raises(ValueError, match="batch_size"):
        destination(batch_size=2)


# ------------------------------------------------------------------ programs' rules

SETTINGS = {
    "results": [
        {"field_name": "first_name", "regexp": "^[a-zA-Z]+$", "required": True},
        {"field_name": "middle_name", "regexp": "", "required": True},
        {"field_name": "last_name", "regexp": "", "required": False},
    ]
}


def test_a_programs_regexp_refusal_names_program_field_and_rule() -> None:
    """`campaign 17809: first_name: must match ^[a-zA-Z]+$`; a missing required field too."""
    program = rules.parse_settings(answer(200, SETTINGS))
    errors = rules.check_program({"first_name": "Иван", "last_name": "Ivanov"}, 17809, program)
    assert [str(e) for e in errors] == [
        "campaign 17809: first_name: must match ^[a-zA-Z]+$",
        "campaign 17809: middle_name: required by the program",
    ]


def test_an_empty_regexp_means_the_tables_rule() -> None:
    """With no regexp, the field is held to the document's table."""
    program = rules.ProgramRules((rules.FieldRule("last_name", "", False),))
    errors = rules.check_program({"last_name": "x" * 101}, 5, program)
    assert [str(e) for e in errors] == ["campaign 5: last_name: at most 100 characters"]


def test_the_settings_request_and_the_check_before_sending() -> None:
    """The loop fetches campaign_settings per program, then check() refuses before sending."""
    dest = destination()
    d = delivery(lead(campaigns=[[17809, 17810]]))
    needs = ADAPTER.prerequisites(d, dest)
    assert [str(n.request.url) for n in needs] == [
        "https://api.admitad.test/broker/campaign_settings/17809/",
        "https://api.admitad.test/broker/campaign_settings/17810/",
    ]
    answers = {needs[0].key: json.dumps({"results": []}), needs[1].key: json.dumps(SETTINGS)}
    verdict = ADAPTER.check(d, dest, answers)
    assert isinstance(verdict, Narrowed)
    assert "campaign 17810: middle_name: required by the program" in verdict.detail


def test_one_programs_broken_rule_drops_that_program_not_the_stage() -> None:
    """17810's rules are broken: the stage goes to 17809 alone, 17810's reason is kept."""
    dest = destination()
    d = delivery(lead(campaigns=[[17809, 17810], 16633]))
    needs = ADAPTER.prerequisites(d, dest)
    answers = {needs[0].key: json.dumps({"results": []}), needs[1].key: json.dumps(SETTINGS)}
    verdict = ADAPTER.check(d, dest, answers)
    assert isinstance(verdict, Narrowed)
    [dropped] = verdict.data["dropped"]
    assert dropped["campaign_id"] == 17810
    assert dropped["message"] == "middle_name: required by the program"
    narrowed = replace(d, data={**d.data, **verdict.data})
    assert form(ADAPTER.build_request([narrowed], dest))["campaigns"] == ["[17809]"]
    assert [n.request.url.path for n in ADAPTER.prerequisites(narrowed, dest)] == [
        "/broker/campaign_settings/17809/"
    ]


def test_a_stage_left_with_no_program_is_rejected() -> None:
    """Every program of the stage breaks its own rules: the stage (only) is rejected."""
    dest = destination()
    d = delivery(lead(campaigns=[17810, 16633]))
    [need] = ADAPTER.prerequisites(d, dest)
    verdict = ADAPTER.check(d, dest, {need.key: json.dumps(SETTINGS)})
    assert isinstance(verdict, Rejected)
    assert verdict.reason.startswith("no program of this stage is left")
    assert verdict.data["dropped"][0]["campaign_id"] == 17810


def test_server_staging_leaves_a_dropped_program_out_of_the_algorithm() -> None:
    """The same rule in server staging: the program goes, an emptied stage goes with it."""
    dest = destination(staging="server")
    d = delivery(lead(campaigns=[[17809, 17810], {"ids": [17811], "pause": 30}, 16633]), stage=0)
    failing = {rules.settings_key(dest, c): json.dumps(SETTINGS) for c in (17810, 17811)}
    verdict = ADAPTER.check(d, dest, failing)
    assert isinstance(verdict, Narrowed)
    narrowed = replace(d, data={**d.data, **verdict.data})
    assert form(ADAPTER.build_request([narrowed], dest))["campaigns"] == ["[17809, 16633]"]


def test_settings_that_keep_failing_become_that_programs_error() -> None:
    """A 5xx retries the lead for a few sends, then the program is dropped, not the lead."""
    dest = destination(settings_attempts=3)
    d = delivery(lead(campaigns=[[17809, 17810]]))
    key = rules.settings_key(dest, 17810)
    ok = {rules.settings_key(dest, 17809): json.dumps({"results": []})}
    first = ADAPTER.check(d, dest, ok, {key: FetchFailure("HTTP 502", passing=True)})
    assert isinstance(first, Retry)
    third = ADAPTER.check(
        replace(d, attempt=3), dest, ok, {key: FetchFailure("HTTP 502", passing=True)}
    )
    assert isinstance(third, Narrowed)
    assert third.data["dropped"] == [
        {"campaign_id": 17810, "message": "campaign_settings could not be fetched: HTTP 502"}
    ]


def test_settings_a_program_does_not_have_leave_it_to_admitad() -> None:
    """A 404 for campaign_settings: no rules known; Admitad itself judges the program."""
    dest = destination()
    d = delivery(lead(campaigns=[17809]))
    assert (
        ADAPTER.check(
            d, dest, {}, {rules.settings_key(dest, 17809): FetchFailure("HTTP 404", passing=False)}
        )
        is None
    )


# ------------------------------------------------------------------ requests


def test_client_staging_sends_a_stage_of_several_programs_as_one_group() -> None:
    """
    Stage 2 of three goes as ONE group: `[17288, 16651]` would be two stages to
    Admitad (the document's equivalence). The marker carries the stage.
    """
    raw = lead(campaigns=[17809, [17288, 16651], {"ids": [16633], "pause": 80}])
    request = ADAPTER.build_request([delivery(raw, stage=2)], destination())
    sent = form(request)
    assert str(request.url) == "https://api.admitad.test/website/7/broker/applications/create/"
    assert sent["campaigns"] == ["[[17288, 16651]]"]
    assert sent["user_notified"] == ["1"]
    assert sent["subid4"] == ["lead-1.2"]
    assert sent["credit_sum"] == ["150000.00"]
    assert "test_mode" not in sent


def test_server_staging_sends_the_whole_algorithm() -> None:
    """With staging = server, Admitad gets the normalised algorithm in one create."""
    raw = lead(campaigns=[17809, {"ids": [16633], "pause": 80}])
    request = ADAPTER.build_request([delivery(raw)], destination(staging="server", test_mode=True))
    sent = form(request)
    assert json.loads(sent["campaigns"][0]) == [17809, {"ids": [16633], "pause": 80}]
    assert sent["test_mode"] == ["1"]


def test_the_subid_field_is_configurable() -> None:
    """Our lead id goes where the destination says, for lookups."""
    request = ADAPTER.build_request([delivery()], destination(subid_field="subid1"))
    assert form(request)["subid1"] == ["lead-1"]


# ------------------------------------------------------------------ answers

CREATED = {
    "id": 42,
    "responses": [response(17809, "processing")],
    "errors": [{"campaign_id": 17810, "message": "Кампания не принимает заявки брокеров."}],
    "algorithm": [{"ids": [17809, 17810], "pause": 0}],
}


def test_a_created_application_is_pending_with_its_responses() -> None:
    """200 with an id: Pending, the id as external_id, responses/errors/algorithm kept."""
    (outcome,) = ADAPTER.parse_response(answer(200, CREATED), [delivery()], destination())
    assert isinstance(outcome, Pending)
    assert outcome.external_id == "42"
    assert outcome.data == {
        "responses": CREATED["responses"],
        "errors": CREATED["errors"],
        "algorithm": CREATED["algorithm"],
    }


def test_a_test_mode_answer_is_delivered_and_says_nothing_was_created() -> None:
    """No id and empty responses in test mode."""
    body = {"responses": [], "errors": [], "algorithm": [{"ids": [17809], "pause": 0}]}
    (outcome,) = ADAPTER.parse_response(
        answer(200, body), [delivery()], destination(test_mode=True)
    )
    assert outcome == Delivered(detail="test mode: no application created", data=outcome.data)
    assert outcome.external_id is None


def test_every_program_in_errors_rejects_with_their_messages() -> None:
    """No program accepts broker applications: Rejected in Admitad's words."""
    body = {
        "id": 43,
        "responses": [],
        "errors": [{"campaign_id": 17809, "message": "Кампания не принимает заявки брокеров."}],
        "algorithm": [{"ids": [17809], "pause": 0}],
    }
    (outcome,) = ADAPTER.parse_response(answer(200, body), [delivery()], destination())
    assert isinstance(outcome, Rejected)
    assert "17809: Кампания не принимает заявки брокеров." in outcome.reason


def test_a_400_is_rejected_in_the_platforms_words() -> None:
    """Field errors come back as Admitad wrote them."""
    body = {"birth_date": ["Неправильный формат даты."]}
    (outcome,) = ADAPTER.parse_response(answer(400, body), [delivery()], destination())
    assert isinstance(outcome, Rejected)
    assert "birth_date: Неправильный формат даты." in outcome.reason


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (503, {"error": "rate_limit", "error_description": "", "error_code": 4}, Throttled),
        (429, {}, Throttled),
        (503, {"error": "unavailable"}, Failed),
        (500, {}, Failed),
        (401, {"error": "no_rights", "error_description": "", "error_code": 2}, Suspended),
        (403, {"error": "no_rights", "error_description": "", "error_code": 2}, Suspended),
        (401, {"error": "invalid_token", "error_description": "", "error_code": 1}, Suspended),
    ],
)
def test_request_level_answers(status: int, body: Any, kind: type) -> None:
    """503 error_code 4 is the rate limit; no rights pauses the destination; 5xx retries."""
    outcome = ADAPTER.parse_response(answer(status, body), [delivery()], destination())
    assert isinstance(outcome, kind)


def test_an_answer_that_is_not_json_fails_the_request() -> None:
    """A broken 200 is a transient failure, recorded, not trusted."""
    outcome = ADAPTER.parse_response(
        httpx.Response(200, text="<html>"), [delivery()], destination()
    )
    assert isinstance(outcome, Failed)


# ------------------------------------------------------------------ staging through the adapter


def test_the_adapter_releases_the_next_stage_after_its_pause_only_after_a_success() -> None:
    """Stage 1 accepted: stage 2 waits its pause; all declined: at once."""
    raw = lead(campaigns=[17809, {"ids": [16633], "pause": 80}])
    d, dest = delivery(raw, stage=1), destination()
    accepted = {"responses": [response(17809, "waiting")]}
    declined = {"responses": [response(17809, "declined")]}
    processing = {"responses": [response(17809, "processing")]}
    waiting = LeadState.AWAITING_STATUS
    assert ADAPTER.next_stage_due(d, dest, waiting, accepted, NOW) == NOW + timedelta(minutes=80)
    assert ADAPTER.next_stage_due(d, dest, LeadState.DECLINED, declined, NOW) == NOW
    assert ADAPTER.next_stage_due(d, dest, LeadState.REJECTED, {}, NOW) == NOW
    assert ADAPTER.next_stage_due(d, dest, waiting, processing, NOW) is None


def test_a_stage_is_decided_only_when_every_program_answered() -> None:
    """
    Stage 1 is [17809, 16126]: 17809 declined, 16126 not listed yet → undecided;
    an empty responses with no errors → undecided (not refused, which would skip
    the next stage's pause); 16126 in errors[] → answered.
    """
    raw = lead(campaigns=[[17809, 16126], {"ids": [16633], "pause": 80}])
    d, dest = delivery(raw, stage=1), destination()
    waiting = LeadState.AWAITING_STATUS
    partial = {"responses": [response(17809, "declined")]}
    assert ADAPTER.next_stage_due(d, dest, waiting, partial, NOW) is None
    assert ADAPTER.next_stage_due(d, dest, waiting, {"responses": [], "errors": []}, NOW) is None
    errored = {**partial, "errors": [{"campaign_id": 16126, "message": "no"}]}
    assert ADAPTER.next_stage_due(d, dest, waiting, errored, NOW) == NOW
    accepted = {"responses": [response(17809, "declined"), response(16126, "approved")]}
    due = ADAPTER.next_stage_due(d, dest, LeadState.APPROVED, accepted, NOW)
    assert due == NOW + timedelta(minutes=80)


def test_a_dropped_program_counts_as_answered() -> None:
    """16126 was left out (its own rule broken): 17809's refusal decides the stage."""
    raw = lead(campaigns=[[17809, 16126], 16633])
    dropped = {"dropped": [{"campaign_id": 16126, "message": "first_name: required"}]}
    d, dest = delivery(raw, stage=1, data=dropped), destination()
    data = {**dropped, "responses": [response(17809, "declined")]}
    assert ADAPTER.next_stage_due(d, dest, LeadState.DECLINED, data, NOW) == NOW


def test_the_first_stages_pause_delays_the_first_send() -> None:
    """`pause` is the pause before the group is sent, the first group's too."""
    dest = destination(pause_minute="PT1S")
    payload = ADAPTER.validate(lead(campaigns=[{"ids": [17809], "pause": 30}, 16633]))
    assert ADAPTER.first_delay(payload, dest) == timedelta(seconds=30)
    assert ADAPTER.first_delay(payload, destination(staging="server")) == timedelta(0)
    plain = ADAPTER.validate(lead(campaigns=[17809, 16633]))
    assert ADAPTER.first_delay(plain, dest) == timedelta(0)


def test_a_lead_may_not_set_the_markers_field() -> None:
    """The marker's field is the destination's setting; a lead that fills it is refused."""
    with pytest.raises(LeadInvalid) as info:
        ADAPTER.validate_for(lead(subid4="campaign-7"), destination())
    [error] = info.value.errors
    assert error.field == "subid4"
    assert "lookup marker" in error.rule
    kept = ADAPTER.validate_for(lead(subid4="campaign-7"), destination(subid_field="subid3"))
    assert kept["subid4"] == "campaign-7"
    with pytest.raises(LeadInvalid):
        ADAPTER.validate_for(lead(subid3="x"), destination(subid_field="subid3"))
    assert "subid4" not in ADAPTER.validate_for(lead(subid4=""), destination())


def test_an_undecided_stage_is_looked_at_soon_and_a_decided_one_at_poll_interval() -> None:
    """5 s after the create, then 10, 20 … up to poll_interval; decided: poll_interval."""
    raw = lead(campaigns=[[17809, 16126], 16633])
    d, dest = delivery(raw, stage=1), destination(poll_interval=300)
    undecided = {"responses": [response(17809, "processing")], "looks": 1}
    waiting = LeadState.AWAITING_STATUS
    assert ADAPTER.next_look(d, dest, waiting, undecided) == timedelta(seconds=10)
    assert ADAPTER.next_look(d, dest, waiting, {**undecided, "looks": 3}) == timedelta(seconds=40)
    assert ADAPTER.next_look(d, dest, waiting, {**undecided, "looks": 9}) == timedelta(seconds=300)
    decided = {
        "responses": [response(17809, "waiting"), response(16126, "declined")],
        "looks": 1,
    }
    assert ADAPTER.next_look(d, dest, waiting, decided) == timedelta(seconds=300)
    (created,) = ADAPTER.parse_response(answer(200, CREATED), [d], dest)
    assert isinstance(created, Pending)
    assert created.wait == timedelta(seconds=5)


# ------------------------------------------------------------------ lookups and polling


def test_a_lost_create_is_looked_up_by_our_lead_id_in_the_subid() -> None:
    """The list filtered by subid4 = lead id finds the stage's application."""
    d, dest = delivery(), destination()
    request = ADAPTER.build_lookup(d, dest, NOW)
    assert request is not None
    assert request.url.params["subid4"] == "lead-1"
    found = {"results": [{**CREATED, "subid4": "lead-1", "algorithm": [{"ids": [17809]}]}]}
    outcome = ADAPTER.parse_lookup(answer(200, found), d, dest)
    assert isinstance(outcome, Pending)
    assert outcome.external_id == "42"
    assert ADAPTER.parse_lookup(answer(200, {"results": []}), d, dest) is None


def test_a_lookup_matches_by_the_marker_even_when_algorithm_leaves_a_program_out() -> None:
    """
    The document's own create answer: 17810 errored and is missing from
    `algorithm`. The stage sent was [17809, 17810]; the marker alone matches it.
    """
    d, dest = delivery(lead(campaigns=[[17809, 17810], 16633]), stage=2), destination()
    request = ADAPTER.build_lookup(d, dest, NOW)
    assert request is not None
    assert request.url.params["subid4"] == "lead-1.2"
    doc_answer = {
        "id": 1,
        "subid4": "lead-1.2",
        "responses": [response(17809, "processing")],
        "errors": [{"campaign_id": 17810, "message": "Кампания не принимает заявки брокеров."}],
        "algorithm": [{"ids": [17809], "pause": 0}],
    }
    outcome = ADAPTER.parse_lookup(answer(200, {"results": [doc_answer]}), d, dest)
    assert isinstance(outcome, Pending)
    assert outcome.external_id == "1"
    stage_1 = {**doc_answer, "subid4": "lead-1"}  # the same lead's other stage
    assert ADAPTER.parse_lookup(answer(200, {"results": [stage_1]}), d, dest) is None


def test_several_applications_are_polled_page_by_page() -> None:
    """Page n of the newest-first list; NotSeen off a full page, NotSeen(last) off the last one."""
    dest = destination()
    batch = [delivery(external_id=str(i), state=LeadState.AWAITING_STATUS) for i in range(1, 4)]
    request = ADAPTER.build_poll(batch, dest, NOW, page=2)
    assert request is not None
    assert request.url.params["offset"] == "1000"
    assert request.url.params["order_by"] == "-date_created"
    assert ADAPTER.build_poll(batch, dest, NOW, page=20) is None
    page = {"results": [{"id": 1, "responses": []}], "_meta": {"count": 1200, "offset": 500}}
    answers = ADAPTER.parse_poll(answer(200, page), batch, dest)
    assert answers[1:] == [NotSeen(last=False), NotSeen(last=False)]  # type: ignore[index]
    last = {"results": [{"id": 1, "responses": []}], "_meta": {"count": 1001, "offset": 1000}}
    answers = ADAPTER.parse_poll(answer(200, last), batch, dest)
    assert answers[1:] == [NotSeen(last=True), NotSeen(last=True)]  # type: ignore[index]


def test_one_application_is_polled_by_its_id() -> None:
    """A single application costs one request filtered by id."""
    d = delivery(external_id="42", state=LeadState.AWAITING_STATUS)
    request = ADAPTER.build_poll([d], destination(), NOW)
    assert request is not None
    assert request.url.params["id"] == "42"


def poll(responses: list[dict[str, Any]], **record: Any) -> StatusUpdate | None:
    d = delivery(external_id="42", state=LeadState.AWAITING_STATUS)
    body = {"results": [{"id": 42, "responses": responses, **record}], "_meta": {"count": 1}}
    (update,) = ADAPTER.parse_poll(answer(200, body), [d], destination())  # type: ignore[misc]
    return update


@pytest.mark.parametrize(
    ("statuses", "state"),
    [
        (["processing", "approved"], LeadState.AWAITING_STATUS),
        (["waiting", "declined"], LeadState.AWAITING_STATUS),
        (["approved", "declined"], LeadState.APPROVED),
        (["declined", "error"], LeadState.DECLINED),
        (["error"], LeadState.ERROR),
    ],
)
def test_poll_states_follow_the_programs(statuses: list[str], state: LeadState) -> None:
    """Awaiting while any is processing or waiting; approved, else declined, else error."""
    update = poll([response(i, s) for i, s in enumerate(statuses, 1)])
    assert update is not None
    assert update.state == state
    assert [r["status"] for r in update.data["responses"]] == statuses


def test_a_server_algorithm_is_final_only_when_every_stage_answered() -> None:
    """Stage 1 approved while stage 2 waits its pause: still awaiting."""
    algorithm = [{"ids": [1], "pause": 0}, {"ids": [2], "pause": 150}]
    update = poll([response(1, "approved")], algorithm=algorithm)
    assert update is not None
    assert update.state == LeadState.AWAITING_STATUS


def test_a_poll_throttled_by_admitad_is_throttled() -> None:
    """503 error_code 4 on a poll cools the destination like a send."""
    d = delivery(external_id="42")
    body = {"error": "rate_limit", "error_description": "", "error_code": 4}
    assert isinstance(ADAPTER.parse_poll(answer(503, body), [d], destination()), Throttled)


# ------------------------------------------------------------------ SMS verification


def test_sync_create_waits_for_the_code_until_code_ttl() -> None:
    """waiting_sms_verification + application_id: WAITING_CODE with the application id."""
    dest = destination(code_ttl=timedelta(minutes=5))
    request = ADAPTER.build_sync_create(ADAPTER.validate(lead(campaigns=[65])), 65, dest)
    assert str(request.url).endswith("/website/7/broker/applications/sync_create/")
    assert form(request)["campaign_id"] == ["65"]
    body = {"status": "waiting_sms_verification", "application_id": 123, "server_response": {}}
    outcome = ADAPTER.parse_sync_create(answer(200, body), dest)
    assert outcome == Pending(
        "123",
        "waiting for the user's SMS code",
        {"status": "waiting_sms_verification"},
        state=LeadState.WAITING_CODE,
        wait=timedelta(minutes=5),
    )


def test_any_answer_to_a_confirm_means_look_at_the_application() -> None:
    """The document answers a confirm with waiting_sms_verification: the answer decides nothing."""
    request = ADAPTER.build_confirm("123", "1234", destination())
    assert str(request.url).endswith("/sync_create/123/confirm")
    assert form(request) == {"code": ["1234"]}
    dest = destination()
    # the document's own example answer to a confirm
    waiting = {"status": "waiting_sms_verification", "application_id": 123}
    after = ADAPTER.parse_confirm(answer(200, waiting), dest)
    assert isinstance(after, Pending)
    assert (after.state, after.external_id) == (LeadState.AWAITING_STATUS, "123")
    assert after.wait == dest.first_look  # polled soon, like any other application
    refused = ADAPTER.parse_confirm(answer(400, {"code": ["Неверный код"]}), dest)
    assert isinstance(refused, Rejected)


def test_an_sms_application_goes_to_one_program() -> None:
    """sync_create takes one campaign_id: more programs are refused at the door."""
    with pytest.raises(LeadInvalid) as info:
        ADAPTER.validate(lead(campaigns=[65, 66], sms_verification=True))
    assert info.value.errors[0].field == "campaigns"
