"""
The Admitad emulator against its document, in raw HTTP over a real socket:
each test is a passage of `admitad-broker-applications.txt` (its examples
verbatim where it has them), spoken to without the adapter.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from sandbox import admitad as admitad_sandbox
from sandbox import serve

CLIENT, SECRET = "client", "admitad-doc-secret"
APPS = "/website/1/broker/applications"
NOT_BROKER = "Кампания не принимает заявки брокеров."
#: the document's campaign_settings example, the rules of program 30001 here
DOC_RULES = [
    {"field_name": "first_name", "regexp": "^[a-zA-Z]+$", "required": True, "description": ""},
    {"field_name": "last_name", "regexp": "^[a-zA-Z]+$", "required": True, "description": ""},
    {"field_name": "middle_name", "regexp": "", "required": True, "description": ""},
    {
        "field_name": "product_type",
        "regexp": "^[1,3,7,8]{1}$",
        "required": True,
        "description": "1-credit; 3-card; 7-gold-card; 8-platinum-card",
    },
]
#: the programs taking broker applications; 17810 does not, as in the document's answer
PROGRAMS: dict[int, list[dict[str, Any]]] = {
    **{c: [] for c in (17809, 16126, 17288, 16651, 16633, 16326, 14605, 65)},
    30001: DOC_RULES,
}
#: the document's processing response
PROCESSING = {"message": "objects_list_returned_ok", "code": 200, "data": False}
#: the application's fields in the document's curl example
IVAN = {
    "first_name": "Иван",
    "last_name": "Иванов",
    "middle_name": "Иванович",
    "mobile_phone": "03512345678",
    "work_date": "11.11.2016",
    "email": "ivanov11123test@gmail.com",
}


# ---------------------------------------------------------------------- the wire


class Api:
    """Raw HTTP to one emulator with one Bearer token."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def login(self) -> None:
        answer = self.client.post(
            "/token/",
            auth=(CLIENT, SECRET),
            data={
                "grant_type": "client_credentials",
                "client_id": CLIENT,
                "scope": "manage_broker_application broker_application",
            },
        )
        assert answer.status_code == 200, answer.text
        self.client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"

    def create(self, campaigns: str, **fields: str) -> httpx.Response:
        form = {"campaigns": campaigns, "user_notified": "1", **fields}
        return self.client.post(f"{APPS}/create/", data=form)

    def created(self, campaigns: str, **fields: str) -> dict[str, Any]:
        answer = self.create(campaigns, **fields)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def listing(self, **params: str) -> httpx.Response:
        return self.client.get(f"{APPS}/", params=params)

    def one(self, app_id: int) -> dict[str, Any]:
        (item,) = self.listing(id=str(app_id)).json()["results"]
        return dict(item)

    def log(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.client.get("/__sandbox__/log").json()
        return entries


def multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    """A multipart/form-data body, as curl -F sends it."""
    boundary = f"----curl{secrets.token_hex(8)}"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in fields.items()
    ]
    return ("".join(parts) + f"--{boundary}--\r\n").encode(), (
        f"multipart/form-data; boundary={boundary}"
    )


@contextmanager
def emulator(**config: Any) -> Iterator[Api]:
    """An emulator of its own (timings, outcomes, pause minute) with a token."""
    app = admitad_sandbox.create_app(
        client_id=CLIENT, client_secret=SECRET, campaigns=PROGRAMS, **config
    )
    with serve(app) as base, httpx.Client(base_url=base, timeout=5) as client:
        api = Api(client)
        api.login()
        yield api


@pytest.fixture(scope="module")
def shared() -> Iterator[Api]:
    with emulator(decide_after=0.2, outcomes={16126: "declined"}, per_minute=100_000) as api:
        yield api


@pytest.fixture
def api(shared: Api) -> Api:
    """The shared emulator, emptied (tokens too, so a new one)."""
    shared.client.post("/__sandbox__/reset")
    shared.login()
    return shared


def programs(item: dict[str, Any]) -> dict[int, str]:
    return {r["campaign_id"]: r["status"] for r in item["responses"]}


def watch(
    api: Api, app_id: int, until: Callable[[dict[int, str]], bool], limit: float = 10
) -> list[tuple[float, dict[int, str]]]:
    """Poll the list until `until(statuses)`; each look with the time it came back."""
    start = time.monotonic()
    seen: list[tuple[float, dict[int, str]]] = []
    while not seen or not until(seen[-1][1]):
        assert time.monotonic() - start < limit, seen[-3:]
        time.sleep(0.05)
        statuses = programs(api.one(app_id))
        seen.append((time.monotonic(), statuses))
    return seen


def first_seen(seen: list[tuple[float, dict[int, str]]], c_id: int) -> float:
    return min(t for t, statuses in seen if c_id in statuses)


# ---------------------------------------------------------------------- campaigns and algorithm


def test_the_two_notations_of_the_equivalence_example_give_one_algorithm(api: Api) -> None:
    """`[17809, 16126, [17288, 16651], {"ids": [16633]}, {...}]` is the five stages it equals."""
    mixed = """[17809, 16126, [17288, 16651], {"ids": [16633]},
{"ids": [16326, 14605],"pause": 150}]"""
    explicit = """[{"ids": [17809], "pause": 0},
{"ids": [16126], "pause": 0},
{"ids": [17288, 16651], "pause": 0},
{"ids": [16633], "pause": 0},
{"ids": [16326, 14605], "pause": 150}]"""
    algorithms = [api.created(notation)["algorithm"] for notation in (mixed, explicit)]
    assert algorithms == [json.loads(explicit)] * 2


def test_the_algorithm_example_sends_the_first_group_at_once(api: Api) -> None:
    """Pause 0 on the first group: both its programs are in `responses` straight away."""
    notation = """[{"ids": [17809, 16126], "pause": 0}, {"ids": [17288, 16651],
"pause": 150},{"ids": [16633],"pause": 80}]"""
    body = api.created(notation)
    assert body["algorithm"] == json.loads(notation)
    assert programs(body) == {17809: "processing", 16126: "processing"}


def test_the_curl_example_answers_as_the_document(api: Api) -> None:
    """`-F campaigns=[17809, 17810]`, 17810 taking no broker applications: the example answer."""
    body, content_type = multipart({"campaigns": "[17809, 17810]", "user_notified": "1", **IVAN})
    answer = api.client.post(
        f"{APPS}/create/", content=body, headers={"Content-Type": content_type}
    )
    assert answer.status_code == 200, answer.text
    created = answer.json()
    assert isinstance(created.pop("id"), int)
    assert created == {
        "subid": "",
        "subid1": "",
        "subid3": "",
        "subid2": "",
        "subid4": "",
        "responses": [
            {
                "campaign_id": 17809,
                "status": "processing",
                "order_id": None,
                "server_response": PROCESSING,
            }
        ],
        "errors": [{"campaign_id": 17810, "message": NOT_BROKER}],
        "algorithm": [{"ids": [17809], "pause": 0}],
    }


def test_two_bare_ids_are_two_stages_sent_one_after_the_other() -> None:
    """`[17809, 16126]`: 16126 is sent only once 17809 has answered."""
    with emulator(timings={17809: 0.6, 16126: 0.1}) as api:
        created = api.created("[17809, 16126]")
        sent = time.monotonic()
        assert created["algorithm"] == [{"ids": [17809], "pause": 0}, {"ids": [16126], "pause": 0}]
        assert programs(created) == {17809: "processing"}
        seen = watch(api, created["id"], lambda s: 16126 in s)
    assert first_seen(seen, 16126) - sent >= 0.6 - 0.05
    assert seen[-1][1][17809] == "waiting"


def test_the_first_stage_pause_holds_the_first_group_back() -> None:
    """`pause` comes before a group, the first one too: nothing is sent before it passes."""
    with emulator(minute=0.5, timings={17809: 0.2}) as api:
        sent = time.monotonic()
        created = api.created('[{"ids": [17809], "pause": 2}]')
        assert created["responses"] == []
        seen = watch(api, created["id"], lambda s: 17809 in s)
    assert first_seen(seen, 17809) - sent >= 1.0 - 0.05
    assert any(not statuses for _, statuses in seen)


def test_a_later_stage_starts_once_the_earlier_is_decided_and_its_pause_passed() -> None:
    """Stage 2 (pause 2 minutes) after 17809 took the application: decided at 0.6 s, sent at 1.4."""
    with emulator(minute=0.4, timings={17809: 0.6, 16126: 0.1}) as api:
        sent = time.monotonic()
        created = api.created('[{"ids": [17809]}, {"ids": [16126], "pause": 2}]')
        seen = watch(api, created["id"], lambda s: 16126 in s)
    assert first_seen(seen, 16126) - sent >= 1.4 - 0.05
    assert any(statuses == {17809: "waiting"} for _, statuses in seen)  # decided, pausing
    assert all(s[17809] != "processing" for _, s in seen if 16126 in s)


def test_when_every_program_of_a_stage_refuses_the_next_starts_without_its_pause() -> None:
    """All of stage 1 declined or in error: stage 2 goes at once, not 10 s (its pause) later."""
    outcomes = {16126: "declined", 16651: "error"}
    with emulator(minute=10, timings={16126: 0.3, 16651: 0.4}, outcomes=outcomes) as api:
        sent = time.monotonic()
        created = api.created('[[16126, 16651], {"ids": [16633], "pause": 1}]')
        seen = watch(api, created["id"], lambda s: 16633 in s, limit=5)
    assert 0.4 - 0.05 <= first_seen(seen, 16633) - sent < 5
    assert seen[-1][1] == {16126: "declined", 16651: "error", 16633: "processing"}


def test_when_one_program_accepts_the_next_stage_waits_its_pause() -> None:
    """One of stage 1 took it (waiting): stage 2 is held for its pause."""
    outcomes = {16126: "declined"}
    with emulator(minute=10, timings={16126: 0.1, 17809: 0.2}, outcomes=outcomes) as api:
        created = api.created('[[16126, 17809], {"ids": [16633], "pause": 1}]')
        seen = watch(api, created["id"], lambda s: s.get(17809) == "approved", limit=5)
        time.sleep(0.5)
        assert programs(api.one(created["id"])) == {16126: "declined", 17809: "approved"}
    assert all(16633 not in s for _, s in seen)


def test_a_stage_with_a_program_still_processing_stays_undecided() -> None:
    """16126 declined after 0.2 s, 17809 processing for 2 s: stage 2 waits for 17809."""
    timings = {16126: 0.2, 17809: 2.0, 16633: 0.1}
    with emulator(timings=timings, outcomes={16126: "declined"}) as api:
        sent = time.monotonic()
        created = api.created("[[16126, 17809], 16633]")
        seen = watch(api, created["id"], lambda s: 16633 in s)
    assert {16126: "declined", 17809: "processing"} in [s for _, s in seen]
    assert first_seen(seen, 16633) - sent >= 2.0 - 0.05
    assert seen[-1][1] == {16126: "declined", 17809: "waiting", 16633: "processing"}


def test_statuses_go_processing_waiting_approved_with_an_order_id(api: Api) -> None:
    """A program that takes the application: processing → waiting → approved."""
    created = api.created("[17809]")
    seen = watch(api, created["id"], lambda s: s.get(17809) == "approved")
    order = [s[17809] for _, s in seen]
    assert order.index("processing") < order.index("waiting") < order.index("approved")
    (response,) = api.one(created["id"])["responses"]
    assert response["order_id"] is not None


def test_a_program_whose_own_rules_are_broken_is_an_error_naming_the_field(api: Api) -> None:
    """campaign_settings of 30001 want Latin names: Cyrillic ones put it in errors[], not sent."""
    body = api.created("[30001, 17809]", **IVAN, product_type="3")
    assert body["algorithm"] == [{"ids": [17809], "pause": 0}]
    (error,) = body["errors"]
    assert error["campaign_id"] == 30001
    assert "first_name" in error["message"]
    latin = {"first_name": "Ivan", "last_name": "Ivanov", "middle_name": "Иванович"}
    missing = api.created("[30001]", **latin)
    assert "product_type" in missing["errors"][0]["message"]
    taken = api.created("[30001]", **latin, product_type="3")
    assert (taken["errors"], taken["algorithm"]) == ([], [{"ids": [30001], "pause": 0}])


def test_a_stage_left_without_programs_drops_out_of_the_algorithm(api: Api) -> None:
    """17810 alone in stage 1: the algorithm is stage 2 only, with its own pause."""
    body = api.created('[[17810], {"ids": [17809], "pause": 5}]')
    assert body["algorithm"] == [{"ids": [17809], "pause": 5}]
    assert body["errors"] == [{"campaign_id": 17810, "message": NOT_BROKER}]
    assert body["responses"] == []


@pytest.mark.parametrize(
    "campaigns",
    [
        "17809",
        "[]",
        "[true]",
        "[1.5]",
        "[-1]",
        "[[17809, [16126]]]",
        '[{"ids": []}]',
        '[{"pause": 1}]',
        '[{"ids": [17809], "pause": 1441}]',
        '[{"ids": [17809], "pause": -1}]',
        '[{"ids": [17809], "pause": 1.5}]',
        '[{"ids": [17809], "delay": 1}]',
        "[17809, [17809]]",
        "17809, 16126",
    ],
)
def test_campaigns_outside_the_documented_notations_are_refused(api: Api, campaigns: str) -> None:
    """Anything but ids, lists of ids and {"ids", "pause"} (0–1440) is a 400 on `campaigns`."""
    answer = api.create(campaigns)
    assert answer.status_code == 400
    assert "campaigns" in answer.json()


def test_the_largest_pause_is_a_day(api: Api) -> None:
    """1440 minutes is taken."""
    body = api.created('[{"ids": [17809], "pause": 1440}]')
    assert body["algorithm"] == [{"ids": [17809], "pause": 1440}]


# ---------------------------------------------------------------------- the field table


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("first_name", "x" * 101),
        ("mobile_phone", "1" * 33),
        ("email", "a" * 76),
        ("work_house", "1" * 11),
        ("guarator", "x" * 101),
        ("subid", "x" * 51),
        ("subid3", "x" * 51),
        ("subid4", "x" * 121),
        ("subid2", "lead%00"),
        ("birth_date", "1990-02-01"),
        ("birth_date", "31.02.1990"),
        ("work_date", "11.11.16"),
        ("work_salary", "12345678901"),
        ("credit_sum", "1.234"),
        ("credit_sum", "1,5"),
        ("credit_days", "3.5"),
        ("user_notified", "2"),
        ("test_mode", "yes"),
        ("middle_name_2", "x"),
    ],
)
def test_a_value_against_the_table_is_a_400_naming_its_field(
    api: Api, name: str, value: str
) -> None:
    answer = api.create("[17809]", **{name: value})
    assert answer.status_code == 400
    assert name in answer.json()
    assert api.listing().json()["_meta"]["count"] == 0


def test_values_at_the_table_limits_are_taken(api: Api) -> None:
    fields = {
        "first_name": "x" * 100,
        "guarator": "x" * 100,
        "subid": "x" * 50,
        "subid4": "x" * 120,
        "credit_sum": "9999999999.99",
        "work_salary": "0.5",
        "credit_days": "30",
        "birth_date": "01.02.1990",
    }
    body = api.created("[17809]", **fields)
    assert (body["subid"], body["subid4"]) == ("x" * 50, "x" * 120)


def test_user_notified_and_campaigns_are_required(api: Api) -> None:
    without_consent = api.client.post(f"{APPS}/create/", data={"campaigns": "[17809]"})
    without_programs = api.client.post(f"{APPS}/create/", data={"user_notified": "1"})
    assert (without_consent.status_code, without_programs.status_code) == (400, 400)
    assert "user_notified" in without_consent.json()
    assert "campaigns" in without_programs.json()


def test_without_consent_the_application_is_passed_to_no_program(api: Api) -> None:
    """user_notified=0: created, and its responses stay empty."""
    created = api.created("[17809]", user_notified="0")
    time.sleep(0.5)
    assert api.one(created["id"])["responses"] == []


def test_test_mode_has_no_id_and_empty_responses(api: Api) -> None:
    body = api.created("[17809, 17810]", test_mode="1", subid="t")
    assert "id" not in body
    assert body["responses"] == []
    assert body["algorithm"] == [{"ids": [17809], "pause": 0}]
    assert body["errors"] == [{"campaign_id": 17810, "message": NOT_BROKER}]
    assert api.listing().json()["_meta"]["count"] == 0


# ---------------------------------------------------------------------- the list


def test_the_list_example_answers_as_the_document(api: Api) -> None:
    """`?offset=0&limit=1`: `results` and `_meta {count, limit, offset}`."""
    created = api.created("[17809]")
    api.created("[16126]")
    body = api.listing(offset="0", limit="1").json()
    assert body["_meta"] == {"count": 2, "limit": 1, "offset": 0}
    (item,) = body["results"]
    assert item["id"] == created["id"]
    assert set(item) == {"id", *admitad_sandbox.SUBIDS, "responses", "errors", "algorithm"}


def test_list_filters(api: Api) -> None:
    """subid4 exact, id, campaign, order_by, offset/limit, date range."""
    first = api.created("[17809]", subid4="lead-1")
    second = api.created("[16126]", subid4="lead-10", subid="s")
    third = api.created("[16633]", subid4="lead-2")

    def ids(**params: str) -> list[int]:
        answer = api.listing(**params)
        assert answer.status_code == 200, answer.text
        return [item["id"] for item in answer.json()["results"]]

    everyone = [first["id"], second["id"], third["id"]]
    today = datetime.now(admitad_sandbox.ZONE).date()
    day = today.strftime("%d.%m.%Y")
    yesterday = (today - timedelta(days=1)).strftime("%d.%m.%Y")
    tomorrow = (today + timedelta(days=1)).strftime("%d.%m.%Y")
    assert ids(subid4="lead-1") == [first["id"]]
    assert ids(subid="s") == [second["id"]]
    assert ids(id=str(third["id"])) == [third["id"]]
    assert ids(campaign="16126") == [second["id"]]
    assert ids() == ids(order_by="date_created") == everyone
    assert ids(order_by="-date_created") == everyone[::-1]
    assert ids(offset="1", limit="1") == [second["id"]]
    assert api.listing(offset="1", limit="1").json()["_meta"] == {
        "count": 3,
        "limit": 1,
        "offset": 1,
    }
    assert ids(date_start=day, date_end=day) == everyone
    assert ids(date_start=yesterday) == everyone
    assert ids(date_end=yesterday) == []
    assert ids(date_start=tomorrow) == []


def test_list_by_status_and_order_id(api: Api) -> None:
    """`status` and `order_id` match the applications' responses."""
    taken = api.created("[17809]")
    refused = api.created("[16126]")
    watch(api, taken["id"], lambda s: s == {17809: "approved"})
    watch(api, refused["id"], lambda s: s == {16126: "declined"})
    by_status = {
        status: [i["id"] for i in api.listing(status=status).json()["results"]]
        for status in ("approved", "declined", "processing")
    }
    assert by_status == {"approved": [taken["id"]], "declined": [refused["id"]], "processing": []}
    order_id = api.one(taken["id"])["responses"][0]["order_id"]
    assert [i["id"] for i in api.listing(order_id=order_id).json()["results"]] == [taken["id"]]


@pytest.mark.parametrize(
    "params",
    [
        {"website": "1"},
        {"order_by": "id"},
        {"status": "sent"},
        {"date_start": "2016-11-11"},
        {"limit": "many"},
        {"campaigns": "17809"},
    ],
)
def test_the_list_refuses_what_the_document_does_not_name(api: Api, params: dict[str, str]) -> None:
    """An unknown parameter or a bad value: 400 naming it."""
    answer = api.listing(**params)
    assert answer.status_code == 400
    assert set(answer.json()) == set(params)


# ---------------------------------------------------------------------- campaign settings


def test_campaign_settings_answer_as_the_document(api: Api) -> None:
    answer = api.client.get("/broker/campaign_settings/30001/")
    assert answer.json() == {"results": DOC_RULES}
    assert api.client.get("/broker/campaign_settings/17809/").json() == {"results": []}
    assert api.client.get("/broker/campaign_settings/17810/").status_code == 404


# ---------------------------------------------------------------------- SMS verification


def sync_create(api: Api, **extra: str) -> httpx.Response:
    """The document's curl example (`-d`, urlencoded), with the required consent."""
    form = {"campaign_id": "65", "user_notified": "1", **IVAN, **extra}
    return api.client.post(
        f"{APPS}/sync_create/", data=form, headers={"accept": "application/json"}
    )


def confirm(api: Api, app_id: int, code: str) -> dict[str, Any]:
    answer = api.client.post(f"{APPS}/sync_create/{app_id}/confirm", data={"code": code})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_sync_create_answers_as_the_document_and_waits_with_empty_responses(api: Api) -> None:
    answer = sync_create(api)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert list(body) == ["status", "application_id", "server_response"]
    assert body["status"] == "waiting_sms_verification"
    assert isinstance(body["application_id"], int)
    assert isinstance(body["server_response"], dict)
    time.sleep(0.5)  # longer than the program takes: nothing goes before the code
    item = api.one(body["application_id"])
    assert (item["responses"], item["algorithm"]) == ([], [{"ids": [65], "pause": 0}])


def test_a_wrong_code_answers_the_same_shape_and_the_application_keeps_waiting(api: Api) -> None:
    app_id = sync_create(api).json()["application_id"]
    body = confirm(api, app_id, "0000")
    assert body == {
        "status": "waiting_sms_verification",
        "application_id": app_id,
        "server_response": body["server_response"],
    }
    time.sleep(0.5)
    assert api.one(app_id)["responses"] == []


def test_the_right_code_sends_the_application_on_to_its_program(api: Api) -> None:
    """Confirm answers as the document; the list then shows processing → waiting → approved."""
    app_id = sync_create(api).json()["application_id"]
    body = confirm(api, app_id, "1234")
    assert list(body) == ["status", "application_id", "server_response"]
    assert (body["status"], body["application_id"]) == ("waiting_sms_verification", app_id)
    seen = watch(api, app_id, lambda s: s.get(65) == "approved")
    order = [s.get(65) for _, s in seen]
    assert "waiting" in order
    assert confirm(api, app_id, "1234")["application_id"] == app_id  # once sent, stays sent


def test_sync_create_and_confirm_refusals(api: Api) -> None:
    """Consent and campaign_id are required; a program taking no broker applications is named."""
    no_consent = api.client.post(f"{APPS}/sync_create/", data={"campaign_id": "65"})
    not_broker = sync_create(api, campaign_id="17810")
    app_id = sync_create(api).json()["application_id"]
    no_code = api.client.post(f"{APPS}/sync_create/{app_id}/confirm", data={})
    unknown = api.client.post(f"{APPS}/sync_create/{app_id + 100}/confirm", data={"code": "1"})
    assert "user_notified" in no_consent.json()
    assert not_broker.json() == {"campaign_id": [NOT_BROKER]}
    assert (no_code.status_code, list(no_code.json())) == (400, ["code"])
    assert unknown.status_code == 404


def test_sync_create_in_test_mode_has_no_application_id(api: Api) -> None:
    body = sync_create(api, test_mode="1").json()
    assert body["status"] == "waiting_sms_verification"
    assert "application_id" not in body
    assert api.listing().json()["_meta"]["count"] == 0


# ---------------------------------------------------------------------- access, rate, log


def test_bearer_website_and_log(api: Api) -> None:
    """No token 401; another website 404; each request logged with path and status, no token."""
    token = api.client.headers["Authorization"].removeprefix("Bearer ")
    bare = httpx.post(f"{api.client.base_url}{APPS}/create/", data={"campaigns": "[17809]"})
    other = api.client.get("/website/2/broker/applications/")
    api.created("[17809]")
    assert (bare.status_code, bare.json()["error_code"]) == (401, 1)
    assert other.status_code == 404
    log = api.log()
    assert [(e["path"], e["status"]) for e in log] == [
        ("/token/", 200),
        (f"{APPS}/create/", 401),
        ("/website/2/broker/applications/", 404),
        (f"{APPS}/create/", 200),
    ]
    assert token not in json.dumps(log)


def test_above_the_rate_the_answer_is_503_error_code_4() -> None:
    with emulator(per_minute=2) as api:
        answers = [api.create("[17809]") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 503]
    assert answers[-1].json()["error_code"] == 4
