"""
An emulator of Kuper's Partner Leads API: `POST /partner-candidate/v2/leads/import`.

As strict as Kuper's own document:
* Basic Auth, checked on every request (401 with a JSON error otherwise);
* a JSON array of 1 to 300 lead objects (more: 400; not JSON or not an array: 400);
* per lead: `phone` a string of 11 digits starting with 79, no "+"; `utm.utm_source`
  a non-empty string; `vacancy_id` and `city_id` integers (a string "3" is refused,
  the mistake Kuper's doc warns partners about); `first_name`/`last_name` strings;
* a lead that breaks a rule does not fail the request: its `details` entry says
  `success: false` with the `error`, the others are created (`uuid`);
* deduplication by phone within a `utm_source`: a second import of the same phone is
  skipped with `deduplication.applied: true`, so a resend never creates a second
  candidate.

Where the document is silent (error wording, the body of a 401/400), the emulator
answers in the document's language and shape: `{"message": ...}` objects. It
also decides for itself that `first_name`/`last_name`, when present, must be
strings (null is refused), and that extra keys in a lead are ignored.

`state.store["candidates"]` maps `<utm_source>:<phone>` to the created uuid;
`state.log` holds each request with `leads` (how many it carried) and `created`.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from worker.platforms.base import basic_auth
from worker.sandbox.common import SandboxState, build_app

IMPORT_PATH = "/partner-candidate/v2/leads/import"
MAX_LEADS = 300
_PHONE = re.compile(r"79[0-9]{9}")  #: matched whole: no trailing newline, ASCII digits only
_NOT_DEDUPED = "Правило дедубликации не применено, источник не закреплён за вами"
_DEDUPED = "Кандидат с таким телефоном уже загружен из этого источника"


def _lead_error(lead: Any) -> str:
    """Kuper's objection to one lead, or "" when it would be imported."""
    if not isinstance(lead, dict):
        return "лид должен быть объектом"
    phone = lead.get("phone")
    if not isinstance(phone, str) or not _PHONE.fullmatch(phone):
        return "phone: номер должен быть строкой формата 79XXXXXXXXX"
    utm = lead.get("utm")
    if (
        not isinstance(utm, dict)
        or not isinstance(utm.get("utm_source"), str)
        or not utm["utm_source"]
    ):
        return "utm.utm_source: обязательное поле"
    for field in ("vacancy_id", "city_id"):
        value = lead.get(field)
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{field}: должно быть числом"
    for field in ("first_name", "last_name"):
        if field in lead and not isinstance(lead[field], str):
            return f"{field}: должно быть строкой"
    return ""


def create_app(username: str = "partner", password: str = "secret") -> ASGIApp:  # noqa: S107
    """The Kuper emulator for one partner account."""
    state = SandboxState()
    state.store["candidates"] = {}
    expected = basic_auth(username, password)

    async def import_leads(request: Request) -> Response:
        if request.headers.get("authorization") != expected:
            state.record(IMPORT_PATH, 401, leads=0, created=0)
            return JSONResponse({"message": "Unauthorized"}, status_code=401)
        try:
            leads = json.loads(await request.body())
        except ValueError:
            state.record(IMPORT_PATH, 400, leads=0, created=0)
            return JSONResponse({"message": "тело запроса не является JSON"}, status_code=400)
        if not isinstance(leads, list) or not leads or len(leads) > MAX_LEADS:
            count = len(leads) if isinstance(leads, list) else 0
            state.record(IMPORT_PATH, 400, leads=count, created=0)
            return JSONResponse(
                {"message": f"ожидается массив от 1 до {MAX_LEADS} лидов"}, status_code=400
            )
        details = [_import_one(state, lead) for lead in leads]
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


def _import_one(state: SandboxState, lead: Any) -> dict[str, Any]:
    error = _lead_error(lead)
    phone = lead.get("phone") if isinstance(lead, dict) else None
    if error:
        return {"error": error, "phone": phone if isinstance(phone, str) else "", "success": False}
    key = f"{lead['utm']['utm_source']}:{phone}"
    with state.lock:
        candidates = state.store["candidates"]
        if key in candidates:
            return {
                "deduplication": {"applied": True, "message": _DEDUPED},
                "error": "",
                "phone": phone,
                "success": False,
            }
        candidate = str(uuid.uuid4())
        candidates[key] = candidate
    return {
        "deduplication": {"applied": False, "message": _NOT_DEDUPED},
        "error": "",
        "phone": phone,
        "success": True,
        "uuid": candidate,
    }
