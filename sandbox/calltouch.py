"""
An emulator of Calltouch's `POST /lead-service/v1/api/customfield/lead/add`,
written from Calltouch's document ("Добавление пользовательских полей к
лидам") alone: no path, limit or code here comes from our adapter, so an
adapter that misreads the document fails against it.

What the document shows, enforced in this order:

* the one path and method it gives: another method is 405, another path (a
  trailing slash too) 404;
* 5 requests a second per source IP; beyond that 429 ("5 выполнятся сразу, а
  остальные ... 429"), whatever the request;
* the headers `Access-Token` and `SiteId`;
* the body `{"leads": [...]}` and no other key: 1 to 100 leads; each with
  `matching`, 1 to 20 rules, each a `type` (call, request, callContact,
  requestContact, leadContact) and that type's params object, nothing else;
  and optionally `addCustomFields`: `overwrite` a boolean, `customFields`
  1 to 20 `{field, value}` (blank is the doc's own violation example);
* the params objects the doc's example shows, key for key and no other key:
  `requestParams` {requestId, tags, tagsLogic}; `leadContactParams` {emails,
  phones, searchAmongPhonesInText, date, tags, tagsLogic, leadTypeToMatch,
  searchDepth}; `requestContactParams` {emails, phones, md5Phones, date,
  requestTypeToMatch, searchDepth};
* every broken rule is one violation in the doc's `validationError` shape
  (`fieldPath`, `message`), and then nothing is added;
* each lead is matched rule by rule, the first rule that finds something wins
  ("остальные типы ниже будут проигнорированы"); its fields must exist in the
  project ("должно быть создано в ЛК заранее"); `overwrite: false` keeps a
  value already there, `true` replaces it;
* the answer in the shape of the doc's example: `meta: []` and one
  `data.leads[i]` {matchedType, callInfo, requestInfo {requestId,
  requestNumber}, isCustomFieldsAdded, error} per lead, in order;
* a daily points budget per project (`daily_points`, None: unlimited), one
  point spent per successful request ("За каждый успешно выполненный запрос").

Assumptions, where the document is silent or points to another article
(each is a shape our adapter must read, and the tests drive it against them):

* `callParams` and `callContactParams` are not shown. They are taken by
  analogy with `requestParams` and `leadContactParams`: {callId, tags,
  tagsLogic} and {phones, date, tags, tagsLogic, callTypeToMatch,
  searchDepth}, without e-mails (the doc finds a call "по номеру телефона /
  дате");
* a contact rule needs a phone, an e-mail or an md5 phone to search by; an
  empty array is blank; `tagsLogic` is "and" or "or" (the doc shows "and");
  `date`, `*TypeToMatch`, tags and `searchDepth` are checked for type only and
  not used for matching; violations other than the doc's "This value should
  not be blank." use the same validator's (Symfony's) wording;
* a validation error is HTTP 400; the points budget's day is Moscow's;
* auth errors, the 429, a spent budget and a body that is not JSON are an
  `apiError`, the counterpart of the doc's validationError: `{"meta": [],
  "data": {"type": "apiError", "apiErrorData": {"errorCode", "errorMessage"},
  "validationErrorData": null}}`. A wrong or missing token: 401 `invalidToken`;
  a wrong or missing SiteId: 403 `accessDenied`; too many: 429
  `tooManyRequests`, no Retry-After; not JSON: 400 `badRequest`; the budget
  spent: 403 `POINTS_SPENT`;
* a lead no rule finds: matchedType, callInfo and requestInfo null,
  isCustomFieldsAdded false, error `NOT_FOUND`; a field the project lacks:
  the rule and what it found, false, an error naming the field; a lead
  without `addCustomFields`, or whose values `overwrite: false` kept, is
  answered isCustomFieldsAdded true (sending a lead again is harmless);
* `requestInfo.requestId` is a number and `requestNumber` a string, as in the
  doc's example (its table calls both strings); the flag is spelled
  `isCustomFieldsAdded` as in the example (the table: "isCustonFieldsAdded");
  `callInfo` holds callId, callReferenceId (null) and sipCallId, as the table
  lists them.

What exists, for matching: request and call ids 1 to 1,000,000
(`known_request_ids`, `known_call_ids`), every phone and e-mail except those in
`unknown_phones` / `unknown_emails` (or only `known_phones`, when given). With
`custom_fields` given, only those field names exist in the project.
`POST /__sandbox__/reset` also forgets the rate window and the points spent.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from collections.abc import Collection, Container, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from sandbox.common import SandboxState, SlidingWindow, build_app

#: the one path the document gives ("POST: https://api.calltouch.ru/lead-service/...")
ADD_PATH = "/lead-service/v1/api/customfield/lead/add"
#: "Можно перечислить до 100 лидов за 1 запрос"
MAX_LEADS = 100
#: "общее кол-во типов не должно превышать 20 строк"
MAX_RULES = 20
#: "Максимум 20 полей"
MAX_FIELDS = 20
#: "не более 5 запросов в секунду с одного IP-адреса"
RATE_LIMIT = 5
RATE_WINDOW = 1.0
ALL_IDS = range(1, 1_000_001)
#: our assumption: the error of a lead no rule finds
NOT_FOUND = "Лид не найден ни по одному из правил матчинга"
#: our assumption: the `errorCode` of a spent daily points budget (the doc shows none)
POINTS_SPENT = "apiPointsLimitExceeded"
#: the points budget is daily in the project's zone
ZONE = ZoneInfo("Europe/Moscow")

#: the doc's own violation message; the others are the same validator's (Symfony's)
BLANK = "This value should not be blank."
NOT_EXPECTED = "This field was not expected."
CHOICE = "The value you selected is not a valid choice."
BAD_PHONE = "This value is not a valid phone number."
BAD_EMAIL = "This value is not a valid email address."


def _too_many(limit: int) -> str:
    return f"This collection should contain {limit} elements or less."


def _of_type(kind: str) -> str:
    return f"This value should be of type {kind}."


def _digits(phone: str) -> str:
    digits = re.sub(r"[^0-9]", "", phone)
    return "7" + digits[1:] if len(digits) == 11 and digits[0] == "8" else digits


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


# --- validation: every rule broken, as (fieldPath, message) ------------------


@dataclass(frozen=True, slots=True)
class Params:
    """One matching type's params object: its key in the rule, its keys, the required ones."""

    name: str
    keys: frozenset[str]
    required: frozenset[str] = frozenset()


#: what a contact rule searches by: one of these, non-empty, is required
CRITERIA = ("phones", "emails", "md5Phones")
#: each matching type and its params object
PARAMS: dict[str, Params] = {
    # the doc's example, key for key
    "request": Params(
        "requestParams", frozenset({"requestId", "tags", "tagsLogic"}), frozenset({"requestId"})
    ),
    "leadContact": Params(
        "leadContactParams",
        frozenset(
            {
                "emails",
                "phones",
                "searchAmongPhonesInText",
                "date",
                "tags",
                "tagsLogic",
                "leadTypeToMatch",
                "searchDepth",
            }
        ),
    ),
    "requestContact": Params(
        "requestContactParams",
        frozenset({"emails", "phones", "md5Phones", "date", "requestTypeToMatch", "searchDepth"}),
    ),
    # not shown by the doc: our assumption, by analogy (see the module's docstring)
    "call": Params("callParams", frozenset({"callId", "tags", "tagsLogic"}), frozenset({"callId"})),
    "callContact": Params(
        "callContactParams",
        frozenset({"phones", "date", "tags", "tagsLogic", "callTypeToMatch", "searchDepth"}),
    ),
}


class Violations(list[dict[str, str]]):
    """The `violations` of a validationError, built as the body is walked."""

    def add(self, path: str, message: str) -> None:
        self.append({"fieldPath": path, "message": message})

    def listed(self, path: str, value: Any, limit: int | None = None) -> bool:
        """A non-empty array (of at most `limit`); True when its items are worth walking."""
        if value is None or value == []:
            self.add(path, BLANK)
        elif not isinstance(value, list):
            self.add(path, _of_type("array"))
        elif limit is not None and len(value) > limit:
            self.add(path, _too_many(limit))
        else:
            return True
        return False

    def keys(self, path: str, value: Mapping[str, Any], allowed: Collection[str]) -> None:
        for key in value:
            if key not in allowed:
                self.add(f"{path}.{key}", NOT_EXPECTED)


def _check_value(v: Violations, path: str, key: str, value: Any) -> None:
    """One key of a params object, by what the doc's example shows it holds."""
    if key in ("callId", "requestId", "searchDepth"):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            v.add(path, _of_type("int"))
    elif key == "searchAmongPhonesInText":
        if not isinstance(value, bool):
            v.add(path, _of_type("bool"))
    elif key == "tagsLogic":
        if value not in ("and", "or"):
            v.add(path, CHOICE)
    elif key in ("phones", "emails", "md5Phones", "tags"):
        if v.listed(path, value):
            for i, item in enumerate(value):
                _check_item(v, f"{path}[{i}]", key, item)
    elif not isinstance(value, str) or not value:
        v.add(path, BLANK if value in ("", None) else _of_type("string"))


def _check_item(v: Violations, path: str, key: str, item: Any) -> None:
    if not isinstance(item, str) or not item:
        v.add(path, BLANK if item in ("", None) else _of_type("string"))
    elif key == "phones" and (
        not re.fullmatch(r"\+?[0-9\s()\-]+", item) or not 10 <= len(_digits(item)) <= 15
    ):
        v.add(path, BAD_PHONE)
    elif key == "emails" and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", item):
        v.add(path, BAD_EMAIL)
    elif key == "md5Phones" and not re.fullmatch(r"[0-9a-fA-F]{32}", item):
        v.add(path, _of_type("md5"))


def _check_rule(v: Violations, path: str, rule: Any) -> None:
    if not isinstance(rule, dict):
        v.add(path, _of_type("object"))
        return
    kind = rule.get("type")
    if kind not in PARAMS:
        v.add(f"{path}.type", BLANK if kind is None else CHOICE)
        return
    spec = PARAMS[kind]
    v.keys(path, rule, {"type", spec.name})
    params = rule.get(spec.name)
    where = f"{path}.{spec.name}"
    if not isinstance(params, dict):
        v.add(where, BLANK if params is None else _of_type("object"))
        return
    v.keys(where, params, spec.keys)
    for key in sorted(spec.required - params.keys()):
        v.add(f"{where}.{key}", BLANK)
    for key, value in params.items():
        if key in spec.keys:
            _check_value(v, f"{where}.{key}", key, value)
    if not spec.required and not any(params.get(k) for k in CRITERIA if k in spec.keys):
        v.add(where, BLANK)


def _check_fields(v: Violations, path: str, add: Any) -> None:
    if not isinstance(add, dict):
        v.add(path, _of_type("object"))
        return
    v.keys(path, add, {"overwrite", "customFields"})
    if "overwrite" in add and not isinstance(add["overwrite"], bool):
        v.add(f"{path}.overwrite", _of_type("bool"))
    fields: Any = add.get("customFields")
    if not v.listed(f"{path}.customFields", fields, MAX_FIELDS):
        return
    for i, one in enumerate(fields):
        where = f"{path}.customFields[{i}]"
        if not isinstance(one, dict):
            v.add(where, _of_type("object"))
            continue
        v.keys(where, one, {"field", "value"})
        if not isinstance(one.get("field"), str) or not one["field"].strip():
            v.add(f"{where}.field", BLANK)
        value = one.get("value")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            v.add(f"{where}.value", _of_type("string|int|float"))


def violations(body: Any) -> Violations:
    """Every rule of the doc the body breaks; empty when it may be processed."""
    v = Violations()
    if not isinstance(body, dict):
        v.add("", _of_type("object"))
        return v
    v.keys("", body, {"leads"})
    leads: Any = body.get("leads")
    if not v.listed("leads", leads, MAX_LEADS):
        return v
    for i, lead in enumerate(leads):
        path = f"leads[{i}]"
        if not isinstance(lead, dict):
            v.add(path, _of_type("object"))
            continue
        v.keys(path, lead, {"matching", "addCustomFields"})
        if v.listed(f"{path}.matching", lead.get("matching"), MAX_RULES):
            for j, rule in enumerate(lead["matching"]):
                _check_rule(v, f"{path}.matching[{j}]", rule)
        if "addCustomFields" in lead:
            _check_fields(v, f"{path}.addCustomFields", lead["addCustomFields"])
    return v


# --- the project: what exists, and what was added ----------------------------


class Project:
    """The calls, requests and contacts one Calltouch project holds."""

    def __init__(
        self,
        known_request_ids: Container[int],
        known_call_ids: Container[int],
        known_phones: Collection[str] | None,
        unknown_phones: Collection[str],
        unknown_emails: Collection[str],
        custom_fields: Collection[str] | None,
    ) -> None:
        self.request_ids = known_request_ids
        self.call_ids = known_call_ids
        self.phones = None if known_phones is None else {_digits(p) for p in known_phones}
        self.unknown_phones = {_digits(p) for p in unknown_phones}
        self.unknown_emails = {e.lower() for e in unknown_emails}
        self.custom_fields = None if custom_fields is None else set(custom_fields)

    def phone_known(self, digits: str) -> bool:
        """Only `known_phones` when given; else every phone but `unknown_phones`."""
        if self.phones is not None:
            return digits in self.phones
        return digits not in self.unknown_phones

    def md5_known(self, digest: str) -> bool:
        """An md5 of a phone, by the same rule as `phone_known`."""
        digest = digest.lower()
        if self.phones is not None:
            return digest in {_md5(p) for p in self.phones}
        return digest not in {_md5(p) for p in self.unknown_phones}

    def find(self, rule: Mapping[str, Any]) -> str | None:
        """The key of what `rule` finds (`request:17`, `call:4`), or None."""
        kind = rule["type"]
        params = rule[PARAMS[kind].name]
        if kind == "request":
            found = params["requestId"] in self.request_ids
            return f"request:{params['requestId']}" if found else None
        if kind == "call":
            return f"call:{params['callId']}" if params["callId"] in self.call_ids else None
        contacts = [_digits(p) for p in params.get("phones", []) if self.phone_known(_digits(p))]
        contacts += [
            e.lower() for e in params.get("emails", []) if e.lower() not in self.unknown_emails
        ]
        contacts += [h.lower() for h in params.get("md5Phones", []) if self.md5_known(h)]
        if not contacts:
            return None
        # a contact stands for one call or request; its id is stable per contact
        ident = zlib.crc32(contacts[0].encode()) % 1_000_000 + 1
        return f"call:{ident}" if kind == "callContact" else f"request:{ident}"


def _answer(matched: str | None, key: str | None, added: bool, error: str | None) -> dict[str, Any]:
    """One `data.leads[i]` in the doc's shape."""
    kind, _, ident = (key or "").partition(":")
    return {
        "matchedType": matched,
        "callInfo": (
            {"callId": ident, "callReferenceId": None, "sipCallId": f"sip-{ident}"}
            if kind == "call"
            else None
        ),
        "requestInfo": (
            {"requestId": int(ident), "requestNumber": ident} if kind == "request" else None
        ),
        "isCustomFieldsAdded": added,
        "error": error,
    }


def _add(state: SandboxState, project: Project, lead: Mapping[str, Any]) -> dict[str, Any]:
    """Match one valid lead and add its fields; its answer."""
    for rule in lead["matching"]:
        key = project.find(rule)
        if key is not None:
            break
    else:
        return _answer(None, None, False, NOT_FOUND)
    add = lead.get("addCustomFields", {"customFields": []})
    for one in add["customFields"]:
        if project.custom_fields is not None and one["field"] not in project.custom_fields:
            words = f"Пользовательское поле «{one['field']}» не создано в ЛК"
            return _answer(rule["type"], key, False, words)
    with state.lock:
        fields = state.store["fields"].setdefault(key, {})
        for one in add["customFields"]:
            if add.get("overwrite") or one["field"] not in fields:
                fields[one["field"]] = one["value"]
    return _answer(rule["type"], key, True, None)


# --- the app -------------------------------------------------------------------


def _api_error(status: int, code: str, message: str) -> JSONResponse:
    data = {"type": "apiError", "apiErrorData": {"errorCode": code, "errorMessage": message}}
    return JSONResponse(
        {"meta": [], "data": {**data, "validationErrorData": None}}, status_code=status
    )


def _validation_error(found: Violations) -> JSONResponse:
    data = {
        "type": "validationError",
        "apiErrorData": None,
        "validationErrorData": {"violations": list(found)},
    }
    return JSONResponse({"meta": [], "data": data}, status_code=400)


def _lead_count(raw: bytes) -> int:
    try:
        leads = json.loads(raw).get("leads")
    except (ValueError, AttributeError):
        return 0
    return len(leads) if isinstance(leads, list) else 0


def create_app(
    site_id: str = "1234",
    access_token: str = "token",  # noqa: S107 (the sandbox's own, documented default)
    *,
    daily_points: int | None = None,
    known_request_ids: Container[int] = ALL_IDS,
    known_call_ids: Container[int] = ALL_IDS,
    known_phones: Collection[str] | None = None,
    unknown_phones: Collection[str] = (),
    unknown_emails: Collection[str] = (),
    custom_fields: Collection[str] | None = None,
) -> ASGIApp:
    """The Calltouch emulator for one project (SiteId) and its token."""
    state = SandboxState()
    state.store.update(fields={}, points={}, rate={})
    project = Project(
        known_request_ids,
        known_call_ids,
        known_phones,
        unknown_phones,
        unknown_emails,
        custom_fields,
    )

    def gate(request: Request) -> Response | None:
        """The refusals that come before the body is looked at: rate, auth, points."""
        with state.lock:  # reset() empties `rate`: a fresh window after it
            if "window" not in state.store["rate"]:
                state.store["rate"]["window"] = SlidingWindow(RATE_LIMIT, RATE_WINDOW)
            window: SlidingWindow = state.store["rate"]["window"]
        if not window.allow(request.client.host if request.client else "unknown"):
            return _api_error(429, "tooManyRequests", "Too Many Requests")
        if request.headers.get("access-token") != access_token:
            return _api_error(401, "invalidToken", "Некорректный API-токен (Access-Token)")
        if request.headers.get("siteid") != site_id:
            return _api_error(403, "accessDenied", "Нет доступа к ЛК (SiteId)")
        if daily_points is not None and _points_used(state) >= daily_points:
            return _api_error(403, POINTS_SPENT, "Суточный лимит баллов API исчерпан")
        return None

    async def add_fields(request: Request) -> Response:
        raw = await request.body()
        count = _lead_count(raw)
        refusal = gate(request)
        if refusal is None:
            refusal, added = _handle(state, project, raw)
        else:
            added = 0
        state.record(ADD_PATH, refusal.status_code, leads=count, added=added)
        return refusal

    routes = [
        Route(ADD_PATH, add_fields, methods=["POST"]),
        # without it Starlette redirects `…/add/` to the documented path: a 404, as any other path
        Route(ADD_PATH + "/", _not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]
    return build_app(routes, state)


async def _not_found(request: Request) -> Response:
    return PlainTextResponse("Not Found", status_code=404)


def _today() -> str:
    return datetime.now(ZONE).date().isoformat()


def _points_used(state: SandboxState) -> int:
    with state.lock:
        return int(state.store["points"].get(_today(), 0))


def _handle(state: SandboxState, project: Project, raw: bytes) -> tuple[Response, int]:
    """A request past the gate: (the answer, how many leads got their fields)."""
    try:
        body = json.loads(raw)
    except ValueError:
        return _api_error(400, "badRequest", "Тело запроса не является корректным JSON"), 0
    found = violations(body)
    if found:
        return _validation_error(found), 0
    answers = [_add(state, project, lead) for lead in body["leads"]]
    with state.lock:
        day = _today()
        state.store["points"][day] = state.store["points"].get(day, 0) + 1
    added = sum(1 for a in answers if a["isCustomFieldsAdded"])
    return JSONResponse({"meta": [], "data": {"leads": answers}}), added
