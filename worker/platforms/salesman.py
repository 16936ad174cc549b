"""
SalesMan CRM, developer API v1: `{base_url}/developer/v1/leads`, `action=add|list|info|stat`.

One lead a request (`action=add`; the API has no batch). We send it as a
form-encoded POST, so the `apikey` never sits in a URL that proxies log; the
`apikey` still travels in the body, so it is in `SECRET_FIELDS` for redaction.

SalesMan answers HTTP 200 for errors too, often as `text/html`: the body
decides, never the status (429, 503 and 5xx are read first, as for every
platform).

=====================================================  ============================
answer to `add`                                        outcome
=====================================================  ============================
`{"result": {"text": "Success", "id": N}}`             Delivered, external id N
`{"result": "Error", "error": {"code": "400"|…}}`      Suspended: wrong key (400),
                                                       unknown user (401), unknown
                                                       method (402); codes are strings
`{"error": {"code": "1", "text": …}, "Error": …}`      Rejected with SalesMan's text
(no `result` key: a failed add)
anything that is not JSON (a PHP error page), 5xx      Failed, in doubt
=====================================================  ============================

SalesMan has no deduplication: an add sent twice makes two leads, and each
sends e-mail to a manager. So every add carries a marker, `[lr:<lead id>]`, at
the end of its `description` (or `path`), and an add that may have arrived is
looked up before it is sent again. "May have arrived" covers a lost answer and
also a PHP error page or a 5xx: PHP can fail after the insert (the e-mail to the
manager is sent after it), so those are `Failed(in_doubt=True)`, not a plain
retry.

The lookup and the status reconciliation read `action=list`, whose pages hold
200 records, newest first, from the day before the lead was accepted
(`dateStart` means "created after that date", and the CRM's clock may be in
another zone than ours). A lookup that finds no marker on a full page asks
for the next one (the loop allows `LOOKUP_PAGES`), so a lead with thousands
of newer ones above it is still found; only past that depth is it sent again,
flagged in doubt. Reconciliation reads the newest page only, and simply stops
seeing a lead buried deeper. `list_request(page=…)` builds any page for ops.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from worker.config import DestinationConfig
from worker.errors import PlatformContractError
from worker.leads import Delivery, LeadState, Platform
from worker.outcomes import (
    Answer,
    Delivered,
    Failed,
    LeadOutcome,
    NotSeen,
    Rejected,
    StatusUpdate,
    Suspended,
    Throttled,
)
from worker.platforms.base import Adapter, json_body, transport_status, validate_model

LEADS_PATH = "/developer/v1/leads"
#: records on one `action=list` page, as SalesMan documents
PAGE = 200
#: request fields that hold a secret: masked wherever a request is recorded
SECRET_FIELDS = ("apikey",)
#: request fields that hold a person's data: masked in records, never in messages
PERSONAL_FIELDS = ("phone", "email", "title", "ip")
#: the longest text field we send, and the longest description
TEXT_MAX = 255
DESCRIPTION_MAX = 5000

#: `{"result": "Error"}` codes (strings): each means the destination cannot work
AUTH_ERRORS = {
    "400": "SalesMan refused the API key (400)",
    "401": "SalesMan does not know the login (401)",
    "402": "SalesMan does not know the method (402)",
}
STATUS_NAMES = {"0": "Открыт", "1": "В работе", "2": "Обработан", "3": "Закрыт"}
REZULT_NAMES = {"1": "Спам", "2": "Дубль", "3": "Другое", "4": "Не целевой"}

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE = re.compile(r"\+?[0-9 ()\-]+")
#: where a JSON answer starts when PHP printed notices before it
_JSON_START = re.compile(r'\{\s*"(?:result|error|Error|data)"')


class SalesmanDestination(DestinationConfig):
    """
    A SalesMan CRM account: its login and API key; one lead a request, gently paced.

    The defaults are deliberately slow (1 request/s, burst 1, one in flight):
    SalesMan has no limiter of its own, and every add e-mails a manager.
    """

    platform: Literal[Platform.SALESMAN]
    login: str = Field(min_length=1)
    api_key: SecretStr
    rate: float = Field(default=1.0, gt=0)
    burst: int = Field(default=1, ge=1)
    concurrency: int = Field(default=1, ge=1)
    batch_size: int = 1
    #: where the `[lr:<id>]` marker goes, to find a lead whose answer was lost;
    #: `path` is matched against the CRM's sources, so `description` is the safe default
    marker_field: Literal["description", "path"] = "description"
    #: how often and for how long delivered leads' CRM status is brought in
    poll_interval: float = Field(default=900.0, gt=0)
    poll_horizon: timedelta = timedelta(days=7)

    @field_validator("batch_size")
    @classmethod
    def _one_a_request(cls, value: int) -> int:
        if value != 1:
            raise ValueError("must be 1: SalesMan's add takes one lead a request")
        return value


Text = Annotated[str, Field(min_length=1, max_length=TEXT_MAX)]


class SalesmanLead(BaseModel):
    """
    The fields of `action=add`, as SalesMan names them; every one a string.

    Blank strings count as absent. `phone` is normalised to `+` and its digits
    (`8 (900) 123-45-67` → `+79001234567`): SalesMan matches leads to clients
    by phone, so one spelling per number keeps that matching working.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=True)

    title: Text | None = None
    email: Text | None = None
    phone: Text | None = None
    company: Text | None = None
    description: Annotated[str, Field(min_length=1, max_length=DESCRIPTION_MAX)] | None = None
    ip: Text | None = None
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

    @model_validator(mode="before")
    @classmethod
    def _blank_is_absent(cls, raw: Any) -> Any:
        if isinstance(raw, Mapping):
            return {k: v for k, v in raw.items() if not (isinstance(v, str) and not v.strip())}
        return raw

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.fullmatch(value):
            raise ValueError("an e-mail address: name@domain.tld")
        return value

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        """`+` and 10 to 15 digits; a Russian `8…` or 10-digit number becomes `+7…`."""
        if value is None:
            return None
        if not _PHONE.fullmatch(value):
            raise ValueError("digits, spaces, brackets, dashes and a leading +")
        digits = re.sub(r"[^0-9]", "", value)
        if len(digits) == 11 and digits[0] == "8":
            digits = "7" + digits[1:]
        elif len(digits) == 10:
            digits = "7" + digits
        if not 11 <= len(digits) <= 15:
            raise ValueError("10 to 15 digits (a Russian number: +7 and 10 digits)")
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


def form_request(dest: SalesmanDestination, action: str, **params: str) -> httpx.Request:
    """A form-encoded POST of `action` with the credentials in the body, never the URL."""
    data = {"login": dest.login, "apikey": dest.api_key.get_secret_value(), "action": action}
    return httpx.Request("POST", dest.base_url + LEADS_PATH, data={**data, **params})


def list_request(
    dest: SalesmanDestination,
    *,
    page: int = 0,
    date_start: date | None = None,
    date_end: date | None = None,
    first: Literal["new", "old"] = "new",
) -> httpx.Request:
    """
    One `action=list` page (200 records), by creation date.

    SalesMan's filters are strict: `dateStart` gives records created after
    that date, `dateEnd` records created before it.
    """
    params = {"offset": str(page), "order": "datum", "first": first}
    if date_start is not None:
        params["dateStart"] = date_start.isoformat()
    if date_end is not None:
        params["dateEnd"] = date_end.isoformat()
    return form_request(dest, "list", **params)


def info_request(external_id: str, dest: SalesmanDestination) -> httpx.Request:
    """`action=info&id=…`: the CRM's record of one lead."""
    return form_request(dest, "info", id=external_id)


def crm_state(record: Mapping[str, Any]) -> dict[str, str]:
    """A record's status and result, each with its name (ours when the CRM omits it)."""
    status, rezult = _text(record.get("status")), _text(record.get("rezult"))
    return {
        "status": status,
        "status_name": _text(record.get("statusName")) or STATUS_NAMES.get(status, ""),
        "rezult": rezult,
        "rezult_name": _text(record.get("rezultName")) or REZULT_NAMES.get(rezult, ""),
    }


def records(response: httpx.Response) -> list[Mapping[str, Any]]:
    """
    The records of a `list` answer.

    Raises PlatformContractError (naming SalesMan's error code, never the body)
    when the answer is not a list: an empty page and an unreadable one must
    not look alike, or a lookup would send a lead again on a broken answer.
    """
    body = _body(response)
    data = body.get("data") if isinstance(body, Mapping) else None
    if not isinstance(data, list):
        raise PlatformContractError(f"SalesMan's list answer has no data list ({_why(body)})")
    return [r for r in data if isinstance(r, Mapping)]


class SalesmanAdapter(Adapter[SalesmanDestination]):
    """Pure adapter for SalesMan CRM's `leads` method."""

    platform = Platform.SALESMAN
    config_model = SalesmanDestination
    max_batch = 1
    deduplicates = False
    reconciles = True

    def validate(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        return validate_model(SalesmanLead, raw).model_dump(exclude_none=True)

    def build_request(
        self, deliveries: Sequence[Delivery], dest: SalesmanDestination
    ) -> httpx.Request:
        """`action=add` for the one delivery, its marker at the end of `dest.marker_field`."""
        (delivery,) = deliveries
        fields = {k: str(v) for k, v in delivery.payload.items()}
        tagged = fields.get(dest.marker_field, "")
        fields[dest.marker_field] = f"{tagged} {marker(delivery.lead_id)}".strip()
        return form_request(dest, "add", **fields)

    def parse_response(
        self, response: httpx.Response, deliveries: Sequence[Delivery], dest: SalesmanDestination
    ) -> Answer:
        """The body decides (see the table above); never raises."""
        transport = transport_status(response)
        if isinstance(transport, Failed):  # PHP may have failed after the insert
            return Failed(transport.reason, in_doubt=True)
        if transport is not None:
            return transport
        try:
            body = _body(response)
        except PlatformContractError as exc:
            return Failed(f"SalesMan answered a page that is not JSON ({exc})", in_doubt=True)
        outcome = add_outcome(body)
        return outcome if isinstance(outcome, Suspended | Failed) else [outcome]

    def build_lookup(
        self, delivery: Delivery, dest: SalesmanDestination, now: datetime, page: int = 0
    ) -> httpx.Request | None:
        """Page `page` of the leads since the day before this one was accepted, newest first."""
        return list_request(dest, page=page, date_start=_day_before(delivery.created_at))

    def parse_lookup(
        self, response: httpx.Response, delivery: Delivery, dest: SalesmanDestination
    ) -> LeadOutcome | NotSeen | None:
        """
        Delivered when a record carries this lead's marker; NotSeen when none
        does on a full page (older pages may); None when none does at all.

        Raises PlatformContractError when the answer is not a list (an error
        code, a PHP page): the loop then looks again later instead of sending.
        """
        tag = marker(delivery.lead_id)
        page = records(response)
        for record in page:
            if any(tag in str(value) for value in record.values()):
                return Delivered(
                    external_id=_text(record.get("id")) or None,
                    detail="found in the CRM after an answer was lost",
                    data={"crm": crm_state(record)},
                )
        return NotSeen() if len(page) >= PAGE else None

    def build_poll(
        self, deliveries: Sequence[Delivery], dest: SalesmanDestination, now: datetime
    ) -> httpx.Request | None:
        """The newest page of leads since the day before the oldest of these was accepted."""
        if not deliveries:
            return None
        return list_request(dest, date_start=_day_before(min(d.created_at for d in deliveries)))

    def parse_poll(
        self, response: httpx.Response, deliveries: Sequence[Delivery], dest: SalesmanDestination
    ) -> Sequence[StatusUpdate | None] | Throttled | Failed:
        """
        A StatusUpdate (still DELIVERED: the CRM's status is information, not
        our state) for each lead whose known status (0–3) or result changed;
        the detail reads `statusName/rezultName`, data holds them under `crm`.
        """
        transport = transport_status(response)
        if transport is not None:
            return transport
        try:
            by_id = {_text(r.get("id")): r for r in records(response)}
        except PlatformContractError as exc:
            return Failed(str(exc))
        return [_status_update(by_id.get(str(d.external_id)), d) for d in deliveries]

    def build_info(self, delivery: Delivery, dest: SalesmanDestination) -> httpx.Request | None:
        """`action=info&id=…` for a delivered lead; None before SalesMan gave it an id."""
        if delivery.external_id is None:
            return None
        return info_request(delivery.external_id, dest)

    def parse_info(self, response: httpx.Response) -> dict[str, Any]:
        """
        The lead's CRM state: status and result with their names, dates, the
        manager's name; or `{"error": …}` naming what went wrong. Never raises.
        """
        try:
            body = _body(response)
        except PlatformContractError as exc:
            return {"error": str(exc)}
        record = body.get("data") if isinstance(body, Mapping) else None
        if not isinstance(record, Mapping) or not record:
            return {"error": f"no such lead in the CRM ({_why(body)})"}
        return {
            "id": _text(record.get("id")),
            **crm_state(record),
            "datum": _text(record.get("datum")),
            "datum_do": _text(record.get("datum_do")),
            "user": _text(record.get("userName")),
        }

    def build_stat(self, dest: SalesmanDestination) -> httpx.Request:
        """`action=stat`: open and processed leads of each active manager this month."""
        return form_request(dest, "stat")

    def parse_stat(self, response: httpx.Response) -> dict[str, Any]:
        """`{"managers": [{"login", "open", "processed"}, …]}` or `{"error": …}`. Never raises."""
        try:
            body = _body(response)
        except PlatformContractError as exc:
            return {"error": str(exc)}
        data = body.get("data") if isinstance(body, Mapping) else None
        if not isinstance(data, list):
            return {"error": f"SalesMan's stat answer has no data list ({_why(body)})"}
        return {
            "managers": [
                {
                    "login": _text(row.get("title")),
                    "open": _count(row.get("open")),
                    "processed": _count(row.get("processed")),
                }
                for row in data
                if isinstance(row, Mapping)
            ]
        }


def add_outcome(body: Any) -> LeadOutcome | Suspended | Failed:
    """What SalesMan's JSON answer to `action=add` means for the lead and the destination."""
    if not isinstance(body, Mapping):
        return Failed("SalesMan answered JSON that is not an object")
    result, error = body.get("result"), body.get("error")
    code = _text(error.get("code")) if isinstance(error, Mapping) else ""
    if isinstance(result, Mapping):
        if result.get("id") is None:  # "Success" without an id: look before sending again
            return Failed("SalesMan answered success without an id", in_doubt=True)
        return Delivered(external_id=_text(result["id"]), detail=_text(result.get("text")))
    if result == "Error":
        if code in AUTH_ERRORS:
            return Suspended(AUTH_ERRORS[code])
        return Failed(f"SalesMan answered error code {code or 'none'}")
    if isinstance(error, Mapping) and "result" not in body:
        words = _text(error.get("text")) or _text(body.get("Error")) or f"code {code}"
        return Rejected(f"SalesMan refused the lead: {words}")
    return Failed("SalesMan answered a shape we do not know")


def _status_update(record: Mapping[str, Any] | None, delivery: Delivery) -> StatusUpdate | None:
    if record is None:
        return None
    crm = crm_state(record)
    if crm["status"] not in STATUS_NAMES or delivery.data.get("crm") == crm:
        return None
    detail = "/".join(x for x in (crm["status_name"], crm["rezult_name"]) if x)
    return StatusUpdate(LeadState.DELIVERED, detail, {"crm": crm})


def _body(response: httpx.Response) -> Any:
    """
    The answer's JSON. PHP notices printed before it are skipped: the JSON
    after them is still SalesMan's answer. PlatformContractError when there is none.
    """
    try:
        return json_body(response)
    except PlatformContractError:
        text = response.content.decode("utf-8", errors="replace")
        start = _JSON_START.search(text)
        if start is None:
            raise
        try:
            body, _ = json.JSONDecoder().raw_decode(text, start.start())
        except ValueError:
            raise PlatformContractError(
                f"HTTP {response.status_code} answer is not JSON (broken after PHP output)"
            ) from None
        return body


def _why(body: Any) -> str:
    """A short reason for an answer without data: SalesMan's code and its meaning."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        return "no error code"
    code = _text(error.get("code"))
    return AUTH_ERRORS.get(code, f"error code {code or 'none'}")


def _day_before(when: datetime) -> date:
    return (when - timedelta(days=1)).date()


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _count(value: Any) -> int:
    text = _text(value)
    return int(text) if text.isdigit() else 0
