"""
An emulator of SalesMan CRM's developer API v1, `/developer/v1/leads`.

As strict as SalesMan's document, and as odd:
* parameters come from the query string or a form body (PHP's `$_REQUEST`), GET or POST;
* every answer is HTTP 200 with `Content-Type: text/html`, errors included;
* a wrong `apikey` → `{"result": "Error", "error": {"code": "400", …}}`, an unknown
  `login` → code "401", an unknown `action` → "402" (codes are strings);
* `add` with neither title, phone nor e-mail fails the way a failed add does:
  `{"error": {"code": "1", "text": …}, "Error": …}` and no `result` key;
* success is `{"result": {"text": "Success", "id": N}}`, ids increasing;
* there is NO deduplication: two adds make two records;
* `list` pages hold 200 records (`offset` is the page), `order`, `first=new|old`,
  `dateStart`/`dateEnd` (YYYY-MM-DD), records with the document's fields;
* `info&id=` gives one record; `stat` the open and processed counts per manager.

For tests: `POST /__sandbox__/salesman/status {"id", "status", "rezult"}` moves a
record along, as a manager would. The `apikey` is never logged.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from worker.sandbox.common import CONTROL, SandboxState, build_app

LEADS_PATH = "/developer/v1/leads"
PAGE = 200
STATUS_NAMES = {"0": "Открыт", "1": "В работе", "2": "Обработан", "3": "Закрыт"}
REZULT_NAMES = {"1": "Спам", "2": "Дубль", "3": "Другое", "4": "Не целевой"}
ADD_FIELDS = (
    "title",
    "email",
    "phone",
    "company",
    "description",
    "ip",
    "country",
    "city",
    "path",
    "partner",
    "user",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
)


def _html(body: Any) -> Response:
    """SalesMan's way: JSON text, HTTP 200, labelled text/html."""
    return Response(
        json.dumps(body, ensure_ascii=False), status_code=200, media_type="text/html; charset=utf-8"
    )


def _error(code: str, text: str) -> Response:
    return _html({"result": "Error", "error": {"code": code, "text": text}})


class _Crm:
    """One CRM's records and its API user."""

    def __init__(self, state: SandboxState, login: str, api_key: str) -> None:
        self.state, self.login, self.api_key = state, login, api_key
        self.ids = itertools.count(940)
        state.store["records"] = {}

    async def leads(self, request: Request) -> Response:
        params: dict[str, str] = dict(request.query_params)
        if request.method == "POST":
            form = await request.form()
            params.update({k: str(v) for k, v in form.items()})
        action = params.get("action", "")
        if params.get("apikey") != self.api_key:
            self.state.record(LEADS_PATH, 200, action=action, error="400")
            return _error("400", "Не верный API key")
        if params.get("login") != self.login:
            self.state.record(LEADS_PATH, 200, action=action, error="401")
            return _error("401", "Неизвестный пользователь")
        handlers = {"add": self.add, "list": self.listing, "info": self.info, "stat": self.stat}
        handler = handlers.get(action)
        if handler is None:
            self.state.record(LEADS_PATH, 200, action=action, error="402")
            return _error("402", "Неизвестный метод")
        return handler(params)

    def add(self, params: dict[str, str]) -> Response:
        if not any(params.get(k) for k in ("title", "phone", "email")):
            self.state.record(LEADS_PATH, 200, action="add", error="1")
            text = "Не переданы данные заявки"
            return _html({"error": {"code": "1", "text": text}, "Error": text})
        record_id = next(self.ids)
        fields = {k: params.get(k, "") for k in ADD_FIELDS}
        content = "\n".join(f"{k}: {v}" for k, v in fields.items() if v)
        record = {
            "id": str(record_id),
            "datum": datetime.now(UTC).date().isoformat(),
            "datum_do": "",
            "email": fields["email"],
            "phone": fields["phone"],
            "site": fields["partner"],
            "company": fields["company"],
            "city": fields["city"],
            "country": fields["country"],
            "content": content,
            "clid": "0",
            "client": "",
            "pid": "0",
            "person": fields["title"],
            "did": "0",
            "deal": "",
            "user": "0",
            "userName": "",
            "status": "0",
            "statusName": STATUS_NAMES["0"],
            "rezult": "",
            "rezultName": "",
            "clientpath": "0",
            "clientpathName": fields["path"],
        }
        with self.state.lock:
            self.state.store["records"][str(record_id)] = record
        self.state.record(LEADS_PATH, 200, action="add", id=record_id)
        return _html({"result": {"text": "Success", "id": record_id}})

    def listing(self, params: dict[str, str]) -> Response:
        with self.state.lock:
            records = list(self.state.store["records"].values())
        start, end = _date(params.get("dateStart")), _date(params.get("dateEnd"))
        if start is not None:
            records = [r for r in records if r["datum"] >= start]
        if end is not None:
            records = [r for r in records if r["datum"] <= end]
        records.sort(key=lambda r: int(r["id"]), reverse=params.get("first", "new") != "old")
        offset = params.get("offset") or "0"
        page = int(offset) if offset.isdigit() else 0
        self.state.record(LEADS_PATH, 200, action="list", page=page)
        return _html({"data": records[page * PAGE : (page + 1) * PAGE]})

    def info(self, params: dict[str, str]) -> Response:
        with self.state.lock:
            record = self.state.store["records"].get(params.get("id", ""))
        self.state.record(LEADS_PATH, 200, action="info")
        return _html({"data": record or []})

    def stat(self, params: dict[str, str]) -> Response:
        with self.state.lock:
            records = list(self.state.store["records"].values())
        opened = sum(1 for r in records if r["status"] in ("0", "1"))
        self.state.record(LEADS_PATH, 200, action="stat")
        counts = {"title": self.login, "open": str(opened), "processed": str(len(records) - opened)}
        return _html({"data": [counts]})

    async def move(self, request: Request) -> Response:
        """Control: a manager moves a record to another status and result."""
        change = await request.json()
        with self.state.lock:
            record = self.state.store["records"][str(change["id"])]
            status = str(change.get("status", record["status"]))
            rezult = str(change.get("rezult", ""))
            record.update(
                status=status,
                statusName=STATUS_NAMES.get(status, ""),
                rezult=rezult,
                rezultName=REZULT_NAMES.get(rezult, ""),
            )
        return JSONResponse(record)


def create_app(login: str = "manager@example.com", api_key: str = "key") -> ASGIApp:
    """The SalesMan emulator for one CRM with one API user."""
    state = SandboxState()
    crm = _Crm(state, login, api_key)
    routes = [
        Route(LEADS_PATH, crm.leads, methods=["GET", "POST"]),
        Route(f"{CONTROL}/salesman/status", crm.move, methods=["POST"]),
    ]
    return build_app(routes, state)


def _date(value: str | None) -> str | None:
    """A YYYY-MM-DD filter, or None when absent or malformed (PHP ignores it too)."""
    if not value:
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        return None
