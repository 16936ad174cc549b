"""
An emulator of SalesMan CRM's developer API v1, `/developer/v1/leads`.

Written from SalesMan's document alone: its four actions (`add`, `stat`,
`info`, `list`), their parameters, its answer shapes and its three error
codes, as strict as the document:

* every answer is HTTP 200 with `Content-Type: text/html`, errors included;
* a wrong `apikey` → `{"result": "Error", "error": {"code": "400", …}}`, an
  unknown `login` → code "401", an unknown `action` → "402" (codes are
  strings), checked in that order;
* a parameter the document does not give for the action (a misspelt field, an
  `id` on `add`) is refused with HTTP 400 and a plain-text reason, and nothing
  is stored: not SalesMan's answer (PHP would drop it silently), but what
  keeps a misread field from passing a test;
* `add` → `{"result": {"text": "Success", "id": N}}`, ids increasing from 940;
  there is NO deduplication: two adds make two records;
* `list`: pages of 200 records (`offset` is the page number), `order` (a
  record field, default `datum`), `first=new|old` (default new), and the
  creation-date filters read literally: `dateStart` keeps records created
  *after* that date, `dateEnd` records created *before* it;
* `info&id=` → `{"data": [record]}`, `data` an array as the document says
  ("массив с данными по заявке"); `{"data": []}` for an unknown id;
* `stat` → per manager, this month's open and processed counts, as strings.

Exceptions, real behaviour the document does not show:

* parameters come from the query string or a form body, by GET or POST (the
  document's examples are GET URLs): the CRM reads PHP's `$_REQUEST`, and a
  form field wins over the same name in the query;
* `create_app(honours_paging=False)`: `list` ignores `offset`, `order`,
  `first`, `dateStart` and `dateEnd`, as SalesMan's public v1 source does
  (it never reads them): every page is the newest 200 records, newest first.

The CRM's calendar is Moscow time (UTC+3), as a Russian CRM's server usually
is: a record's `datum` (YYYY-MM-DD) may be a day ahead of the UTC date.

Controls, beside the common ones of `sandbox.common`:

* `POST /__sandbox__/salesman/status {"id", "status", "rezult"}`: a manager
  moves a record along (status 0–3, rezult 1–4 or "").
* `POST /__sandbox__/salesman/seed {"count", "datum"}`: `count` records that
  came from elsewhere (the CRM's own web form), on `datum` (default today).
* A PHP error page instead of the next answers, the request unhandled: the
  common faults, with the body `php_error_fault(count)` builds.
* `POST /__sandbox__/salesman/php_errors {"count"}`: the next `count` adds
  store their lead, then answer a PHP error page, as when PHP dies while
  e-mailing the manager about it.

Each request is logged with its action and SalesMan's error code, if any;
the `apikey` never is.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from sandbox.common import CONTROL, SandboxState, build_app

LEADS_PATH = "/developer/v1/leads"
PAGE = 200
#: the CRM server's zone: Moscow, no daylight saving
CRM_ZONE = timezone(timedelta(hours=3))
STATUS_NAMES = {"0": "Открыт", "1": "В работе", "2": "Обработан", "3": "Закрыт"}
REZULT_NAMES = {"1": "Спам", "2": "Дубль", "3": "Другое", "4": "Не целевой"}
#: what every request carries
AUTH_PARAMS = frozenset({"login", "apikey", "action"})
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
#: the parameters the document gives each action, beyond login, apikey and action
PARAMS = {
    "add": frozenset(ADD_FIELDS),
    "stat": frozenset(),
    "info": frozenset({"id"}),
    "list": frozenset({"offset", "order", "first", "dateStart", "dateEnd"}),
}
#: what PHP prints when the script dies: HTML, not JSON
PHP_ERROR_PAGE = (
    "<br />\n<b>Fatal error</b>:  Uncaught Exception: SMTP connect() failed in "
    "/var/www/salesman/vendor/phpmailer/class.phpmailer.php:1520\n"
)


def php_error_fault(count: int = 1) -> dict[str, Any]:
    """The `/__sandbox__/faults` body: the next `count` requests get a PHP page, unhandled."""
    return {
        "status": 200,
        "body": PHP_ERROR_PAGE,
        "content_type": "text/html; charset=utf-8",
        "count": count,
    }


def _php_page() -> Response:
    return Response(PHP_ERROR_PAGE, status_code=200, media_type="text/html; charset=utf-8")


def _html(body: Any) -> Response:
    """SalesMan's way: JSON text, HTTP 200, labelled text/html."""
    return Response(
        json.dumps(body, ensure_ascii=False), status_code=200, media_type="text/html; charset=utf-8"
    )


def _error(code: str, text: str) -> Response:
    return _html({"result": "Error", "error": {"code": code, "text": text}})


def _today() -> str:
    return datetime.now(CRM_ZONE).date().isoformat()


class _Crm:
    """One CRM's records and its API user."""

    def __init__(
        self, state: SandboxState, login: str, api_key: str, *, honours_paging: bool
    ) -> None:
        self.state, self.login, self.api_key = state, login, api_key
        self.honours_paging = honours_paging
        self.ids = itertools.count(940)
        state.store["records"] = {}
        #: adds still to die after storing their lead (a list, so a reset empties it)
        state.store["php_errors"] = []

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
        handlers: dict[str, Callable[[dict[str, str]], Response]] = {
            "add": self.add,
            "list": self.listing,
            "info": self.info,
            "stat": self.stat,
        }
        handler = handlers.get(action)
        if handler is None:
            self.state.record(LEADS_PATH, 200, action=action, error="402")
            return _error("402", "Неизвестный метод")
        extra = sorted(set(params) - AUTH_PARAMS - PARAMS[action])
        if extra:
            self.state.record(LEADS_PATH, 400, action=action, error="undocumented")
            return PlainTextResponse(
                f"sandbox: SalesMan's document gives action={action} no parameter "
                f"{', '.join(extra)}",
                status_code=400,
            )
        return handler(params)

    def _store(self, fields: dict[str, str], datum: str) -> str:
        with self.state.lock:
            record_id = str(next(self.ids))
            self.state.store["records"][record_id] = _record(record_id, fields, datum)
        return record_id

    def add(self, params: dict[str, str]) -> Response:
        record_id = self._store({k: params.get(k, "") for k in ADD_FIELDS}, _today())
        with self.state.lock:
            dies = bool(self.state.store["php_errors"])
            if dies:
                self.state.store["php_errors"].pop()
        self.state.record(LEADS_PATH, 200, action="add", id=int(record_id), php_error=dies)
        if dies:
            return _php_page()
        return _html({"result": {"text": "Success", "id": int(record_id)}})

    def listing(self, params: dict[str, str]) -> Response:
        with self.state.lock:
            found = list(self.state.store["records"].values())
        if not self.honours_paging:  # the public source: ORDER BY datum DESC LIMIT 0,200
            found.sort(key=lambda r: (r["datum"], int(r["id"])), reverse=True)
            self.state.record(LEADS_PATH, 200, action="list", page=0)
            return _html({"data": found[:PAGE]})
        start, end = _date(params.get("dateStart")), _date(params.get("dateEnd"))
        if start is not None:
            found = [r for r in found if r["datum"] > start]
        if end is not None:
            found = [r for r in found if r["datum"] < end]
        order = params.get("order") or "datum"
        order = order if order in _FIELDS else "datum"
        found.sort(
            key=lambda r: (_sortable(r[order]), int(r["id"])),
            reverse=params.get("first", "new") != "old",
        )
        offset = params.get("offset") or "0"
        page = int(offset) if offset.isdigit() else 0
        self.state.record(LEADS_PATH, 200, action="list", page=page)
        return _html({"data": found[page * PAGE : (page + 1) * PAGE]})

    def info(self, params: dict[str, str]) -> Response:
        with self.state.lock:
            record = self.state.store["records"].get(params.get("id", ""))
            shown = [dict(record)] if record else []
        self.state.record(LEADS_PATH, 200, action="info")
        return _html({"data": shown})

    def stat(self, params: dict[str, str]) -> Response:
        month = _today()[:7]
        with self.state.lock:
            found = [r for r in self.state.store["records"].values() if r["datum"][:7] == month]
        opened = sum(1 for r in found if r["status"] in ("0", "1"))
        self.state.record(LEADS_PATH, 200, action="stat")
        counts = {"title": self.login, "open": str(opened), "processed": str(len(found) - opened)}
        return _html({"data": [counts]})

    async def move(self, request: Request) -> Response:
        """Control: a manager moves a record to another status and result."""
        change = await request.json()
        status = str(change.get("status", "0"))
        rezult = str(change.get("rezult", ""))
        if status not in STATUS_NAMES or (rezult and rezult not in REZULT_NAMES):
            return JSONResponse({"error": "status 0-3, rezult 1-4 or empty"}, status_code=400)
        with self.state.lock:
            record = self.state.store["records"].get(str(change.get("id")))
            if record is None:
                return JSONResponse({"error": "no such record"}, status_code=404)
            record.update(
                status=status,
                statusName=STATUS_NAMES[status],
                rezult=rezult,
                rezultName=REZULT_NAMES.get(rezult, ""),
                datum_do=_today() if status in ("2", "3") else "",
            )
            return JSONResponse(dict(record))

    async def php_errors(self, request: Request) -> Response:
        """Control: the next adds are stored, then PHP dies before answering."""
        count = int((await request.json()).get("count", 1))
        with self.state.lock:
            self.state.store["php_errors"][:] = [True] * count
        return JSONResponse({"queued": count})

    async def seed(self, request: Request) -> Response:
        """Control: leads that reached the CRM some other way, to fill pages."""
        spec = await request.json()
        datum = _date(spec.get("datum")) or _today()
        ids = [
            self._store({"title": f"Посетитель {n}", "description": "веб-форма"}, datum)
            for n in range(int(spec.get("count", 1)))
        ]
        return JSONResponse({"ids": ids})


def create_app(
    login: str = "manager@example.com", api_key: str = "key", *, honours_paging: bool = True
) -> ASGIApp:
    """
    The SalesMan emulator for one CRM with one API user. `honours_paging=False`:
    `list` ignores its paging, order and date parameters, as the public source does.
    """
    state = SandboxState()
    crm = _Crm(state, login, api_key, honours_paging=honours_paging)
    routes = [
        Route(LEADS_PATH, crm.leads, methods=["GET", "POST"]),
        Route(f"{CONTROL}/salesman/status", crm.move, methods=["POST"]),
        Route(f"{CONTROL}/salesman/seed", crm.seed, methods=["POST"]),
        Route(f"{CONTROL}/salesman/php_errors", crm.php_errors, methods=["POST"]),
    ]
    return build_app(routes, state)


def _record(record_id: str, fields: dict[str, str], datum: str) -> dict[str, str]:
    """A record with the fields SalesMan's `list` documents; `content` is the lead as text."""
    return {
        "id": record_id,
        "datum": datum,
        "datum_do": "",
        "email": fields.get("email", ""),
        "phone": fields.get("phone", ""),
        "site": fields.get("partner", ""),
        "company": fields.get("company", ""),
        "city": fields.get("city", ""),
        "country": fields.get("country", ""),
        "content": "\n".join(f"{k}: {v}" for k, v in fields.items() if v),
        "clid": "0",
        "client": "",
        "pid": "0",
        "person": fields.get("title", ""),
        "did": "0",
        "deal": "",
        "user": "0",
        "userName": "",
        "status": "0",
        "statusName": STATUS_NAMES["0"],
        "rezult": "",
        "rezultName": "",
        "clientpath": "0",
        "clientpathName": fields.get("path", ""),
    }


_FIELDS = frozenset(_record("0", {}, "").keys())


def _sortable(value: str) -> tuple[int, str]:
    """Numbers sort as numbers (MySQL's int columns), the rest as text."""
    return (int(value), "") if value.isdigit() else (0, value)


def _date(value: str | None) -> str | None:
    """A YYYY-MM-DD filter, or None when absent or malformed (PHP ignores it too)."""
    if not value:
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        return None
