"""
An emulator of Admitad's broker applications API, as its document
(`platform-docs/admitad-broker-applications.txt`) shows it and nothing more.

* `POST /website/{w_id}/broker/applications/create/` (form data, multipart or
  urlencoded): `campaigns*` read into stages exactly as the document's
  equivalence example (a bare id is a stage of its own, a list of ids is one
  stage, `{"ids": [...], "pause": N}` is a stage, `pause` 0 to 1440 minutes,
  0 by default); `user_notified*` 1 or 0 (0: the application is stored and
  passed to no program); `test_mode` 1 or 0 (1: no `id`, `responses` empty,
  nothing stored); the other keys are the table's application fields, each
  checked by the table's rule (400 `{field: [message]}`). A key outside the
  table, or given twice, is a 400 naming it.
* Programs that take no broker applications (not in `campaigns`), or whose own
  campaign_settings rules (`required`, `regexp`) the application breaks, go to
  `errors[]` and drop out of `algorithm`; a stage left without programs drops
  out too, its pause with it. `algorithm` is then what the server runs.
* The algorithm runs here, on the clock: a stage starts after its `pause`
  (the first one too) counted from the moment the stage before it was decided
  (for the first, from creation or the SMS confirmation); if every program of
  the stage before refused (`declined` or `error`), it starts at once. A stage
  is decided when none of its programs is `processing` any more. A stage's
  programs are in `responses` only once it has started. `minute` seconds make
  one pause minute.
* A program's response is `processing` for its timing (`timings`, else
  `decide_after`), then either its refusal (`declined`/`error`, given at
  sending, as the document's "отклонены при отправке рекламодателю"), or
  `waiting` (taken: it has an `order_id`) for as long again, then `approved`.
* `sync_create/`: `campaign_id*`, `user_notified*`, `test_mode`, the fields;
  `{"status": "waiting_sms_verification", "application_id", "server_response"}`
  (no `application_id` in test mode). `sync_create/{a_id}/confirm` with
  `code*` answers the document's one shape whatever the code; the right code
  sends the application on to its program (a stage without pause, seen by
  polling the list), a wrong one leaves it waiting. Until then the list shows
  it with empty `responses`.
* `GET .../applications/`: only the documented parameters (any other, or one
  given twice, is a 400 naming it); `limit` 20 by default; `date_start` and
  `date_end` inclusive, on the day the application was created in Moscow time
  (UTC+3); `campaign` matches the programs of `algorithm`; `status` and
  `order_id` match any response; ascending `date_created` by default. Items
  carry `errors` too (the document's field table lists it).
* `GET /broker/campaign_settings/{c_id}/`: `{"results": [...]}` for a program
  that takes broker applications, 404 otherwise.

Exceptions, from Admitad's general API rather than this document:

* `POST /token/` (OAuth2): Basic auth `client_id:client_secret`, `grant_type`
  `client_credentials` (with `client_id` and `scope`) or `refresh_token` (which
  replaces the token it came with); tokens live `expires_in` 604800 s; at most
  `max_tokens` live tokens per application, then `error_code` 6. Error bodies
  are `{"error", "error_description", "error_code"}`.
* Every other call wants `Authorization: Bearer` with the scope the document
  names under "Права доступа": unknown → 401 `error_code` 1, expired → 401
  `error_code` 0, scope lacking → 403 `error_code` 2; then an unknown website
  is a 404; 600 requests a minute per application, then 503 `error_code` 4.

Control, beside `sandbox.common`'s: `POST /__sandbox__/admitad/expire`
expires every token. Each request is logged with its path and status; tokens
never are.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from sandbox.common import CONTROL, SandboxState, SlidingWindow, build_app

# ---------------------------------------------------------------------- the document's tables

Kind = Literal["string", "date", "decimal", "integer"]


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One row of the document's table of application fields."""

    kind: Kind
    max_length: int = 0


def _text(max_length: int) -> FieldRule:
    return FieldRule("string", max_length)


DATE = FieldRule("date")
DECIMAL = FieldRule("decimal")

#: "Параметры заявки", row by row (`guarator` is the document's own spelling)
FIELDS: dict[str, FieldRule] = {
    "first_name": _text(100),
    "last_name": _text(100),
    "middle_name": _text(100),
    "birth_date": DATE,
    "birth_place": _text(100),
    "gender": _text(50),
    "mobile_phone": _text(32),
    "phone": _text(32),
    "occupation": _text(100),
    "work_date": DATE,
    "work_salary": DECIMAL,
    "work_organization": _text(100),
    "work_address": _text(100),
    "work_phone": _text(32),
    "work_occupation": _text(100),
    "work_region_name": _text(50),
    "work_city_name": _text(50),
    "work_street": _text(50),
    "work_house": _text(10),
    "email": _text(75),
    "inn": _text(16),
    "passport_cn": _text(16),
    "passport_date": DATE,
    "passport_expiration_date": DATE,
    "passport_title": _text(100),
    "fact_region_name": _text(50),
    "fact_city_name": _text(50),
    "fact_street": _text(50),
    "fact_house": _text(10),
    "fact_housing": _text(10),
    "fact_flat": _text(10),
    "reg_region_name": _text(50),
    "reg_city_name": _text(50),
    "reg_street": _text(50),
    "reg_house": _text(10),
    "reg_housing": _text(10),
    "reg_flat": _text(10),
    "overdue_loans": _text(50),
    "credit_sum": DECIMAL,
    "credit_days": FieldRule("integer"),
    "credit_purpose": _text(300),
    "time_for_call": _text(300),
    "guarator": _text(100),
    "guarantor_type": _text(100),
    "guarantor_phone": _text(32),
    "product_type": _text(50),
    "personal_data_agent": _text(300),
    "application_received_date_by_client": DATE,
    "subid": _text(50),
    "subid1": _text(50),
    "subid2": _text(50),
    "subid3": _text(50),
    "subid4": _text(120),
}
#: the subids, in the order the document's answers show them
SUBIDS = ("subid", "subid1", "subid3", "subid2", "subid4")
#: "shall not be used" in a subid ("%00", and the NUL it encodes)
SUBID_FORBIDDEN = ("%00", "\x00")
DIGITS, PLACES = 12, 2
DATE_FORMAT = "%d.%m.%Y"
MAX_PAUSE = 1440
STATUSES = ("processing", "approved", "declined", "waiting", "error")
OUTCOMES = ("approved", "declined", "error")
NOT_BROKER = "Кампания не принимает заявки брокеров."
LIST_PARAMS = frozenset(
    {"offset", "limit", "order_by", "id", "campaign", "status", "date_start", "date_end"}
    | {"order_id", "subid", "subid1", "subid2", "subid3", "subid4"}
)
DEFAULT_LIMIT = 20
#: Admitad's calendar: Moscow, no daylight saving (the day `date_start`/`date_end` compare)
ZONE = timezone(timedelta(hours=3))
SCOPES = {"manage_broker_application", "broker_application"}
TOKEN_LIFE = 604800
REQUIRED = "Обязательное поле."
#: what a bank answers to sync_create and confirm (the document's example)
BANK_ANSWER = {"bank": "responded this"}
SENT = {"message": "objects_list_returned_ok", "code": 200, "data": False}

_DATE = re.compile(r"[0-9]{1,2}\.[0-9]{1,2}\.[0-9]{4}")
_DECIMAL = re.compile(r"([0-9]+)(?:\.([0-9]+))?")

Rules = list[dict[str, Any]]

# ---------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Stage:
    """One group of the algorithm: programs sent together after a pause (minutes)."""

    ids: tuple[int, ...]
    pause: int = 0

    def shown(self) -> dict[str, Any]:
        return {"ids": list(self.ids), "pause": self.pause}


@dataclass(frozen=True, slots=True)
class Application:
    """A stored application; `released` is when sending began (None: not yet, or never)."""

    id: int
    created: float
    fields: Mapping[str, str]
    algorithm: tuple[Stage, ...]
    errors: tuple[dict[str, Any], ...]
    released: float | None
    sms: bool = False
    notified: bool = True


@dataclass(frozen=True, slots=True)
class Config:
    """What `create_app` was given."""

    client_id: str
    client_secret: str
    website_id: int
    programs: Mapping[int, Rules]
    outcomes: Mapping[int, str]
    timings: Mapping[int, float]
    decide_after: float
    minute: float
    max_tokens: int
    per_minute: int
    sms_code: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """A 400: each field named with its messages."""

    problems: dict[str, list[str]] = field(default_factory=dict)

    def response(self) -> Response:
        return JSONResponse(self.problems, status_code=400)


# ---------------------------------------------------------------------- checks (pure)


def field_problem(name: str, value: str) -> str:
    """The table's rule for one field; empty when the value keeps it."""
    rule = FIELDS[name]
    if rule.kind == "string":
        if len(value) > rule.max_length:
            return f"Убедитесь, что это значение содержит не более {rule.max_length} символов."
        if name.startswith("subid") and any(bad in value for bad in SUBID_FORBIDDEN):
            return "Недопустимое значение: %00."
        return ""
    if rule.kind == "date":
        return "" if _is_date(value) else "Неправильный формат даты. Используйте DD.MM.YYYY."
    if rule.kind == "decimal":
        return "" if _is_decimal(value) else "Введите число: до 12 цифр, из них до 2 после точки."
    return "" if value.isascii() and value.isdigit() else "Введите целое число."


def _is_date(value: str) -> bool:
    if not _DATE.fullmatch(value):
        return False
    try:
        datetime.strptime(value, DATE_FORMAT)
    except ValueError:
        return False
    return True


def _is_decimal(value: str) -> bool:
    match = _DECIMAL.fullmatch(value) if value.isascii() else None
    if match is None:
        return False
    whole, places = match.group(1).lstrip("0"), match.group(2) or ""
    # 12 digits of which 2 after the point: at most 10 before it, even with none after
    return len(places) <= PLACES and len(whole) <= DIGITS - PLACES


def fields_problems(fields: Mapping[str, str], control: frozenset[str]) -> dict[str, list[str]]:
    """`user_notified`, `test_mode`, and every other key by the table (unknown keys refused)."""
    problems: dict[str, list[str]] = {}
    if fields.get("user_notified") not in ("0", "1"):
        problems["user_notified"] = [f"{REQUIRED} Значение 1 или 0."]
    if fields.get("test_mode", "0") not in ("0", "1"):
        problems["test_mode"] = ["Значение 1 или 0."]
    for name, value in fields.items():
        if name in FIELDS:
            problem = field_problem(name, value)
        elif name in control or name in ("user_notified", "test_mode"):
            problem = ""
        else:
            problem = "Неизвестный параметр."
        if problem:
            problems[name] = [problem]
    return problems


def program_problem(rules: Rules, fields: Mapping[str, str]) -> str:
    """A program's own campaign_settings rules; the first one broken, naming its field."""
    for rule in rules:
        name, pattern = str(rule["field_name"]), str(rule.get("regexp") or "")
        value = fields.get(name, "")
        if rule.get("required") and not value:
            return f"Поле {name} обязательно для этой программы."
        if value and pattern and not re.search(pattern, value):
            return f"Поле {name} не соответствует {pattern}."
    return ""


def parse_campaigns(raw: Any) -> tuple[Stage, ...]:
    """The document's notations of `campaigns`, one stage per item; ValueError otherwise."""
    if not isinstance(raw, list) or not raw:
        raise ValueError("Ожидается непустой JSON-массив.")
    stages = tuple(_stage(item) for item in raw)
    ids = [c for stage in stages for c in stage.ids]
    if len(ids) != len(set(ids)):
        raise ValueError("Программа указана больше одного раза.")
    return stages


def _stage(item: Any) -> Stage:
    if _is_id(item):
        return Stage((item,))
    if isinstance(item, list):
        return Stage(_ids(item))
    if not isinstance(item, dict) or "ids" not in item or set(item) - {"ids", "pause"}:
        raise ValueError(f"Непонятный элемент: {item!r}.")
    pause = item.get("pause", 0)
    if not (_is_int(pause) and 0 <= pause <= MAX_PAUSE):
        raise ValueError(f"pause: целое число минут от 0 до {MAX_PAUSE}.")
    return Stage(_ids(item["ids"]), pause)


def _ids(values: Any) -> tuple[int, ...]:
    if not isinstance(values, list) or not values or not all(_is_id(v) for v in values):
        raise ValueError(f"ids: непустой список ID программ, а не {values!r}.")
    return tuple(values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_id(value: Any) -> bool:
    return _is_int(value) and value > 0


def list_problems(query: list[tuple[str, str]]) -> dict[str, list[str]]:
    """The list's parameters: only the documented ones, each once and well formed."""
    problems: dict[str, list[str]] = {}
    seen: set[str] = set()
    for key, value in query:
        problem = "Параметр передан больше одного раза." if key in seen else ""
        seen.add(key)
        problem = problem or _list_value_problem(key, value)
        if problem:
            problems[key] = [problem]
    return problems


def _list_value_problem(key: str, value: str) -> str:
    if key not in LIST_PARAMS:
        return "Неизвестный параметр."
    if key in ("offset", "limit", "id", "campaign") and not (value.isascii() and value.isdigit()):
        return "Введите целое число."
    if key == "limit" and int(value) < 1:
        return "Введите число не меньше 1."
    if key == "order_by" and value not in ("date_created", "-date_created"):
        return "Допустимо date_created или -date_created."
    if key == "status" and value not in STATUSES:
        return f"Допустимо: {', '.join(STATUSES)}."
    if key in ("date_start", "date_end") and not _is_date(value):
        return "Неправильный формат даты. Используйте DD.MM.YYYY."
    return ""


def _day(value: str) -> date:
    return datetime.strptime(value, DATE_FORMAT).replace(tzinfo=ZONE).date()


def matches(app: Application, view: Mapping[str, Any], q: Mapping[str, str]) -> bool:
    """Whether one application (and its view now) passes the list's filters."""
    created = datetime.fromtimestamp(app.created, ZONE).date()
    responses = view["responses"]
    checks = (
        "id" not in q or app.id == int(q["id"]),
        "campaign" not in q or any(int(q["campaign"]) in s.ids for s in app.algorithm),
        "status" not in q or any(r["status"] == q["status"] for r in responses),
        "order_id" not in q or any(r["order_id"] == q["order_id"] for r in responses),
        "date_start" not in q or created >= _day(q["date_start"]),
        "date_end" not in q or created <= _day(q["date_end"]),
        all(view[k] == q[k] for k in SUBIDS if k in q),
    )
    return all(checks)


# ---------------------------------------------------------------------- HTTP


def _error(status: int, code: int, error: str, description: str) -> Response:
    return JSONResponse(
        {"error": error, "error_description": description, "error_code": code}, status_code=status
    )


async def _read_form(request: Request) -> tuple[dict[str, str], Refusal]:
    """The form's keys, each once and a string; what breaks that, named."""
    form = await request.form()
    fields: dict[str, str] = {}
    refusal = Refusal()
    for key, value in form.multi_items():
        if key in fields:
            refusal.problems[key] = ["Параметр передан больше одного раза."]
        elif not isinstance(value, str):
            refusal.problems[key] = ["Ожидается строка, а не файл."]
        else:
            fields[key] = value
    return fields, refusal


class Admitad:
    """One Admitad application (client) with one website and its programs."""

    def __init__(self, state: SandboxState, config: Config) -> None:
        self.state = state
        self.config = config
        self.window = SlidingWindow(config.per_minute, 60.0)
        self.ids = itertools.count(1)
        state.store.update(tokens={}, refresh={}, applications={}, issued=[])

    # ------------------------------------------------------------ auth (Admitad's general API)

    async def token(self, request: Request) -> Response:
        c = self.config
        expected = "Basic " + base64.b64encode(f"{c.client_id}:{c.client_secret}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return self._done(request, _error(401, 1, "invalid_client", "Client auth failed"))
        form = await request.form()
        grant = str(form.get("grant_type"))
        if grant == "refresh_token":
            grant_of = self.state.store["refresh"].pop(str(form.get("refresh_token")), None)
            if grant_of is None:
                return self._done(request, _error(400, 1, "invalid_grant", "Bad refresh token"))
            scopes, previous = grant_of
            self.state.store["tokens"].pop(previous, None)  # a refresh replaces its token
        elif grant == "client_credentials" and form.get("client_id") == c.client_id:
            scopes = set(str(form.get("scope", "")).split())
            if not scopes or not scopes <= SCOPES:
                return self._done(request, _error(400, 2, "invalid_scope", "Unknown scope"))
        else:
            refusal = _error(400, 1, "unsupported_grant_type", "grant_type or client_id is wrong")
            return self._done(request, refusal)
        return self._done(request, self._issue(scopes), grant=grant)

    def _issue(self, scopes: set[str]) -> Response:
        live = [t for t, v in self.state.store["tokens"].items() if v["expires"] > time.time()]
        if len(live) >= self.config.max_tokens:
            return _error(400, 6, "too_many_tokens", "Too many tokens for this application")
        access, refresh = secrets.token_hex(16), secrets.token_hex(16)
        self.state.store["tokens"][access] = {"scopes": scopes, "expires": time.time() + TOKEN_LIFE}
        self.state.store["refresh"][refresh] = (scopes, access)
        self.state.store["issued"].append(time.time())
        body = {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": TOKEN_LIFE,
            "refresh_token": refresh,
            "scope": " ".join(sorted(scopes)),
        }
        return JSONResponse(body)

    def gate(self, request: Request, scope: str) -> Response | None:
        """Bearer, scope, website, then the per-application rate; None when the call may go on."""
        header = request.headers.get("authorization", "")
        token = self.state.store["tokens"].get(header.removeprefix("Bearer ").strip())
        if not header.startswith("Bearer ") or token is None:
            return _error(401, 1, "invalid_token", "Invalid token")
        if token["expires"] <= time.time():
            return _error(401, 0, "token_expired", "Token expired")
        if scope not in token["scopes"]:
            return _error(403, 2, "insufficient_scope", "No rights for this call")
        w_id = request.path_params.get("w_id", self.config.website_id)
        if w_id != self.config.website_id:
            return _error(404, 1, "not_found", "Unknown website")
        if not self.window.allow(self.config.client_id):
            return _error(503, 4, "rate_limit", "Too many requests")
        return None

    def _done(self, request: Request, response: Response, **extra: Any) -> Response:
        self.state.record(request.url.path, response.status_code, **extra)
        return response

    # ------------------------------------------------------------ create

    async def create(self, request: Request) -> Response:
        refusal = self.gate(request, "manage_broker_application")
        if refusal:
            return self._done(request, refusal)
        fields, problems = await _read_form(request)
        stages = _campaigns(fields, problems)
        problems.problems.update(fields_problems(fields, frozenset({"campaigns"})))
        if problems.problems or stages is None:
            return self._done(request, problems.response())
        errors, algorithm = self._sort_programs(stages, fields)
        if fields.get("test_mode") == "1":
            return self._done(request, JSONResponse(_test_answer(fields, errors, algorithm)))
        app = self._store(fields, algorithm, errors, sms=False)
        return self._done(request, JSONResponse(self._view(app, time.time())))

    def _sort_programs(
        self, stages: tuple[Stage, ...], fields: Mapping[str, str]
    ) -> tuple[tuple[dict[str, Any], ...], tuple[Stage, ...]]:
        """`errors[]` for programs that refuse the application; the stages left to run."""
        errors: list[dict[str, Any]] = []
        algorithm: list[Stage] = []
        for stage in stages:
            kept = []
            for c_id in stage.ids:
                problem = self._refuses(c_id, fields)
                if problem:
                    errors.append({"campaign_id": c_id, "message": problem})
                else:
                    kept.append(c_id)
            if kept:
                algorithm.append(Stage(tuple(kept), stage.pause))
        return tuple(errors), tuple(algorithm)

    def _refuses(self, c_id: int, fields: Mapping[str, str]) -> str:
        if c_id not in self.config.programs:
            return NOT_BROKER
        return program_problem(self.config.programs[c_id], fields)

    def _store(
        self,
        fields: Mapping[str, str],
        algorithm: tuple[Stage, ...],
        errors: tuple[dict[str, Any], ...],
        *,
        sms: bool,
    ) -> Application:
        now = time.time()
        notified = fields.get("user_notified") == "1"
        app = Application(
            id=next(self.ids),
            created=now,
            fields=dict(fields),
            algorithm=algorithm,
            errors=errors,
            released=now if notified and not sms else None,
            sms=sms,
            notified=notified,
        )
        with self.state.lock:
            self.state.store["applications"][app.id] = app
        return app

    # ------------------------------------------------------------ the algorithm on the clock

    def _view(self, app: Application, now: float) -> dict[str, Any]:
        """The application as the API shows it at `now`."""
        return {
            "id": app.id,
            **{k: app.fields.get(k, "") for k in SUBIDS},
            "responses": self._responses(app, now),
            "errors": list(app.errors),
            "algorithm": [s.shown() for s in app.algorithm],
        }

    def _responses(self, app: Application, now: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for stage, start in self._starts(app):
            if now < start:
                break
            out += [self._response(app.id, c_id, now - start) for c_id in stage.ids]
        return out

    def _starts(self, app: Application) -> Iterator[tuple[Stage, float]]:
        """
        Each stage with the moment it starts: its pause after the stage before
        it was decided (the first: after release), no pause when every program
        of the stage before refused. A stage is decided when its slowest
        program leaves `processing`.
        """
        if app.released is None:
            return
        moment, accepted = app.released, True
        for stage in app.algorithm:
            moment += stage.pause * self.config.minute if accepted else 0.0
            yield stage, moment
            moment += max(self._timing(c_id) for c_id in stage.ids)
            accepted = any(self._outcome(c_id) == "approved" for c_id in stage.ids)

    def _timing(self, c_id: int) -> float:
        return self.config.timings.get(c_id, self.config.decide_after)

    def _outcome(self, c_id: int) -> str:
        return self.config.outcomes.get(c_id, "approved")

    def _response(self, app_id: int, c_id: int, age: float) -> dict[str, Any]:
        """processing; then a refusal, or waiting (with an order) and approved as long after."""
        timing, outcome = self._timing(c_id), self._outcome(c_id)
        order_id: str | None = None
        server_response: dict[str, Any] = SENT
        if age < timing:
            status = "processing"
        elif outcome != "approved":
            status = outcome
            server_response = {"message": outcome, "code": 200, "data": False}
        else:
            status = "waiting" if age < 2 * timing else "approved"
            order_id = f"{app_id}-{c_id}"
            server_response = {"message": "accepted", "code": 200, "data": {"order_id": order_id}}
        return {
            "campaign_id": c_id,
            "status": status,
            "order_id": order_id,
            "server_response": server_response,
        }

    # ------------------------------------------------------------ list and settings

    async def listing(self, request: Request) -> Response:
        refusal = self.gate(request, "broker_application")
        if refusal:
            return self._done(request, refusal)
        problems = list_problems(request.query_params.multi_items())
        if problems:
            return self._done(request, Refusal(problems).response())
        q = dict(request.query_params)
        now = time.time()
        with self.state.lock:
            apps = sorted(
                self.state.store["applications"].values(), key=lambda a: (a.created, a.id)
            )
        if q.get("order_by") == "-date_created":
            apps.reverse()
        views = [v for a in apps if matches(a, v := self._view(a, now), q)]
        offset, limit = int(q.get("offset", 0)), int(q.get("limit", DEFAULT_LIMIT))
        body = {
            "results": views[offset : offset + limit],
            "_meta": {"count": len(views), "limit": limit, "offset": offset},
        }
        return self._done(request, JSONResponse(body))

    async def settings(self, request: Request) -> Response:
        refusal = self.gate(request, "broker_application")
        if refusal:
            return self._done(request, refusal)
        rules = self.config.programs.get(request.path_params["c_id"])
        if rules is None:
            return self._done(request, JSONResponse({"detail": "Не найдено."}, 404))
        return self._done(request, JSONResponse({"results": rules}))

    # ------------------------------------------------------------ SMS-verified banks

    async def sync_create(self, request: Request) -> Response:
        refusal = self.gate(request, "manage_broker_application")
        if refusal:
            return self._done(request, refusal)
        fields, problems = await _read_form(request)
        problems.problems.update(fields_problems(fields, frozenset({"campaign_id"})))
        c_id = fields.get("campaign_id", "")
        if not (c_id.isascii() and c_id.isdigit() and int(c_id) > 0):
            problems.problems["campaign_id"] = [f"{REQUIRED} Введите ID программы."]
        elif not problems.problems and (problem := self._refuses(int(c_id), fields)):
            problems.problems["campaign_id"] = [problem]
        if problems.problems:
            return self._done(request, problems.response())
        answer: dict[str, Any] = {"status": "waiting_sms_verification"}
        if fields.get("test_mode") != "1":
            app = self._store(fields, (Stage((int(c_id),)),), (), sms=True)
            answer["application_id"] = app.id
        answer["server_response"] = BANK_ANSWER
        return self._done(request, JSONResponse(answer))

    async def confirm(self, request: Request) -> Response:
        refusal = self.gate(request, "manage_broker_application")
        if refusal:
            return self._done(request, refusal)
        fields, problems = await _read_form(request)
        if not fields.get("code"):
            problems.problems["code"] = [REQUIRED]
        problems.problems.update({k: ["Неизвестный параметр."] for k in set(fields) - {"code"}})
        with self.state.lock:
            app = self.state.store["applications"].get(request.path_params["a_id"])
        if app is None or not app.sms:
            return self._done(request, JSONResponse({"detail": "Не найдено."}, 404))
        if problems.problems:
            return self._done(request, problems.response())
        if fields["code"] == self.config.sms_code:
            self._release(app.id)
        answer = {
            "status": "waiting_sms_verification",
            "application_id": app.id,
            "server_response": BANK_ANSWER,
        }
        return self._done(request, JSONResponse(answer))

    def _release(self, app_id: int) -> None:
        """The right code: sending begins now, once, if the user consented."""
        with self.state.lock:
            app = self.state.store["applications"].get(app_id)
            if app is not None and app.notified and app.released is None:
                self.state.store["applications"][app_id] = replace(app, released=time.time())

    async def expire(self, request: Request) -> Response:
        """Control: every token expires now (to test renewal)."""
        for token in self.state.store["tokens"].values():
            token["expires"] = 0
        return JSONResponse({"expired": len(self.state.store["tokens"])})


def _campaigns(fields: Mapping[str, str], refusal: Refusal) -> tuple[Stage, ...] | None:
    """`campaigns` read into stages; None (and the refusal says why) when it cannot be."""
    if "campaigns" not in fields:
        refusal.problems.setdefault("campaigns", [REQUIRED])
        return None
    try:
        return parse_campaigns(_json(fields["campaigns"]))
    except ValueError as exc:
        refusal.problems["campaigns"] = [str(exc)]
        return None


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"Некорректный JSON: {exc.msg}.") from None


def _test_answer(
    fields: Mapping[str, str], errors: tuple[dict[str, Any], ...], algorithm: tuple[Stage, ...]
) -> dict[str, Any]:
    """Test mode: no `id`, `responses` empty, the rest as usual."""
    return {
        **{k: fields.get(k, "") for k in SUBIDS},
        "responses": [],
        "errors": list(errors),
        "algorithm": [s.shown() for s in algorithm],
    }


def create_app(
    client_id: str = "client",
    client_secret: str = "secret",  # noqa: S107 - the sandbox's own, documented default
    website_id: int = 1,
    campaigns: Mapping[int, Rules] | None = None,
    *,
    outcomes: Mapping[int, str] | None = None,
    decide_after: float = 1.0,
    minute: float = 60.0,
    max_tokens: int = 10,
    per_minute: int = 600,
    sms_code: str = "1234",
    timings: Mapping[int, float] | None = None,
) -> ASGIApp:
    """
    The Admitad emulator. `campaigns`: program id → its campaign_settings rules
    (a program not listed takes no broker applications); `outcomes`: a
    program's answer (`approved` by default; `declined` or `error`);
    `timings`: seconds a program's response stays `processing` (and, when it
    takes the application, `waiting`), `decide_after` for programs not listed;
    `minute`: seconds per pause minute; `max_tokens`: live tokens before
    `error_code` 6; `per_minute`: requests a minute per application before 503
    `error_code` 4; `sms_code`: the code a bank accepts.
    """
    outcomes = dict(outcomes or {})
    timings = dict(timings or {})
    if not set(outcomes.values()) <= set(OUTCOMES):
        raise ValueError(f"outcomes are {OUTCOMES}, not {set(outcomes.values())}")
    if any(t < 0 for t in timings.values()) or decide_after < 0:
        raise ValueError("timings are seconds, not negative")
    config = Config(
        client_id=client_id,
        client_secret=client_secret,
        website_id=website_id,
        programs=dict(campaigns if campaigns is not None else DEFAULT_CAMPAIGNS),
        outcomes=outcomes,
        timings=timings,
        decide_after=decide_after,
        minute=minute,
        max_tokens=max_tokens,
        per_minute=per_minute,
        sms_code=sms_code,
    )
    admitad = Admitad(SandboxState(), config)
    base = "/website/{w_id:int}/broker/applications"
    routes = [
        Route("/token/", admitad.token, methods=["POST"]),
        Route(f"{base}/create/", admitad.create, methods=["POST"]),
        Route(f"{base}/", admitad.listing, methods=["GET"]),
        Route(f"{base}/sync_create/", admitad.sync_create, methods=["POST"]),
        Route(f"{base}/sync_create/{{a_id:int}}/confirm", admitad.confirm, methods=["POST"]),
        Route("/broker/campaign_settings/{c_id:int}/", admitad.settings, methods=["GET"]),
        Route(f"{CONTROL}/admitad/expire", admitad.expire, methods=["POST"]),
    ]
    return build_app(routes, admitad.state)


#: programs that take broker applications: the document's ids, its example rules on 17810
DEFAULT_CAMPAIGNS: dict[int, Rules] = {
    17809: [],
    16126: [],
    17288: [],
    16651: [],
    16633: [],
    16326: [],
    14605: [],
    65: [],
    17810: [
        {"field_name": "first_name", "regexp": "^[a-zA-Z]+$", "required": True, "description": ""},
        {"field_name": "middle_name", "regexp": "", "required": True, "description": ""},
    ],
}
