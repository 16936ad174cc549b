"""
Admitad broker applications: create (and sync_create + confirm for banks with SMS
verification), list for status polling, campaign_settings for each program's rules.

Auth is OAuth2 client credentials (`auth.py`), one token per destination shared
through the cache. Error bodies are `{"error", "error_description", "error_code"}`:
503 with `error_code` 4 is Admitad's rate limit (600 requests/minute per
application) and is read like another platform's 429; `error_code` 2 (no rights)
pauses the destination.

Staging runs on our side by default (`staging = "client"`): each stage of the
normalised `campaigns` is its own application, sent when the stage before it is
decided (`worker.staging`). `staging = "server"` hands Admitad the whole algorithm
in one create and follows its `responses`.

Admitad has no idempotency key: our lead id goes in `subid_field`, and a create
whose answer was lost is looked up by it before it is sent again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

import httpx
from pydantic import Field, SecretStr

from worker import staging
from worker.config import DestinationConfig
from worker.errors import FieldError, LeadInvalid, PlatformContractError
from worker.leads import Delivery, LeadState, Platform
from worker.outcomes import (
    Answer,
    Delivered,
    Failed,
    LeadOutcome,
    Pending,
    Rejected,
    StatusUpdate,
    Suspended,
    Throttled,
)
from worker.platforms.admitad import campaigns as campaign_notation
from worker.platforms.admitad import rules
from worker.platforms.admitad.auth import AdmitadAuth, error_code
from worker.platforms.base import Adapter, KeyValueCache, Prerequisite, json_body

FINAL = {"approved", "declined", "error"}


class AdmitadDestination(DestinationConfig):
    """An Admitad website (`w_id`) and its OAuth2 application."""

    platform: Literal[Platform.ADMITAD]
    website_id: int = Field(gt=0)
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    staging: Literal["client", "server"] = "client"
    #: the statuses that count as the advertiser taking an application (for staging)
    accepted_statuses: frozenset[str] = frozenset({"waiting", "approved"})
    #: where our lead id goes, to find an application whose answer was lost
    subid_field: Literal["subid", "subid1", "subid2", "subid3", "subid4"] = "subid4"
    test_mode: bool = False
    rate: float = Field(default=10.0, gt=0)  # Admitad: 600 requests a minute per application
    batch_size: Literal[1] = 1
    poll_interval: float = Field(default=60.0, gt=0)
    #: how long a bank waits for the user's SMS code
    code_ttl: timedelta = timedelta(minutes=15)
    #: how long a program's campaign_settings are trusted
    settings_ttl: timedelta = timedelta(hours=1)
    #: how long one minute of a stage's `pause` lasts (a minute; shorter in tests and demos)
    pause_minute: timedelta = timedelta(minutes=1)


def _other_field(name: str, value: Any) -> tuple[Any, FieldError | None]:
    """An application field, `test_mode` or `sms_verification`: its clean value or the rule."""
    if name == "test_mode":
        if value not in (0, 1, "0", "1", True, False):
            return None, FieldError("test_mode", "1 or 0")
        return int(value in (1, "1", True)), None
    if name == "sms_verification":
        return value, None if isinstance(value, bool) else FieldError(name, "true or false")
    if name not in rules.FIELDS:
        return None, FieldError(
            name or "(a field with no name)", "not a field of Admitad's application"
        )
    return rules.check_field(name, value)


def _user_notified(value: Any) -> FieldError | None:
    if value in (1, "1", True):
        return None
    return FieldError(
        "user_notified",
        "must be 1: the user has not agreed to the transfer, and Admitad drops such an "
        "application without a word",
    )


class AdmitadAdapter(Adapter[AdmitadDestination]):
    """Pure adapter for Admitad's broker applications."""

    platform = Platform.ADMITAD
    config_model = AdmitadDestination
    max_batch = 1
    deduplicates = False

    # ----------------------------------------------------------- the door

    def validate(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(raw, Mapping):
            raise LeadInvalid.one("lead", "must be a JSON object")
        errors: list[FieldError] = []
        out: dict[str, Any] = {"user_notified": 1}
        try:
            out["campaigns"] = [
                s.to_json() for s in campaign_notation.normalise(raw.get("campaigns"))
            ]
        except LeadInvalid as exc:
            errors += exc.errors
        notified = _user_notified(raw.get("user_notified"))
        if notified:
            errors.append(notified)
        for name, value in raw.items():
            if name not in ("campaigns", "user_notified"):
                clean, error = _other_field(str(name), value)
                errors += [error] if error else []
                out[name] = clean
        if out.get("sms_verification") and [len(s["ids"]) for s in out.get("campaigns", [])] != [1]:
            errors.append(FieldError("campaigns", "one program for an SMS-verified application"))
        if errors:
            raise LeadInvalid(errors)
        return out

    def stages(self, payload: Mapping[str, Any], dest: AdmitadDestination) -> int:
        if dest.staging == "server" or payload.get("sms_verification"):
            return 1
        return len(payload["campaigns"])

    # ----------------------------------------------------------- sending

    def _url(self, dest: AdmitadDestination, tail: str) -> str:
        return f"{dest.base_url}/website/{dest.website_id}/broker/applications/{tail}"

    def _stage_ids(self, delivery: Delivery, dest: AdmitadDestination) -> list[int]:
        stages = campaign_notation.from_payload(delivery.payload["campaigns"])
        if dest.staging == "server" or delivery.stage == 0:
            return [i for s in stages for i in s.ids]
        return list(stages[delivery.stage - 1].ids)

    def _fields(self, delivery: Delivery, dest: AdmitadDestination) -> dict[str, str]:
        fields = {
            k: str(v)
            for k, v in delivery.payload.items()
            if k not in ("campaigns", "test_mode", "sms_verification", "user_notified")
        }
        fields["user_notified"] = "1"
        fields[dest.subid_field] = delivery.lead_id
        if dest.test_mode or delivery.payload.get("test_mode"):
            fields["test_mode"] = "1"
        return fields

    def build_request(
        self, deliveries: Sequence[Delivery], dest: AdmitadDestination
    ) -> httpx.Request:
        (delivery,) = deliveries
        fields = self._fields(delivery, dest)
        if delivery.payload.get("sms_verification"):
            fields["campaign_id"] = str(self._stage_ids(delivery, dest)[0])
            return httpx.Request("POST", self._url(dest, "sync_create/"), data=fields)
        if dest.staging == "server" and delivery.stage == 0:
            stages = campaign_notation.from_payload(delivery.payload["campaigns"])
            fields["campaigns"] = json.dumps(campaign_notation.to_algorithm(stages))
        else:
            fields["campaigns"] = json.dumps(self._stage_ids(delivery, dest))
        return httpx.Request("POST", self._url(dest, "create/"), data=fields)

    def auth(self, dest: AdmitadDestination, cache: KeyValueCache) -> httpx.Auth | None:
        return AdmitadAuth(dest, cache)

    def parse_response(
        self, response: httpx.Response, deliveries: Sequence[Delivery], dest: AdmitadDestination
    ) -> Answer:
        refusal = _refusal(response)
        if refusal is not None:
            return refusal
        try:
            body = json_body(response)
        except PlatformContractError as exc:
            return Failed(str(exc))
        if not isinstance(body, Mapping):
            return Failed("Admitad answered JSON that is not an object")
        if response.status_code >= 400:
            words = body.get("error_description") or json.dumps(body, ensure_ascii=False)[:500]
            return [Rejected(f"Admitad refused the application: {words}")]
        return [_created(body, dest)]

    # ----------------------------------------------------------- staging

    def next_stage_due(
        self,
        delivery: Delivery,
        dest: AdmitadDestination,
        state: LeadState,
        data: Mapping[str, Any],
        now: datetime,
    ) -> datetime | None:
        stages = delivery.payload.get("campaigns", [])
        if dest.staging == "server" or delivery.stage <= 0 or delivery.stage >= len(stages):
            return None
        if state in (LeadState.REJECTED, LeadState.DEAD, LeadState.EXPIRED, LeadState.ERROR):
            verdict: staging.Verdict = "refused"
        else:
            statuses = [str(r.get("status")) for r in data.get("responses", [])]
            verdict = staging.decide(statuses, dest.accepted_statuses)
        pause = int(stages[delivery.stage].get("pause", 0))
        return staging.next_stage_due(verdict, pause, now, dest.pause_minute)

    # ----------------------------------------------------------- rules of the programs

    def prerequisites(self, delivery: Delivery, dest: AdmitadDestination) -> Sequence[Prerequisite]:
        return [
            Prerequisite(
                key=f"leadrelay:admitad:settings:{dest.name}:{c_id}",
                request=httpx.Request("GET", f"{dest.base_url}/broker/campaign_settings/{c_id}/"),
                ttl=dest.settings_ttl,
            )
            for c_id in self._stage_ids(delivery, dest)
        ]

    def check(
        self, delivery: Delivery, dest: AdmitadDestination, answers: Mapping[str, str]
    ) -> LeadOutcome | None:
        errors: list[FieldError] = []
        for c_id in self._stage_ids(delivery, dest):
            text = answers.get(f"leadrelay:admitad:settings:{dest.name}:{c_id}")
            if text is None:
                continue
            try:
                program = rules.parse_settings(text)
            except ValueError:
                continue
            errors += rules.check_program(delivery.payload, c_id, program)
        if not errors:
            return None
        return Rejected(
            "; ".join(str(e) for e in errors), data={"program_rules": [str(e) for e in errors]}
        )

    # ----------------------------------------------------------- lookups and polling

    def build_lookup(
        self, delivery: Delivery, dest: AdmitadDestination, now: datetime
    ) -> httpx.Request | None:
        params = {dest.subid_field: delivery.lead_id, "limit": "20"}
        return httpx.Request("GET", self._url(dest, ""), params=params)

    def parse_lookup(
        self, response: httpx.Response, delivery: Delivery, dest: AdmitadDestination
    ) -> LeadOutcome | None:
        wanted = set(self._stage_ids(delivery, dest))
        for record in _results(response):
            if str(record.get(dest.subid_field)) != delivery.lead_id:
                continue
            ids = {int(i) for s in record.get("algorithm") or [] for i in s.get("ids", [])}
            ids |= {int(r.get("campaign_id", 0)) for r in record.get("responses") or []}
            if ids & wanted:
                return Pending(
                    external_id=str(record.get("id")),
                    detail="found at Admitad after the answer to the create was lost",
                    data={"responses": record.get("responses") or []},
                )
        return None

    def build_poll(
        self, deliveries: Sequence[Delivery], dest: AdmitadDestination, now: datetime
    ) -> httpx.Request | None:
        """One list request covers every application since the oldest one asked about."""
        oldest = min(d.created_at for d in deliveries) - timedelta(days=1)
        params = {
            "date_start": oldest.strftime("%d.%m.%Y"),
            "limit": "500",
            "order_by": "-date_created",
        }
        return httpx.Request("GET", self._url(dest, ""), params=params)

    def parse_poll(
        self, response: httpx.Response, deliveries: Sequence[Delivery], dest: AdmitadDestination
    ) -> Sequence[StatusUpdate | None] | Throttled | Failed:
        refusal = _refusal(response)
        if isinstance(refusal, Throttled | Failed):
            return refusal
        by_id = {str(r.get("id")): r for r in _results(response)}
        return [_status(by_id.get(str(d.external_id)), d) for d in deliveries]

    # ----------------------------------------------------------- SMS verification

    def build_confirm(
        self, application_id: str, code: str, dest: AdmitadDestination
    ) -> httpx.Request:
        """`sync_create/{a_id}/confirm` with the code the user received."""
        return httpx.Request(
            "POST", self._url(dest, f"sync_create/{application_id}/confirm"), data={"code": code}
        )

    def parse_confirm(
        self, response: httpx.Response
    ) -> LeadOutcome | Failed | Suspended | Throttled:
        refusal = _refusal(response)
        if refusal is not None:
            return refusal
        body = json_body(response)
        if response.status_code >= 400 or not isinstance(body, Mapping):
            return Rejected(f"Admitad refused the code: {body}")
        status = str(body.get("status", ""))
        if status == "waiting_sms_verification":
            return Pending(
                str(body.get("application_id")),
                "the bank still waits for a right code",
                {"status": status},
                state=LeadState.WAITING_CODE,
            )
        return Pending(
            str(body.get("application_id") or ""), f"confirmed: {status}", {"status": status}
        )


def _refusal(response: httpx.Response) -> Throttled | Failed | Suspended | None:
    """Admitad's error answers that concern the request, not the application."""
    if response.status_code in (429, 503):
        return Throttled(reason=f"HTTP {response.status_code} (error_code {error_code(response)})")
    if response.status_code >= 500:
        return Failed(f"HTTP {response.status_code}")
    if response.status_code in (401, 403):
        code = error_code(response)
        why = "no rights for this call" if code == 2 else "the token was refused"
        return Suspended(f"Admitad: {why} (error_code {code})")
    return None


def _created(body: Mapping[str, Any], dest: AdmitadDestination) -> LeadOutcome:
    responses = list(body.get("responses") or [])
    errors = list(body.get("errors") or [])
    data = {"responses": responses, "errors": errors, "algorithm": body.get("algorithm") or []}
    if body.get("status") == "waiting_sms_verification":
        return Pending(
            str(body.get("application_id")),
            "waiting for the user's SMS code",
            {"status": body.get("status")},
            state=LeadState.WAITING_CODE,
            wait=dest.code_ttl,
        )
    if body.get("id") is None:
        return Delivered(detail="test mode: Admitad created no application", data=data)
    if not responses and errors:
        words = "; ".join(f"{e.get('campaign_id')}: {e.get('message')}" for e in errors)
        return Rejected(f"no program took the application: {words}", data=data)
    return Pending(str(body["id"]), _summary(responses), data)


def _summary(responses: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(f"{r.get('campaign_id')}: {r.get('status')}" for r in responses)


def _results(response: httpx.Response) -> list[Mapping[str, Any]]:
    try:
        body = json_body(response)
    except PlatformContractError:
        return []
    results = body.get("results") if isinstance(body, Mapping) else None
    return [r for r in results if isinstance(r, Mapping)] if isinstance(results, list) else []


def _status(record: Mapping[str, Any] | None, delivery: Delivery) -> StatusUpdate | None:
    """The application's state from its programs' statuses; None when nothing changed."""
    if record is None:
        return None
    responses = list(record.get("responses") or [])
    if responses == list(delivery.data.get("responses") or []):
        return None
    statuses = {str(r.get("status")) for r in responses}
    if not responses or not statuses <= FINAL:
        return StatusUpdate(
            LeadState.AWAITING_STATUS, _summary(responses), {"responses": responses}
        )
    if "approved" in statuses:
        state = LeadState.APPROVED
    elif "declined" in statuses:
        state = LeadState.DECLINED
    else:
        state = LeadState.ERROR
    return StatusUpdate(state, _summary(responses), {"responses": responses})
