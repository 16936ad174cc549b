"""
An emulator of Kuper's Partner Leads API: `POST /partner-candidate/v2/leads/import`.

What Kuper's document shows, and nothing else (any other path or method is a
404/405):

* Basic Auth, checked on every request;
* a body that is a JSON array of 1 to 300 lead objects, each with the fields
  the document shows: `phone` a string, `utm` an object with the string
  `utm_source`, `vacancy_id` and `city_id` numbers (an integer; a string such
  as "3" is an error, the mistake the document warns partners about),
  `first_name` / `last_name` strings when present;
* an answer shaped as the document's examples: `created_count`, `details`
  (per lead, in order: `deduplication`, `error`, `phone`, `success`, `uuid`),
  `skipped_count`, `total_rows`;
* the partner's sources, each with "Дедублицировать всегда" on or off
  (`create_app(sources=…)`, or `deduplicate` for every source):
  - a phone new to the source is created, with its `uuid` and no
    `deduplication` (the document's second candidate);
  - a phone the source already holds, switch off: created again, `success:
    true` without a uuid, `deduplication.applied: false` with the document's
    message (its first candidate). Two candidates: what makes a lost answer
    dangerous;
  - a phone the source already holds, switch on: skipped, `success: false`,
    `deduplication.applied: true`.

Where the document is silent the emulator decides, and says so here:

* a request refused as a whole: 400 when the body is not a JSON array of 1 to
  300 objects, 422 when a lead breaks the schema (a missing or unknown field, a
  value of the wrong type: a string `vacancy_id`, a numeric `phone`). Kuper
  does not say which lead broke it. The body is `{"message": ...}` in Russian;
  401 (credentials) and 415 (a body not sent as `application/json`) likewise;
* a lead of the right types whose value is wrong (`phone` not `79` and nine
  more digits, an empty `utm_source`, a source the partner does not have when
  `sources` is given) is refused alone: its detail says `success: false` and
  the `error`, the others are imported;
* the message of an applied deduplication (the document shows only the other).

`state.store["candidates"]` maps `<utm_source>:<phone>` to the ids of the
candidates created for it (two when a source without deduplication took the
phone twice); `state.log` holds each request with `leads` (how many it
carried) and `created`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from sandbox.common import SandboxState, build_app

IMPORT_PATH = "/partner-candidate/v2/leads/import"
MAX_LEADS = 300
_PHONE = re.compile(r"79[0-9]{9}")  #: matched whole: no trailing newline, ASCII digits only
_FIELDS = {"phone": str, "utm": dict, "vacancy_id": int, "city_id": int}
_OPTIONAL = {"first_name": str, "last_name": str}
_NOT_DEDUPED = "Правило дедубликации не применено, источник не закреплён за вами"
_DEDUPED = "Правило дедубликации применено: кандидат с этим телефоном уже есть в источнике"


class _Refusal(Exception):
    """The request as a whole is refused: `status` with `message`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _credentials(header: str | None) -> tuple[str, str] | None:
    """The login and password of an `Authorization: Basic …` header (RFC 7617); None if none."""
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    login, colon, password = decoded.partition(":")
    return (login, password) if colon else None


def _same(given: tuple[str, str] | None, login: str, password: str) -> bool:
    if given is None:
        return False
    # both compared, always: the time taken says nothing about which one was wrong
    login_ok = hmac.compare_digest(given[0].encode(), login.encode())
    password_ok = hmac.compare_digest(given[1].encode(), password.encode())
    return login_ok and password_ok


def _leads(raw: bytes) -> list[dict[str, Any]]:
    """The body as a list of leads that fit the schema; _Refusal otherwise."""
    try:
        leads = json.loads(raw)
    except (ValueError, RecursionError):
        raise _Refusal(400, "тело запроса не является JSON") from None
    if not isinstance(leads, list) or not 1 <= len(leads) <= MAX_LEADS:
        raise _Refusal(400, f"ожидается массив от 1 до {MAX_LEADS} лидов")
    for lead in leads:
        _check_schema(lead)
    return leads


def _is(value: Any, kind: type) -> bool:
    """JSON's types: a bool is not a number, 3.0 is not an integer."""
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _check_schema(lead: Any) -> None:
    """A lead object with the documented fields and types; _Refusal(422) otherwise."""
    if not isinstance(lead, dict):
        raise _Refusal(422, "лид должен быть объектом")
    unknown = sorted(lead.keys() - _FIELDS.keys() - _OPTIONAL.keys())
    if unknown:
        raise _Refusal(422, f"{unknown[0]}: неизвестное поле")
    for name, kind in _FIELDS.items():
        if name not in lead:
            raise _Refusal(422, f"{name}: обязательное поле")
        if not _is(lead[name], kind):
            raise _Refusal(
                422, f"{name}: {'должно быть числом' if kind is int else 'неверный тип'}"
            )
    for name, kind in _OPTIONAL.items():
        if name in lead and not _is(lead[name], kind):
            raise _Refusal(422, f"{name}: должно быть строкой")
    utm = lead["utm"]
    if set(utm) != {"utm_source"} or not isinstance(utm["utm_source"], str):
        raise _Refusal(422, "utm: ожидается объект с одним строковым полем utm_source")


def create_app(
    username: str = "partner",
    password: str = "secret",  # noqa: S107
    *,
    deduplicate: bool = False,
    sources: Mapping[str, bool] | None = None,
) -> ASGIApp:
    """
    The Kuper emulator for one partner account.

    `sources`: the partner's sources, each `utm_source` → whether its
    "Дедублицировать всегда" is on; a lead for any other source is refused.
    Without it every `utm_source` is one of the partner's sources, each with
    `deduplicate`.
    """
    state = SandboxState()
    state.store["candidates"] = {}
    table = dict(sources) if sources is not None else None

    async def import_leads(request: Request) -> Response:
        if not _same(_credentials(request.headers.get("authorization")), username, password):
            state.record(IMPORT_PATH, 401, leads=0, created=0)
            return JSONResponse({"message": "Unauthorized"}, status_code=401)
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "application/json":
            state.record(IMPORT_PATH, 415, leads=0, created=0)
            return JSONResponse({"message": "ожидается application/json"}, status_code=415)
        raw = await request.body()
        try:
            leads = _leads(raw)
        except _Refusal as refusal:
            count = _count(raw)
            state.record(IMPORT_PATH, refusal.status, leads=count, created=0)
            return JSONResponse({"message": refusal.message}, status_code=refusal.status)
        details = [_import_one(state, table, deduplicate, lead) for lead in leads]
        created = sum(1 for d in details if d["success"])
        state.record(IMPORT_PATH, 200, leads=len(leads), created=created)
        return JSONResponse(
            {
                "created_count": created,
                "details": details,
                "skipped_count": len(leads) - created,
                "total_rows": len(leads),
            }
        )

    return build_app([Route(IMPORT_PATH, import_leads, methods=["POST"])], state)


def _count(raw: bytes) -> int:
    """How many leads a refused body carried, for the log (0 when it is not an array)."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return 0
    return len(body) if isinstance(body, list) else 0


def _value_error(lead: dict[str, Any], table: dict[str, bool] | None) -> str:
    """Kuper's objection to one lead of the right types, or "" when it is imported."""
    if not _PHONE.fullmatch(lead["phone"]):
        return "phone: номер должен быть строкой из 11 цифр, начиная с 79, без +"
    source = lead["utm"]["utm_source"]
    if not source:
        return "utm.utm_source: обязательное поле"
    if table is not None and source not in table:
        return "utm.utm_source: у партнёра нет такого источника"
    return ""


def _import_one(
    state: SandboxState, table: dict[str, bool] | None, deduplicate: bool, lead: dict[str, Any]
) -> dict[str, Any]:
    phone = lead["phone"]
    error = _value_error(lead, table)
    if error:
        return {"error": error, "phone": phone, "success": False}
    source = lead["utm"]["utm_source"]
    always = table[source] if table is not None else deduplicate
    candidate = str(uuid.uuid4())
    with state.lock:
        created = state.store["candidates"].setdefault(f"{source}:{phone}", [])
        known = bool(created)
        if known and always:
            return {
                "deduplication": {"applied": True, "message": _DEDUPED},
                "error": "",
                "phone": phone,
                "success": False,
            }
        created.append(candidate)
    if known:
        return {
            "deduplication": {"applied": False, "message": _NOT_DEDUPED},
            "error": "",
            "phone": phone,
            "success": True,
        }
    return {"error": "", "phone": phone, "success": True, "uuid": candidate}
