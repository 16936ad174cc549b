"""The SalesMan adapter: validation, the form it sends, the body deciding, markers, statuses."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from pydantic import ValidationError

from worker.delivery.checks import LOOKUP_PAGES as DELIVERY_LOOKUP_PAGES
from worker.errors import LeadInvalid, PlatformContractError
from worker.leads import Delivery, LeadState
from worker.ops.redact import redact_request
from worker.outcomes import (
    Delivered,
    Failed,
    NotSeen,
    Rejected,
    StatusUpdate,
    Suspended,
    Throttled,
)
from worker.platforms.salesman import (
    AUTH_ERRORS,
    LOOKUP_PAGES,
    PAGE,
    PERSONAL_FIELDS,
    POLL_PAGES,
    SECRET_FIELDS,
    SalesmanAdapter,
    SalesmanDestination,
    info_request,
    marker,
)

ADAPTER = SalesmanAdapter()
KEY = "APIKEY123"
DEST = SalesmanDestination(
    name="s",
    platform="salesman",
    base_url="https://crm.example",
    login="manager@example.com",
    api_key=KEY,
)
GOOD = {"title": "Иван", "phone": "8 (900) 123-45-67", "email": "ivan@example.com"}
CREATED = datetime(2026, 11, 22, 10, tzinfo=UTC)


def delivery(payload: dict[str, Any] | None = None, **kw: Any) -> Delivery:
    """A claimed SalesMan delivery of lead `abc123`."""
    return Delivery(
        id=1,
        lead_id=kw.pop("lead_id", "abc123"),
        payload=ADAPTER.validate(payload or GOOD),
        attempt=1,
        created_at=kw.pop("created_at", CREATED),
        **kw,
    )


def html(
    body: Any, status: int = 200, request: httpx.Request | None = None, **headers: str
) -> httpx.Response:
    """An answer the SalesMan way: JSON text labelled text/html (to `request`, when given)."""
    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    return httpx.Response(
        status, text=text, headers={"Content-Type": "text/html", **headers}, request=request
    )


def form(request: httpx.Request) -> dict[str, str]:
    """The form body of a request, one value per field."""
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


# --- the destination -----------------------------------------------------------------


def test_a_destination_is_gentle_by_default() -> None:
    """One request a second, burst 1, one in flight, one lead a request: every add e-mails."""
    assert (DEST.rate, DEST.burst, DEST.concurrency, DEST.batch_size) == (1.0, 1, 1, 1)
    assert DEST.marker_field == "description"


def test_a_destination_refuses_a_batch_larger_than_one() -> None:
    """SalesMan's add takes one lead: a batch_size other than 1 is refused at start-up."""
    with pytest.raises(ValidationError, match="batch_size"):
        SalesmanDestination.model_validate({**DEST.model_dump(), "batch_size": 10})


def test_the_api_key_does_not_print() -> None:
    """The key is a SecretStr: a destination's repr never shows it."""
    assert KEY not in repr(DEST)


# --- validation at the door ----------------------------------------------------------


def test_the_phone_is_normalised_to_plus_and_digits() -> None:
    """One spelling per number, so the CRM's own matching by phone works."""
    assert ADAPTER.validate(GOOD)["phone"] == "+79001234567"
    assert ADAPTER.validate({"phone": "9001234567"})["phone"] == "+79001234567"
    assert ADAPTER.validate({"phone": "+49 30 1234567"})["phone"] == "+49301234567"


def test_blank_fields_count_as_absent() -> None:
    """Upstream forms send "" for a field left empty; it is dropped, not refused."""
    lead = ADAPTER.validate({**GOOD, "company": "", "city": "  "})
    assert "company" not in lead
    assert "city" not in lead


def test_an_email_alone_is_enough() -> None:
    """Either phone or e-mail lets a manager reach the person."""
    assert ADAPTER.validate({"email": "a@b.ru"}) == {"email": "a@b.ru"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"ip": "999.1.1.1"}, "ip"),
        ({"phone": "12"}, "phone"),
        ({"phone": "+7 900 abc"}, "phone"),
        ({"title": 5}, "title"),
        ({"title": "я" * 256}, "title"),
        ({"description": "я" * 5001}, "description"),
        ({"fax": "x"}, "fax"),
        ({"phone": None, "email": None}, "lead"),
    ],
)
def test_a_broken_rule_names_the_field_and_never_the_value(
    change: dict[str, Any], field: str
) -> None:
    """LeadInvalid names the field and the rule; the phone, e-mail or ip never appear."""
    lead = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(LeadInvalid) as info:
        ADAPTER.validate(lead)
    assert field in [e.field for e in info.value.errors]
    for value in ("123-45", "not-an-email", "999.1.1.1", "abc"):
        assert value not in str(info.value)


# --- the add request -----------------------------------------------------------------


def test_the_add_is_a_form_post_with_the_apikey_in_the_body_never_the_url() -> None:
    """Proxies log URLs; the key travels in the form body only."""
    request = ADAPTER.build_request([delivery()], DEST)
    assert request.method == "POST"
    assert request.url == "https://crm.example/developer/v1/leads"
    assert KEY not in str(request.url)
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    sent = form(request)
    assert (sent["action"], sent["login"], sent["apikey"]) == ("add", DEST.login, KEY)
    assert (sent["title"], sent["phone"], sent["email"]) == (
        "Иван",
        "+79001234567",
        "ivan@example.com",
    )


def test_the_marker_follows_the_description() -> None:
    """`[lr:<lead id>]` goes at the end of the description, so the lead can be found again."""
    sent = form(ADAPTER.build_request([delivery({**GOOD, "description": "хочет демо"})], DEST))
    assert sent["description"] == f"хочет демо {marker('abc123')}"


def test_the_marker_can_go_into_path_instead() -> None:
    """With marker_field = "path" the description is sent as it came."""
    dest = DEST.model_copy(update={"marker_field": "path"})
    sent = form(ADAPTER.build_request([delivery({**GOOD, "description": "x"})], dest))
    assert sent["path"] == marker("abc123")
    assert sent["description"] == "x"


def test_a_recorded_request_hides_the_secret_and_personal_fields() -> None:
    """The fields the module names as secret or personal are masked by the redactor."""
    recorded = json.dumps(redact_request(ADAPTER.build_request([delivery()], DEST), [KEY]))
    assert KEY not in recorded
    assert "+79001234567" not in recorded
    assert "ivan@example.com" not in recorded
    assert SECRET_FIELDS == ("apikey",)
    assert set(PERSONAL_FIELDS) == {"phone", "email", "title", "ip"}


# --- reading the answer to an add ----------------------------------------------------


def parse(response: httpx.Response) -> Any:
    """The adapter's reading; a per-lead list is unwrapped to its one outcome."""
    answer = ADAPTER.parse_response(response, [delivery()], DEST)
    return answer[0] if isinstance(answer, list) else answer


def test_success_is_delivered_with_the_crm_id() -> None:
    """`{"result": {"text": "Success", "id": 940}}` → Delivered, external id "940"."""
    got = parse(html({"result": {"text": "Success", "id": 940}}))
    assert got == Delivered(external_id="940", detail="Success")


@pytest.mark.parametrize(
    ("code", "words"),
    [("400", "API key"), ("401", "login"), ("402", "method")],
)
def test_each_string_error_code_suspends_the_destination(code: str, words: str) -> None:
    """Wrong key, unknown user, unknown method: HTTP 200, and the destination pauses."""
    got = parse(html({"result": "Error", "error": {"code": code, "text": "…"}}))
    assert isinstance(got, Suspended)
    assert words in got.reason
    assert code in got.reason


def test_a_failed_add_is_rejected_in_salesmans_words() -> None:
    """`{"error": {"code": "1", …}, "Error": …}` without `result`: this lead is refused."""
    text = "Не переданы данные заявки"
    got = parse(html({"error": {"code": "1", "text": text}, "Error": text}))
    assert isinstance(got, Rejected)
    assert text in got.reason


def test_a_php_error_page_is_a_transient_failure_in_doubt() -> None:
    """PHP may die after the insert (e-mailing the manager): look before sending again."""
    got = parse(html("<br />\n<b>Fatal error</b>: Uncaught Exception in /var/www/api.php"))
    assert isinstance(got, Failed)
    assert got.in_doubt
    assert "Fatal" not in got.reason


def test_php_notices_before_the_json_do_not_hide_the_answer() -> None:
    """A PHP warning printed ahead of the JSON still leaves SalesMan's answer readable."""
    body = '<b>Warning</b>: date(): timezone<br />\n{"result":{"text":"Success","id":7}}'
    assert parse(html(body)) == Delivered(external_id="7", detail="Success")


def test_429_is_throttled_with_retry_after() -> None:
    """A 429 (from a proxy in front of SalesMan) cools the destination down."""
    got = parse(html("", 429, **{"Retry-After": "3"}))
    assert got == Throttled(retry_after=timedelta(seconds=3), reason="HTTP 429")


def test_a_5xx_is_a_failure_in_doubt() -> None:
    """A gateway error may come after the CRM stored the lead."""
    got = parse(html("<html>Bad gateway</html>", 502))
    assert isinstance(got, Failed)
    assert got.in_doubt


def test_success_without_an_id_is_looked_up_before_any_resend() -> None:
    """The CRM took the lead but gave no id: in doubt, not delivered blind nor resent."""
    got = parse(html({"result": {"text": "Success"}}))
    assert isinstance(got, Failed)
    assert got.in_doubt


@pytest.mark.parametrize(
    "body",
    [
        [],
        "null",
        '"Success"',
        {"result": "Error", "error": {"code": "500"}},
        {"result": "Error"},
        {"data": {"x": 1}},
        {"error": "text, not an object"},
        '{"result": {"text": "Success", "id": 1',
    ],
)
def test_any_other_answer_is_a_failure_never_an_exception(body: Any) -> None:
    """An unknown shape retries the lead; it never crashes the task."""
    assert isinstance(parse(html(body)), Failed)


# --- the in-doubt lookup -------------------------------------------------------------


def test_the_lookup_lists_the_newest_leads_since_the_day_before() -> None:
    """`dateStart` means "created after": the day before the lead was accepted covers its day."""
    request = ADAPTER.build_lookup(delivery(in_doubt=True), DEST, CREATED + timedelta(minutes=5))
    assert request is not None
    assert KEY not in str(request.url)
    sent = form(request)
    assert sent["action"] == "list"
    assert (sent["dateStart"], sent["first"], sent["offset"]) == ("2026-11-21", "new", "0")


def test_a_lost_add_is_found_by_its_marker() -> None:
    """The record whose content carries `[lr:abc123]` is our lead: delivered, with its id."""
    records = [
        {"id": "7", "content": "title: other", "phone": "+79001234567"},
        {"id": "8", "content": f"description: хочет демо {marker('abc123')}", "status": "1"},
    ]
    found = ADAPTER.parse_lookup(html({"data": records}), delivery(in_doubt=True), DEST)
    assert isinstance(found, Delivered)
    assert found.external_id == "8"
    assert "found in the CRM" in found.detail
    assert found.data["crm"]["status_name"] == "В работе"


def test_a_lead_with_the_same_phone_but_no_marker_is_not_ours() -> None:
    """Phone and e-mail repeat across leads; only the marker identifies ours."""
    records = [{"id": "7", "content": "title: Иван", "phone": "+79001234567"}]
    assert ADAPTER.parse_lookup(html({"data": records}), delivery(in_doubt=True), DEST) is None


def test_a_marker_in_path_is_found_too() -> None:
    """With marker_field = "path" the marker comes back as the client path's name."""
    records = [{"id": "9", "content": "", "clientpathName": f"сайт {marker('abc123')}"}]
    dest = DEST.model_copy(update={"marker_field": "path"})
    found = ADAPTER.parse_lookup(html({"data": records}), delivery(in_doubt=True), dest)
    assert isinstance(found, Delivered)
    assert found.external_id == "9"


@pytest.mark.parametrize(
    "body",
    [
        {"result": "Error", "error": {"code": "400", "text": "Не верный API key"}},
        "<b>Fatal error</b>",
        {"data": None},
    ],
)
def test_an_unreadable_lookup_raises_so_the_lead_is_not_sent_again(body: Any) -> None:
    """Only a readable list can say "not there"; anything else is a failed lookup."""
    with pytest.raises(PlatformContractError):
        ADAPTER.parse_lookup(html(body), delivery(in_doubt=True), DEST)


# --- status reconciliation -----------------------------------------------------------


def test_the_poll_lists_from_the_day_before_the_oldest_lead() -> None:
    """One list request covers the whole batch of recently delivered leads."""
    batch = [
        delivery(external_id="8"),
        delivery(external_id="9", created_at=CREATED - timedelta(days=3)),
    ]
    request = ADAPTER.build_poll(batch, DEST, CREATED)
    assert request is not None
    assert form(request)["dateStart"] == "2026-11-18"


def test_reconciliation_names_status_and_result() -> None:
    """status 3 / rezult 2 → Закрыт/Дубль; the lead stays delivered, the CRM state is kept."""
    record = {"id": "8", "status": "3", "rezult": "2"}
    answer = ADAPTER.parse_poll(html({"data": [record]}), [delivery(external_id="8")], DEST)
    assert answer == [
        StatusUpdate(
            LeadState.DELIVERED,
            "Закрыт/Дубль",
            {
                "crm": {
                    "status": "3",
                    "status_name": "Закрыт",
                    "rezult": "2",
                    "rezult_name": "Дубль",
                }
            },
        )
    ]


def test_an_open_lead_reads_its_status_name_alone() -> None:
    """No result yet: the detail is the status name."""
    record = {"id": "8", "status": "1", "statusName": "В работе", "rezult": "", "rezultName": ""}
    (update,) = ADAPTER.parse_poll(html({"data": [record]}), [delivery(external_id="8")], DEST)  # type: ignore[misc]
    assert isinstance(update, StatusUpdate)
    assert update.detail == "В работе"


def test_unchanged_unknown_or_absent_statuses_give_no_update() -> None:
    """Only a known status (0–3) that differs from what the ledger holds is news."""
    crm = {"status": "1", "status_name": "В работе", "rezult": "", "rezult_name": ""}
    batch = [
        delivery(external_id="8", data={"crm": crm}),
        delivery(external_id="9"),
        delivery(external_id="10"),
    ]
    records = [{"id": "8", "status": "1"}, {"id": "9", "status": "7"}]
    assert ADAPTER.parse_poll(html({"data": records}), batch, DEST) == [None, None, None]


def test_a_poll_refused_or_throttled_is_not_a_status() -> None:
    """An error code fails the look; a 429 cools the destination down."""
    refused = html({"result": "Error", "error": {"code": "401", "text": "?"}})
    assert isinstance(ADAPTER.parse_poll(refused, [delivery(external_id="8")], DEST), Failed)
    throttled = ADAPTER.parse_poll(html("", 429), [delivery(external_id="8")], DEST)
    assert isinstance(throttled, Throttled)


# --- ops: info and stat --------------------------------------------------------------


def test_info_asks_by_the_crm_id_and_only_once_there_is_one() -> None:
    """`action=info&id=…` in the body; nothing to ask before SalesMan gave an id."""
    assert ADAPTER.build_info(delivery(), DEST) is None
    request = ADAPTER.build_info(delivery(external_id="940"), DEST)
    assert request is not None
    assert form(request) == form(info_request("940", DEST))
    assert (form(request)["action"], form(request)["id"]) == ("info", "940")


def test_info_shows_the_crm_state_with_names_and_no_personal_data() -> None:
    """Ops see status, result, dates and the manager; not the person's phone."""
    record = {
        "id": "940",
        "datum": "2026-11-22",
        "datum_do": "",
        "phone": "+79001234567",
        "status": "2",
        "rezult": "3",
        "userName": "Менеджер",
    }
    shown = ADAPTER.parse_info(html({"data": record}))
    assert shown["status_name"] == "Обработан"
    assert shown["rezult_name"] == "Другое"
    assert shown["user"] == "Менеджер"
    assert "+79001234567" not in json.dumps(shown, ensure_ascii=False)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"data": []}, "no such lead"),
        ({"result": "Error", "error": {"code": "400"}}, "API key"),
        ("<b>Fatal error</b>", "not JSON"),
    ],
)
def test_info_says_why_it_has_no_record(body: Any, words: str) -> None:
    """An unknown id, an error code or a PHP page: an `error` entry, never an exception."""
    assert words in ADAPTER.parse_info(html(body))["error"]


def test_stat_counts_open_and_processed_per_manager() -> None:
    """`action=stat`'s string counts become numbers."""
    assert form(ADAPTER.build_stat(DEST))["action"] == "stat"
    body = {"data": [{"title": "vladislav@isaler.ru", "open": "2", "processed": "1"}]}
    assert ADAPTER.parse_stat(html(body)) == {
        "managers": [{"login": "vladislav@isaler.ru", "open": 2, "processed": 1}]
    }
    assert "error" in ADAPTER.parse_stat(html({"result": "Error", "error": {"code": "401"}}))


# --- error codes: recognised wherever they come ----------------------------------------

#: every place and spelling an error code may take in SalesMan's answer
CODE_SHAPES = [
    {"error": {"code": "400", "text": "Не верный API key"}},  # no `result` at all
    {"error": {"code": 400}},
    {"error": {"code": " 401 "}},
    {"error": {"code": 402.0}},
    {"result": "Error", "error": {"code": 401, "text": "Неизвестный пользователь"}},
    {"error": "400"},
    {"error": 402},
    {"error": "400 – Не верный API key"},
    {"code": "401"},
    {"code": 400, "text": "Не верный API key"},
    {"Error": "402"},
    {"result": {"error": {"code": "400"}}},
    {"result": {"code": 401}},
    {"error": {"code": "400", "text": "…"}, "Error": "Ошибка добавления лида"},
    {"result": {"text": "Success", "id": 940}, "error": {"code": "402"}},
    {"error": {"code": "1", "text": "Ошибка добавления лида"}, "code": "400"},
]


@pytest.mark.parametrize("body", CODE_SHAPES)
def test_an_auth_code_in_any_shape_pauses_the_destination_never_rejects(body: Any) -> None:
    """400/401/402 as a string or a number, in any place: Suspended, whatever else is there."""
    got = parse(html(body))
    assert isinstance(got, Suspended), got
    assert any(code in got.reason for code in AUTH_ERRORS)


@pytest.mark.parametrize("body", CODE_SHAPES)
def test_an_auth_code_in_any_shape_fails_lookup_poll_info_and_stat(body: Any) -> None:
    """A lookup never reads it as "not there"; a poll, info and stat never as a record."""
    lead = delivery(in_doubt=True)
    request = ADAPTER.build_lookup(lead, DEST, CREATED)
    assert request is not None
    with pytest.raises(PlatformContractError):
        ADAPTER.parse_lookup(html(body, request=request), lead, DEST)
    one = delivery(external_id="940")
    for batch in ([one], [one, delivery(external_id="941")]):
        poll = ADAPTER.build_poll(batch, DEST, CREATED)
        assert poll is not None
        assert isinstance(ADAPTER.parse_poll(html(body, request=poll), batch, DEST), Failed)
    info = ADAPTER.build_info(one, DEST)
    assert info is not None
    assert "error" in ADAPTER.parse_info(html(body, request=info))
    assert "error" in ADAPTER.parse_stat(html(body))


@pytest.mark.parametrize(
    "body",
    [
        {"result": "Error", "error": {"code": "500"}},
        {"result": "Error"},
        {"result": "Success"},
        {"data": 940},
        [],
        "null",
    ],
)
def test_an_unknown_answer_to_an_add_is_in_doubt(body: Any) -> None:
    """The CRM may hold the lead: look it up before sending again, never resend blind."""
    got = parse(html(body))
    assert isinstance(got, Failed)
    assert got.in_doubt


# --- info: `data` is an array -------------------------------------------------------

RECORD = {
    "id": "940",
    "datum": "2026-11-22",
    "datum_do": "2026-11-23",
    "phone": "+79001234567",
    "status": "2",
    "statusName": "Обработан",
    "rezult": "3",
    "rezultName": "Другое",
    "userName": "Менеджер",
}


@pytest.mark.parametrize(
    "body",
    [
        {"data": [RECORD]},  # the document: "В поле “data” приходит массив"
        {"data": [{**RECORD, "id": "1"}, RECORD]},
        {"data": RECORD},  # an associative array, as PHP encodes one
        {"result": {"data": [RECORD], "id": "940"}},  # inside `result`
        {"result": {"data": RECORD, "id": "940"}},
    ],
)
def test_info_reads_its_data_array(body: Any) -> None:
    """The record asked for, by its id, whether data is an array or an object."""
    request = ADAPTER.build_info(delivery(external_id="940"), DEST)
    assert request is not None
    shown = ADAPTER.parse_info(html(body, request=request))
    assert (shown["id"], shown["status_name"], shown["rezult_name"]) == (
        "940",
        "Обработан",
        "Другое",
    )
    assert (shown["datum_do"], shown["user"]) == ("2026-11-23", "Менеджер")


@pytest.mark.parametrize(
    "body",
    [
        {"data": []},
        {"data": [{**RECORD, "id": "1"}]},
        {"data": [{"title": "vladislav@isaler.ru", "open": "2", "processed": "1"}]},
    ],
)
def test_info_without_the_record_asked_for_shows_none(body: Any) -> None:
    """An empty array, another lead's record, or `stat`'s rows (info's old name): no record."""
    request = ADAPTER.build_info(delivery(external_id="940"), DEST)
    assert request is not None
    assert "no such lead" in ADAPTER.parse_info(html(body, request=request))["error"]


# --- reconciliation: pages, then info alone ------------------------------------------


def test_one_lead_alone_is_asked_about_by_info_with_its_crm_id() -> None:
    """`action=info&id=<external id>` on page 0; no page after it."""
    one = [delivery(external_id="940")]
    request = ADAPTER.build_poll(one, DEST, CREATED)
    assert request is not None
    assert form(request) == {
        "login": DEST.login,
        "apikey": KEY,
        "action": "info",
        "id": "940",
    }
    assert ADAPTER.build_poll(one, DEST, CREATED, page=1) is None


def test_the_poll_pages_on_up_to_its_last_page() -> None:
    """Page n of the list is `offset=n`; past POLL_PAGES there is no page to read."""
    batch = [delivery(external_id="8"), delivery(external_id="9")]
    for page in range(POLL_PAGES):
        request = ADAPTER.build_poll(batch, DEST, CREATED, page=page)
        assert request is not None
        assert (form(request)["action"], form(request)["offset"]) == ("list", str(page))
    assert ADAPTER.build_poll(batch, DEST, CREATED, page=POLL_PAGES) is None
    assert ADAPTER.build_poll([], DEST, CREATED) is None


def page_of(n: int, datum: str = "2026-11-22", first_id: int = 5000) -> list[dict[str, str]]:
    """`n` records of other leads, newest first, all on `datum`."""
    return [{"id": str(first_id - i), "datum": datum, "status": "0"} for i in range(n)]


def test_a_lead_not_on_a_full_page_is_not_seen_and_on_a_short_one_absent() -> None:
    """A full page may not reach it (NotSeen: next page, then info); a short one ended the list."""
    batch = [delivery(external_id="8"), delivery(external_id="9")]
    request = ADAPTER.build_poll(batch, DEST, CREATED)
    assert request is not None
    full = [{"id": "8", "datum": "2026-11-22", "status": "2"}, *page_of(PAGE - 1)]
    answers = ADAPTER.parse_poll(html({"data": full}, request=request), batch, DEST)
    assert isinstance(answers, list)
    assert isinstance(answers[0], StatusUpdate)
    assert answers[1] == NotSeen(last=False)
    short = ADAPTER.parse_poll(html({"data": full[:10]}, request=request), batch, DEST)
    assert isinstance(short, list) and short[1] is None


def test_a_page_that_ignored_the_filters_leaves_the_rest_to_info_at_once() -> None:
    """Records from before our dateStart: the CRM ignores paging too, so no later page helps."""
    batch = [delivery(external_id="8"), delivery(external_id="9")]
    request = ADAPTER.build_poll(batch, DEST, CREATED)
    assert request is not None
    # records from before the dateStart day, out of order: the CRM ignored filter and order
    old = page_of(PAGE // 2, datum="2026-11-20") + page_of(PAGE // 2, datum="2026-11-22")
    answers = ADAPTER.parse_poll(html({"data": old}, request=request), batch, DEST)
    assert answers == [NotSeen(last=True), NotSeen(last=True)]


def test_the_last_poll_page_says_so() -> None:
    """On page POLL_PAGES - 1 a lead not found is NotSeen(last=True): info next."""
    batch = [delivery(external_id="8"), delivery(external_id="9")]
    request = ADAPTER.build_poll(batch, DEST, CREATED, page=POLL_PAGES - 1)
    assert request is not None
    answers = ADAPTER.parse_poll(html({"data": page_of(PAGE)}, request=request), batch, DEST)
    assert answers == [NotSeen(last=True), NotSeen(last=True)]


def test_info_alone_reads_the_status_from_its_data_array() -> None:
    """The poll's `info` answer: a StatusUpdate from the one record; none when absent."""
    one = [delivery(external_id="940")]
    request = ADAPTER.build_poll(one, DEST, CREATED)
    assert request is not None
    (update,) = ADAPTER.parse_poll(html({"data": [RECORD]}, request=request), one, DEST)  # type: ignore[misc]
    assert isinstance(update, StatusUpdate)
    assert update.detail == "Обработан/Другое"
    assert ADAPTER.parse_poll(html({"data": []}, request=request), one, DEST) == [None]


# --- the lookup: never "not there" on pages that may repeat --------------------------


def lookup(body: Any, page: int = 0, **kw: Any) -> Any:
    """The adapter's reading of lookup page `page` for lead `abc123`."""
    lead = delivery(in_doubt=True, **kw)
    request = ADAPTER.build_lookup(lead, DEST, CREATED + timedelta(minutes=5), page=page)
    assert request is not None
    return ADAPTER.parse_lookup(html(body, request=request), lead, DEST)


def test_the_lookup_never_gives_up_into_a_resend() -> None:
    """Full pages without the marker: NotSeen up to the last page, then held, dead, in doubt."""
    for page in range(LOOKUP_PAGES - 1):
        assert lookup({"data": page_of(PAGE)}, page) == NotSeen()
    last = lookup({"data": page_of(PAGE)}, LOOKUP_PAGES - 1)
    assert isinstance(last, Rejected)
    assert last.state == LeadState.DEAD
    assert marker("abc123") in last.reason
    assert LOOKUP_PAGES <= DELIVERY_LOOKUP_PAGES  # the loop reads as far as the adapter holds


def test_records_of_the_datestart_day_prove_no_ignored_filter() -> None:
    """
    "больше указанной даты" may keep that day's records (a creation time after
    its midnight): a full page of them says "look further", not "filters ignored".
    """
    assert lookup({"data": page_of(PAGE, datum="2026-11-21 15:00:00")}) == NotSeen()


def test_a_lookup_page_that_ignored_the_filters_holds_the_lead_at_once() -> None:
    """Records from before our dateStart: the pages would repeat; no page can say "absent"."""
    older_first = page_of(PAGE // 2, datum="2026-11-20") + page_of(PAGE // 2, datum="2026-11-22")
    held = lookup({"data": older_first})
    assert isinstance(held, Rejected)
    assert held.state == LeadState.DEAD
    assert "repeat" in held.reason


def test_a_page_that_went_past_the_lead_proves_it_absent() -> None:
    """Newest first, oldest record stamped over a day before the lead: it would be above."""
    newer = page_of(PAGE - 1, datum="2026-11-22 09:00:00")
    older = [{"id": "1", "datum": "2026-11-20 23:00:00", "status": "0"}]
    assert lookup({"data": newer + older}) is None


@pytest.mark.parametrize(
    "records",
    [
        [*page_of(PAGE - 1, datum="2026-11-22 09:00:00"), {"id": "1", "datum": "2026-11-22 01:00"}],
        [*page_of(PAGE - 1, datum="2026-11-22 09:00:00"), {"id": "1", "datum": ""}],
    ],
)
def test_a_page_proves_nothing_unless_old_enough_and_stamped(records: list[Any]) -> None:
    """Within a day of the lead (in some zone it may be older), or unstamped: look further."""
    assert lookup({"data": records}, page=1) == NotSeen()


def test_a_page_out_of_order_proves_nothing_absent() -> None:
    """Old records, but not newest first: the lead may sit anywhere; held, never sent."""
    records = [{"id": "1", "datum": "2026-11-01"}, *page_of(PAGE - 1, datum="2026-11-22")]
    got = lookup({"data": records}, page=1)
    assert isinstance(got, Rejected)
    assert got.state == LeadState.DEAD


def test_a_lookup_without_its_request_counts_as_the_last_page() -> None:
    """Not knowing which page it read, the lookup takes the cautious reading."""
    got = ADAPTER.parse_lookup(html({"data": page_of(PAGE)}), delivery(in_doubt=True), DEST)
    assert isinstance(got, Rejected)


def test_the_public_sources_empty_list_is_an_empty_page() -> None:
    """`{"result": "Error", "error": {"code": "404", "text": "Не найдено"}}`: nothing there."""
    body = {"result": "Error", "error": {"code": "404", "text": "Не найдено"}}
    assert lookup(body) is None


def test_the_lookup_always_builds_a_request() -> None:
    """None would tell the loop "no way to look: send again"."""
    for page in range(LOOKUP_PAGES + 2):
        assert ADAPTER.build_lookup(delivery(in_doubt=True), DEST, CREATED, page=page) is not None


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("a@b..ru", "two periods in a row"),
        ("a..b@mail.ru", "two periods in a row"),
        ("a@-mail.ru", "hyphen"),
        ("ivan@localhost", "period"),
        ("ivan@mail ru", "email address"),
    ],
)
def test_an_email_is_checked_by_email_validators_rules(address: str, why: str) -> None:
    """email-validator's syntax rules, without DNS; the address itself never in the error."""
    with pytest.raises(LeadInvalid) as info:
        ADAPTER.validate({"email": address})
    [error] = info.value.errors
    assert error.field == "email" and why in error.rule
    assert address not in str(info.value)


def test_an_international_email_is_accepted_and_its_domain_normalised() -> None:
    assert ADAPTER.validate({"email": "Иван@Почта.РФ"})["email"] == "Иван@почта.рф"
    assert ADAPTER.validate({"email": "Ivan.Petrov@Mail.RU"})["email"] == "Ivan.Petrov@mail.ru"
