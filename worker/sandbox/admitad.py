"""
An emulator of Admitad's broker applications API, as strict as its document.

* `POST /token/`: Basic auth `client_id:client_secret`, `grant_type`
  `client_credentials` (with `client_id` and `scope`) or `refresh_token` (which
  replaces the token it came with); tokens live `expires_in` 604800 s; at most
  `max_tokens` live tokens per application, then `error_code` 6. Error bodies
  are `{"error", "error_description", "error_code"}`.
* Every other call wants `Authorization: Bearer`: unknown → 401 `error_code` 1,
  expired → 401 `error_code` 0, a scope the token lacks → 403 `error_code` 2.
* 600 requests a minute per application, then 503 with `error_code` 4.
* `create/`: form data, each key given once; `campaigns` a JSON array string (of
  ids, or the algorithm's stages, pauses 0 to 1440); `user_notified` 1 or 0 (0:
  the application is created and passed to nobody); `test_mode=1`: no `id`,
  empty `responses`; the table's field rules, checked here on their own (400
  naming the field); programs that take no broker applications, or whose own
  rules (campaign_settings) the application breaks, go to `errors[]`.
* Statuses move `processing` → `waiting` → the program's outcome (`approved` by
  default) every `decide_after` seconds; with an algorithm, each stage starts when
  the one before it is decided, after its pause if any program accepted
  (`minute` seconds per pause minute).
* `applications/` lists with `offset`, `limit`, `order_by`, `id`, `campaign`,
  `status`, `date_start`, `date_end`, `subid`…`subid4`, and `_meta`.
* `campaign_settings/{c_id}/`, `sync_create/` and `sync_create/{a_id}/confirm`.

Tokens never reach the log.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from worker.platforms.admitad.rules import DIGITS, FIELDS, PLACES, SUBIDS
from worker.sandbox.common import CONTROL, SandboxState, SlidingWindow, build_app

NOT_BROKER = "Кампания не принимает заявки брокеров."
SCOPES = {"manage_broker_application", "broker_application"}
TOKEN_LIFE = 604800
MAX_PAUSE = 1440
STATUSES = ("processing", "approved", "declined", "waiting", "error")
_DATE = re.compile(r"[0-9]{2}\.[0-9]{2}\.[0-9]{4}")
_DECIMAL = re.compile(rf"[0-9]{{1,{DIGITS - PLACES}}}(\.[0-9]{{1,{PLACES}}})?")


def _error(status: int, code: int, error: str, description: str) -> Response:
    return JSONResponse(
        {"error": error, "error_description": description, "error_code": code}, status_code=status
    )


class Admitad:
    """One Admitad application (client) with one website and its programs."""

    def __init__(self, state: SandboxState, **config: Any) -> None:
        self.state = state
        self.client_id: str = config["client_id"]
        self.client_secret: str = config["client_secret"]
        self.website_id: int = config["website_id"]
        self.programs: dict[int, list[dict[str, Any]]] = config["campaigns"]
        self.outcomes: dict[int, str] = config["outcomes"]
        self.decide_after: float = config["decide_after"]
        self.minute: float = config["minute"]
        self.max_tokens: int = config["max_tokens"]
        self.sms_code: str = config["sms_code"]
        self.window = SlidingWindow(config["per_minute"], 60.0)
        self.ids = itertools.count(1)
        state.store.update(tokens={}, refresh={}, applications={}, issued=[])

    # ------------------------------------------------------------ auth

    async def token(self, request: Request) -> Response:
        expected = (
            "Basic " + base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        )
        if request.headers.get("authorization") != expected:
            self.state.record("/token/", 401)
            return _error(401, 1, "invalid_client", "Client authentication failed")
        form = await request.form()
        grant = form.get("grant_type")
        if grant == "refresh_token":
            grant_of = self.state.store["refresh"].pop(str(form.get("refresh_token")), None)
            if grant_of is None:
                self.state.record("/token/", 400)
                return _error(400, 1, "invalid_grant", "Invalid refresh token")
            scopes, previous = grant_of
            self.state.store["tokens"].pop(previous, None)  # a refresh replaces its token
        elif grant == "client_credentials" and form.get("client_id") == self.client_id:
            scopes = set(str(form.get("scope", "")).split())
            if not scopes or not scopes <= SCOPES:
                self.state.record("/token/", 400)
                return _error(400, 2, "invalid_scope", "Unknown or missing scope")
        else:
            self.state.record("/token/", 400)
            return _error(400, 1, "unsupported_grant_type", "grant_type or client_id is wrong")
        live = [t for t, v in self.state.store["tokens"].items() if v["expires"] > time.time()]
        if len(live) >= self.max_tokens:
            self.state.record("/token/", 400)
            return _error(400, 6, "too_many_tokens", "Too many tokens for this application")
        access, refresh = secrets.token_hex(16), secrets.token_hex(16)
        self.state.store["tokens"][access] = {"scopes": scopes, "expires": time.time() + TOKEN_LIFE}
        self.state.store["refresh"][refresh] = (scopes, access)
        self.state.store["issued"].append(time.time())
        self.state.record("/token/", 200, grant=str(grant))
        return JSONResponse(
            {
                "access_token": access,
                "token_type": "bearer",
                "expires_in": TOKEN_LIFE,
                "refresh_token": refresh,
                "scope": " ".join(sorted(scopes)),
            }
        )

    def gate(self, request: Request, scope: str) -> Response | None:
        """Bearer, scope and the per-application rate; None when the call may go on."""
        header = request.headers.get("authorization", "")
        token = self.state.store["tokens"].get(header.removeprefix("Bearer ").strip())
        if not header.startswith("Bearer ") or token is None:
            return _error(401, 1, "invalid_token", "Invalid token")
        if token["expires"] <= time.time():
            return _error(401, 0, "token_expired", "Token expired")
        if scope not in token["scopes"]:
            return _error(403, 2, "insufficient_scope", "No rights for this call")
        if not self.window.allow(self.client_id):
            return _error(503, 4, "rate_limit", "Too many requests")
        return None

    # ------------------------------------------------------------ applications

    async def create(self, request: Request) -> Response:
        refusal = self._website(request) or self.gate(request, "manage_broker_application")
        if refusal:
            self.state.record(request.url.path, refusal.status_code)
            return refusal
        form = await request.form()
        if len(form.getlist("campaigns")) != 1:
            return self._done(
                request, JSONResponse({"campaigns": ["Передайте один JSON-массив"]}, 400)
            )
        try:
            stages = _stages(json.loads(str(form["campaigns"])))
        except (ValueError, TypeError, KeyError):
            return self._done(
                request, JSONResponse({"campaigns": ["Некорректный JSON-массив"]}, 400)
            )
        if any(len(form.getlist(k)) > 1 for k in form):
            return self._done(request, JSONResponse({"detail": ["Повторяющиеся параметры"]}, 400))
        fields = {k: str(v) for k, v in form.items() if k not in ("campaigns",)}
        problems = _field_problems(fields)
        if problems:
            return self._done(request, JSONResponse(problems, 400))
        if fields.get("test_mode") == "1":
            return self._done(
                request, JSONResponse({"responses": [], "errors": [], "algorithm": stages})
            )
        app = self._application(fields, stages)
        return self._done(request, JSONResponse(self._view(app)))

    def _website(self, request: Request) -> Response | None:
        if request.path_params.get("w_id") != self.website_id:
            return _error(404, 1, "not_found", "Unknown website")
        return None

    def _done(self, request: Request, response: Response) -> Response:
        self.state.record(request.url.path, response.status_code)
        return response

    def _application(self, fields: dict[str, str], stages: list[dict[str, Any]]) -> dict[str, Any]:
        notified = fields.get("user_notified") == "1"
        errors, programs = [], []
        for stage in stages:
            for c_id in stage["ids"]:
                problem = self._refuses(c_id, fields)
                if problem:
                    errors.append({"campaign_id": c_id, "message": problem})
                elif notified:
                    programs.append(c_id)
        app = {
            "id": next(self.ids),
            "created": time.time(),
            "fields": fields,
            "stages": stages,
            "programs": programs,
            "errors": errors,
            "date": datetime.now(UTC).date(),
            **{k: fields.get(k, "") for k in SUBIDS},
        }
        with self.state.lock:
            self.state.store["applications"][app["id"]] = app
        return app

    def _refuses(self, c_id: int, fields: Mapping[str, str]) -> str:
        if c_id not in self.programs:
            return NOT_BROKER
        for rule in self.programs[c_id]:
            value = fields.get(rule["field_name"], "")
            if rule.get("required") and not value:
                return f"Поле {rule['field_name']} обязательно"
            if value and rule.get("regexp") and not re.search(rule["regexp"], value):
                return f"Поле {rule['field_name']} не соответствует {rule['regexp']}"
        return ""

    def _view(self, app: dict[str, Any]) -> dict[str, Any]:
        """The application as the API shows it now (statuses move with time)."""
        responses: list[dict[str, Any]] = []
        start = app["created"]
        for stage in app["stages"]:
            start += (
                stage.get("pause", 0) * self.minute if responses and _any_accepted(responses) else 0
            )
            ids = [c for c in stage["ids"] if c in app["programs"]]
            now = time.time()
            if now < start:
                break
            stage_responses = [self._response(c, now - start) for c in ids]
            responses += stage_responses
            if any(r["status"] == "processing" for r in stage_responses):
                break
            start += self.decide_after
        return {
            "id": app["id"],
            **{k: app[k] for k in SUBIDS},
            "responses": responses,
            "errors": app["errors"],
            "algorithm": app["stages"],
        }

    def _response(self, c_id: int, age: float) -> dict[str, Any]:
        """processing, then the advertiser's answer: a refusal at once, or waiting then approved."""
        outcome = self.outcomes.get(c_id, "approved")
        if age < self.decide_after:
            status = "processing"
        elif outcome != "approved" or age >= 2 * self.decide_after:
            status = outcome
        else:
            status = "waiting"
        return {
            "campaign_id": c_id,
            "status": status,
            "order_id": None,
            "server_response": {"message": "objects_list_returned_ok", "code": 200, "data": False},
        }

    async def listing(self, request: Request) -> Response:
        refusal = self._website(request) or self.gate(request, "broker_application")
        if refusal:
            return self._done(request, refusal)
        q = request.query_params
        problem = _list_problem(q)
        if problem:
            return self._done(request, JSONResponse({"detail": [problem]}, 400))
        with self.state.lock:
            apps = list(self.state.store["applications"].values())
        views = [self._view(a) for a in apps if _matches(a, q)]
        if q.get("status"):
            views = [v for v in views if any(r["status"] == q["status"] for r in v["responses"])]
        if q.get("campaign"):
            views = [
                v
                for v in views
                if any(str(r["campaign_id"]) == q["campaign"] for r in v["responses"])
            ]
        views.sort(key=lambda v: v["id"], reverse=q.get("order_by") == "-date_created")
        offset, limit = int(q.get("offset", 0)), int(q.get("limit", 20))
        page = views[offset : offset + limit]
        return self._done(
            request,
            JSONResponse(
                {"results": page, "_meta": {"count": len(views), "limit": limit, "offset": offset}}
            ),
        )

    async def settings(self, request: Request) -> Response:
        refusal = self.gate(request, "broker_application")
        if refusal:
            return self._done(request, refusal)
        c_id = request.path_params["c_id"]
        if c_id not in self.programs:
            return self._done(request, JSONResponse({"detail": "Not found"}, 404))
        return self._done(request, JSONResponse({"results": self.programs[c_id]}))

    async def sync_create(self, request: Request) -> Response:
        refusal = self._website(request) or self.gate(request, "manage_broker_application")
        if refusal:
            return self._done(request, refusal)
        form = await request.form()
        c_id = str(form.get("campaign_id", ""))
        if not c_id.isdigit() or form.get("user_notified") not in ("0", "1"):
            return self._done(request, JSONResponse({"campaign_id": ["Обязательное поле"]}, 400))
        fields = {k: str(v) for k, v in form.items() if k != "campaign_id"}
        problems = _field_problems(fields)
        if problems:
            return self._done(request, JSONResponse(problems, 400))
        if int(c_id) not in self.programs:
            return self._done(request, JSONResponse({"campaign_id": [NOT_BROKER]}, status_code=400))
        app = self._application(fields, [{"ids": [int(c_id)], "pause": 0}])
        app["sms"] = "waiting"
        return self._done(
            request,
            JSONResponse(
                {
                    "status": "waiting_sms_verification",
                    "application_id": app["id"],
                    "server_response": {"bank": "code sent"},
                }
            ),
        )

    async def confirm(self, request: Request) -> Response:
        refusal = self._website(request) or self.gate(request, "manage_broker_application")
        if refusal:
            return self._done(request, refusal)
        app = self.state.store["applications"].get(request.path_params["a_id"])
        form = await request.form()
        if app is None or "sms" not in app:
            return self._done(request, JSONResponse({"detail": "Not found"}, 404))
        if form.get("code") != self.sms_code:
            return self._done(
                request,
                JSONResponse(
                    {
                        "status": "waiting_sms_verification",
                        "application_id": app["id"],
                        "server_response": {"bank": "wrong code"},
                    }
                ),
            )
        app.update(sms="confirmed", created=time.time())
        return self._done(
            request,
            JSONResponse(
                {
                    "status": "processing",
                    "application_id": app["id"],
                    "server_response": {"bank": "code accepted"},
                }
            ),
        )

    async def expire(self, request: Request) -> Response:
        """Control: every token expires now (to test renewal)."""
        for token in self.state.store["tokens"].values():
            token["expires"] = 0
        return JSONResponse({"expired": len(self.state.store["tokens"])})


def _stages(raw: Any) -> list[dict[str, Any]]:
    """Admitad's own reading of `campaigns` (its documented equivalence); ValueError else."""
    if not isinstance(raw, list) or not raw:
        raise ValueError
    out = []
    for item in raw:
        if isinstance(item, dict):
            pause = item.get("pause", 0)
            if set(item) - {"ids", "pause"} or not _pid(pause, 0) or pause > MAX_PAUSE:
                raise ValueError
            out.append({"ids": _pids(item.get("ids")), "pause": pause})
        elif isinstance(item, list):
            out.append({"ids": _pids(item), "pause": 0})
        elif _pid(item, 1):
            out.append({"ids": [item], "pause": 0})
        else:
            raise ValueError
    return out


def _pid(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _pids(values: Any) -> list[int]:
    if not isinstance(values, list) or not values or not all(_pid(v, 1) for v in values):
        raise ValueError
    return list(values)


def _field_problem(name: str, value: str) -> str:
    """The table's rule for one field, checked here on its own (not with the adapter's code)."""
    spec = FIELDS[name]
    if spec.kind == "string":
        if len(value) > spec.max_length:
            return f"Убедитесь, что это значение содержит не более {spec.max_length} символов."
        if name in SUBIDS and "%00" in value:
            return "Недопустимое значение %00."
        return ""
    if spec.kind == "date":
        try:
            datetime.strptime(value, "%d.%m.%Y")
        except ValueError:
            return "Неправильный формат даты. Используйте один из этих форматов: DD.MM.YYYY."
        return "" if _DATE.fullmatch(value) else "Неправильный формат даты."
    if spec.kind == "decimal":
        return "" if _DECIMAL.fullmatch(value) else "Введите правильное число."
    return "" if value.isascii() and value.isdigit() else "Введите целое число."


def _field_problems(fields: Mapping[str, str]) -> dict[str, list[str]]:
    problems: dict[str, list[str]] = {}
    if fields.get("user_notified") not in ("0", "1"):
        problems["user_notified"] = ["Обязательное поле: 1 или 0"]
    if fields.get("test_mode", "0") not in ("0", "1"):
        problems["test_mode"] = ["1 или 0"]
    for name, value in fields.items():
        if name in FIELDS:  # Admitad ignores what it does not know
            problem = _field_problem(name, value)
            if problem:
                problems[name] = [problem]
    return problems


def _list_problem(q: Mapping[str, str]) -> str:
    """A list query's broken parameter, in Admitad's words; empty when it is fine."""
    for key in ("offset", "limit", "id", "campaign"):
        if key in q and not q[key].isdigit():
            return f"{key}: Введите целое число."
    if q.get("order_by", "date_created") not in ("date_created", "-date_created"):
        return "order_by: Недопустимое значение."
    if q.get("status", "processing") not in STATUSES:
        return "status: Недопустимое значение."
    for key in ("date_start", "date_end"):
        if q.get(key):
            try:
                _day(q[key])
            except ValueError:
                return f"{key}: Неправильный формат даты."
    return ""


def _any_accepted(responses: list[dict[str, Any]]) -> bool:
    return any(r["status"] in ("waiting", "approved") for r in responses)


def _matches(app: Mapping[str, Any], q: Mapping[str, str]) -> bool:
    if q.get("id") and str(app["id"]) != q["id"]:
        return False
    if any(q.get(key) and app.get(key) != q[key] for key in SUBIDS):
        return False
    start, end = _day(q.get("date_start")), _day(q.get("date_end"))
    return (start is None or app["date"] >= start) and (end is None or app["date"] <= end)


def _day(value: str | None) -> date | None:
    return datetime.strptime(value, "%d.%m.%Y").replace(tzinfo=UTC).date() if value else None


def create_app(
    client_id: str = "client",
    client_secret: str = "secret",  # noqa: S107 - the sandbox's own, documented default
    website_id: int = 1,
    campaigns: Mapping[int, list[dict[str, Any]]] | None = None,
    *,
    outcomes: Mapping[int, str] | None = None,
    decide_after: float = 1.0,
    minute: float = 60.0,
    max_tokens: int = 10,
    per_minute: int = 600,
    sms_code: str = "1234",
) -> ASGIApp:
    """
    The Admitad emulator. `campaigns`: program id → its campaign_settings rules
    (programs not listed take no broker applications); `outcomes`: a program's
    final status (`approved` by default; `declined` or `error`); `decide_after`:
    seconds a program's response stays `processing` (and then `waiting`);
    `minute`: seconds per pause minute of a server-side algorithm; `max_tokens`:
    live tokens before `error_code` 6; `per_minute`: requests a minute per
    application before 503 `error_code` 4; `sms_code`: the code a bank accepts.
    """
    state = SandboxState()
    admitad = Admitad(
        state,
        client_id=client_id,
        client_secret=client_secret,
        website_id=website_id,
        campaigns=dict(campaigns if campaigns is not None else DEFAULT_CAMPAIGNS),
        outcomes=dict(outcomes or {}),
        decide_after=decide_after,
        minute=minute,
        max_tokens=max_tokens,
        per_minute=per_minute,
        sms_code=sms_code,
    )
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
    return build_app(routes, state)


#: programs that take broker applications, with the document's example rules on one
DEFAULT_CAMPAIGNS: dict[int, list[dict[str, Any]]] = {
    17809: [],
    16126: [],
    17288: [],
    16651: [],
    16633: [],
    65: [],
    17810: [
        {"field_name": "first_name", "regexp": "^[a-zA-Z]+$", "required": True, "description": ""},
        {"field_name": "middle_name", "regexp": "", "required": True, "description": ""},
    ],
}
