"""
SalesMan CRM, developer API v1: `{base_url}/developer/v1/leads?action=…`.

One lead a request (`action=add`; the API has no batch). We send it as a
form-encoded POST, so the `apikey` never sits in a URL that proxies log.

SalesMan answers HTTP 200 for errors too, often as `text/html`: the body
decides, never the status.

=====================================================  ===========================
answer                                                 outcome
=====================================================  ===========================
`{"result": {"text": "Success", "id": N}}`             Delivered, id N
`{"result": "Error", "error": {"code": "400"|…}}`      Suspended: wrong key (400),
                                                       unknown user (401), unknown
                                                       method (402); codes are strings
`{"error": {"code": "1", "text": …}, "Error": …}`      Rejected: a failed add
anything that is not JSON (a PHP error page)           Failed (transient)
=====================================================  ===========================

SalesMan has no deduplication: an add sent twice makes two leads, and each
sends e-mail. So every add carries a marker, `[lr:<lead id>]`, at the end of
its `description` (or `path`), and an add whose answer was lost is looked up
(`action=list`, newest first, from the day before the lead was accepted)
before it is sent again. A list page holds 200 records: a CRM taking more than
200 leads between the lost add and the lookup could hide it on a later page,
and the lead would be sent again (recorded as such).

Delivered leads are reconciled: `action=list` pages bring the CRM's status
(0–3) and result (1–4) of recent leads into the ledger.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from worker.config import DestinationConfig
from worker.errors import PlatformContractError
from worker.leads import Delivery, LeadState, Platform
from worker.outcomes import (
    Answer,
    Delivered,
    Failed,
    LeadOutcome,
    Rejected,
    StatusUpdate,
    Suspended,
)
from worker.platforms.base import Adapter, json_body, validate_model

LEADS_PATH = "/developer/v1/leads"
#: the list page size SalesMan documents
PAGE = 200
#: the fields that are secret or personal in a SalesMan request (for redaction checks)
SECRET_FIELDS = ("apikey",)
PERSONAL_FIELDS = ("phone", "email", "title", "ip")

AUTH_ERRORS = {
    "400": "SalesMan refused the API key (400)",
    "401": "SalesMan does not know the login (401)",
    "402": "SalesMan does not know the method (402)",
}
STATUS_NAMES = {"0": "Открыт", "1": "В работе", "2": "Обработан", "3": "Закрыт"}
REZULT_NAMES = {"1": "Спам", "2": "Дубль", "3": "Другое", "4": "Не целевой"}

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE = re.compile(r"\+?[0-9 ()\-]+")


class SalesmanDestination(DestinationConfig):
    """A SalesMan CRM account: its login and API key; one lead a request, gently paced."""

    platform: Literal[Platform.SALESMAN]
    login: str = Field(min_length=1)
    api_key: SecretStr
    # the server has no limiter of its own and e-mails someone on every add
    rate: float = Field(default=1.0, gt=0)
    concurrency: int = Field(default=1, ge=1)
    batch_size: Literal[1] = 1
    #: where the `[lr:<id>]` marker goes, to find a lead whose answer was lost
    marker_field: Literal["description", "path"] = "description"
    #: how often and for how long delivered leads' CRM status is brought in
    poll_interval: float = Field(default=900.0, gt=0)
    poll_horizon: timedelta = timedelta(days=7)


Text = Annotated[str, Field(min_length=1, max_length=255)]


class SalesmanLead(BaseModel):
    """The fields of `action=add`, as SalesMan names them; every one a string."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=True)

    title: Text | None = None
    email: Text | None = None
    phone: Text | None = None
    company: Text | None = None
    description: Annotated[str, Field(max_length=5000)] | None = None
    ip: str | None = None
    country: Text | None = None
    city: Text | None = None
    path: Text | None = None
    partner: Text | None = None
    user: Text | None = None
    utm_source: Text | None = None
    utm_medium: Text | None = None
    utm_campaign: Text | None = None
    utm_term: Text | None = None
    utm_content: Text | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.fullmatch(value):
            raise ValueError("an e-mail address: name@domain.tld")
        return value

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        """International form: `+` and 10 to 15 digits; a Russian 8… number becomes +7…."""
        if value is None:
            return None
        if not _PHONE.fullmatch(value):
            raise ValueError("digits, spaces, brackets, dashes and a leading +")
        digits = re.sub(r"[^0-9]", "", value)
        if len(digits) == 11 and digits[0] == "8":
            digits = "7" + digits[1:]
        elif len(digits) == 10:
            digits = "7" + digits
        if not 10 <= len(digits) <= 15:
            raise ValueError("10 to 15 digits")
        return "+" + digits

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError("an IPv4 or IPv6 address") from None
        return value

    @model_validator(mode="after")
    def _reachable(self) -> SalesmanLead:
        if self.phone is None and self.email is None:
            raise ValueError("phone or email: at least one, or the CRM cannot reach the person")
        return self


def marker(lead_id: str) -> str:
    """What we add to a lead so it can be found again: `[lr:<lead id>]`."""
    return f"[lr:{lead_id}]"


class SalesmanAdapter(Adapter[SalesmanDestination]):
    """Pure adapter for SalesMan CRM's `leads` method."""

    platform = Platform.SALESMAN
    config_model = SalesmanDestination
    max_batch = 1
    deduplicates = False
    reconciles = True

    def validate(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        return validate_model(SalesmanLead, raw).model_dump(exclude_none=True)

    def _form(self, dest: SalesmanDestination, action: str, **params: str) -> httpx.Request:
        data = {"login": dest.login, "apikey": dest.api_key.get_secret_value(), "action": action}
        return httpx.Request("POST", dest.base_url + LEADS_PATH, data={**data, **params})

    def build_request(
        self, deliveries: Sequence[Delivery], dest: SalesmanDestination
    ) -> httpx.Request:
        (delivery,) = deliveries
        fields = {k: str(v) for k, v in delivery.payload.items()}
        tagged = fields.get(dest.marker_field, "")
        fields[dest.marker_field] = f"{tagged} {marker(delivery.lead_id)}".strip()
        return self._form(dest, "add", **fields)

    def parse_response(
        self, response: httpx.Response, deliveries: Sequence[Delivery], dest: SalesmanDestination
    ) -> Answer:
        transport = self.throttle_or_failure(response)
        if transport is not None:
            return transport
        try:
            body = json_body(response)
        except PlatformContractError as exc:
            return Failed(f"SalesMan answered something that is not JSON ({exc})")
        outcome = _add_outcome(body)
        return outcome if isinstance(outcome, Suspended | Failed) else [outcome]

    def build_lookup(
        self, delivery: Delivery, dest: SalesmanDestination, now: datetime
    ) -> httpx.Request | None:
        since = (delivery.created_at - timedelta(days=1)).date().isoformat()
        return self._form(dest, "list", offset="0", order="datum", first="new", dateStart=since)

    def parse_lookup(
        self, response: httpx.Response, delivery: Delivery, dest: SalesmanDestination
    ) -> LeadOutcome | None:
        tag = marker(delivery.lead_id)
        for record in _records(response):
            if tag in str(record.get("content", "")) + str(record.get("description", "")):
                return Delivered(
                    external_id=str(record.get("id")),
                    detail="found in the CRM after the answer to the add was lost",
                    data={"crm": _crm_state(record)},
                )
        return None

    def build_poll(
        self, deliveries: Sequence[Delivery], dest: SalesmanDestination, now: datetime
    ) -> httpx.Request | None:
        oldest = min(d.created_at for d in deliveries)
        since = (oldest - timedelta(days=1)).date().isoformat()
        return self._form(dest, "list", offset="0", order="datum", first="new", dateStart=since)

    def parse_poll(
        self, response: httpx.Response, deliveries: Sequence[Delivery], dest: SalesmanDestination
    ) -> Sequence[StatusUpdate | None] | Failed:
        try:
            by_id = {str(r.get("id")): r for r in _records(response, strict=True)}
        except PlatformContractError as exc:
            return Failed(str(exc))
        out: list[StatusUpdate | None] = []
        for delivery in deliveries:
            record = by_id.get(str(delivery.external_id))
            if record is None:
                out.append(None)
                continue
            crm = _crm_state(record)
            if delivery.data.get("crm") == crm:
                out.append(None)
                continue
            detail = " / ".join(x for x in (crm["status_name"], crm["rezult_name"]) if x)
            out.append(StatusUpdate(LeadState.DELIVERED, f"CRM: {detail}", {"crm": crm}))
        return out

    def build_info(self, delivery: Delivery, dest: SalesmanDestination) -> httpx.Request | None:
        """`action=info&id=…`: the CRM's record of a delivered lead, for ops."""
        if delivery.external_id is None:
            return None
        return self._form(dest, "info", id=delivery.external_id)

    def parse_info(self, response: httpx.Response) -> Mapping[str, Any]:
        """The record with its status and result named (0–3: Открыт…Закрыт; 1–4: Спам…)."""
        body = json_body(response)
        record = body.get("data") if isinstance(body, Mapping) else None
        if not isinstance(record, Mapping):
            return {"error": str(body.get("error") if isinstance(body, Mapping) else body)}
        return {**_crm_state(record), "datum": record.get("datum"), "user": record.get("userName")}

    def build_stat(self, dest: SalesmanDestination) -> httpx.Request:
        """`action=stat`: open and processed leads per manager this month."""
        return self._form(dest, "stat")


def _add_outcome(body: Any) -> LeadOutcome | Suspended | Failed:
    if not isinstance(body, Mapping):
        return Failed("SalesMan answered JSON that is not an object")
    result = body.get("result")
    if isinstance(result, Mapping) and result.get("id") is not None:
        return Delivered(external_id=str(result["id"]), detail=str(result.get("text", "")))
    error = body.get("error")
    code = str(error.get("code", "")) if isinstance(error, Mapping) else ""
    if result == "Error" and code in AUTH_ERRORS:
        return Suspended(AUTH_ERRORS[code])
    if isinstance(error, Mapping) and "result" not in body:
        words = error.get("text") or body.get("Error") or f"code {code}"
        return Rejected(f"SalesMan refused the lead: {words}")
    return Failed("SalesMan answered a shape we do not know")


def _records(response: httpx.Response, strict: bool = False) -> list[Mapping[str, Any]]:
    """The `data` list of a `list` answer ([] when it has none, unless strict)."""
    try:
        body = json_body(response)
    except PlatformContractError:
        if strict:
            raise
        return []
    data = body.get("data") if isinstance(body, Mapping) else None
    if not isinstance(data, list):
        if strict:
            raise PlatformContractError("SalesMan's list answer has no data list")
        return []
    return [r for r in data if isinstance(r, Mapping)]


def _crm_state(record: Mapping[str, Any]) -> dict[str, str]:
    status, rezult = str(record.get("status", "")), str(record.get("rezult", ""))
    return {
        "id": str(record.get("id", "")),
        "status": status,
        "status_name": str(record.get("statusName") or STATUS_NAMES.get(status, "")),
        "rezult": rezult,
        "rezult_name": str(record.get("rezultName") or REZULT_NAMES.get(rezult, "")),
    }
