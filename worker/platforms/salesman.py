"""
SalesMan CRM, developer API v1: `{base_url}/developer/v1/leads`, `action=add|stat|info|list`.

One lead a request (`action=add`; the API has no batch).

Every request is a form-encoded POST, although the document's examples are GET
URLs with every parameter in the query string. The CRM reads each parameter
from the query or the form alike (its public source reads PHP's `$_REQUEST`),
the vendor's own PHP examples POST, and a POST keeps the `apikey` out of URLs,
which proxies and access logs keep. The `apikey` still travels in the body, so
it is in `SECRET_FIELDS` for redaction.

SalesMan answers HTTP 200 for errors too, often as `text/html`: the body
decides, never the status (429, 503 and 5xx are read first, as for every
platform). An error code counts wherever the body puts it (`error.code`,
`error` itself, `code`, `Error`, `result.error.code`, `result.code`; a string
or a number). The document's three codes mean the destination cannot work, so
whatever else the body holds they pause it and never reject the lead.

=====================================================  ============================
answer to `add`                                        outcome
=====================================================  ============================
error code 400, 401 or 402, in any of its places       Suspended: wrong key (400),
                                                       unknown user (401), unknown
                                                       method (402)
`{"result": {"text": "Success", "id": N}}`             Delivered, external id N
`{"error": {"code": "1", "text": …}, "Error": …}`      Rejected with SalesMan's text
(no `result` key: the public source's failed add)
anything else: another code beside `result`, a         Failed, in doubt
success without an id, a PHP error page, a 5xx
=====================================================  ============================

SalesMan has no deduplication: an add sent twice makes two leads, and each
sends e-mail to a manager. So every add carries a marker, `[lr:<lead id>]`, at
the end of its `description` (or `path`), and an add that may have arrived is
looked up before it is sent again. "May have arrived" covers a lost answer, a
PHP error page, a 5xx and any answer we cannot read: PHP can fail after the
insert (the e-mail to the manager is sent after it).

The lookup reads `action=list`, 200 records a page, newest first, created
after the day before the lead was accepted (`dateStart` means "after that
date", and the CRM's clock may be in another zone than ours). The public v1
source ignores `offset`, `order`, `first` and both dates: every page is then
the newest 200 records, the same page again. So a page without the marker
proves the lead absent only when it shows the list has ended or gone past the
lead, and never because pages ran out:

* the marker on the page: Delivered, with the CRM's id;
* a page of fewer than 200 records: the list ended, the lead is not there
  (None: send it);
* a page in newest-first order whose oldest record is stamped more than a day
  before the lead was accepted: the list went past where the lead would be,
  in any time zone (None);
* a record created before our `dateStart` (that day's own records may be
  kept by "after the date"): the CRM ignored the filters,
  so it ignores the page too and no further page can tell more; and the last
  page a lookup reads (`LOOKUP_PAGES`): the lead may be in the CRM, deeper.
  Either way it is held, not sent: it ends dead with the reason and the
  marker to look for, in doubt; ops decide;
* otherwise: NotSeen, read the next page.

The delivery loop claims in-doubt leads before fresh ones, so a lookup comes
before newer leads bury its lead.

Reconciliation pages the same way (`build_poll(…, page)`, up to `POLL_PAGES`),
reads a record's status by its CRM id, and asks about a lead alone with
`action=info&id=<CRM id>`, whose `data` is an array (the document: "В поле
“data” приходит массив с данными по заявке"); an object, as PHP encodes an
associative array, and `data` inside `result`, as the public source puts it,
are read too.

The public source answers an empty `list` with error code 404 ("Не найдено")
and no `data`; that is read as an empty page, the only reading of an empty
list it can mean.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from worker.config import DestinationConfig, Rate
from worker.errors import PlatformContractError
from worker.leads import Delivery, LeadState
from worker.outcomes import (
    Answer,
    Delivered,
    Failed,
    LeadOutcome,
    NotSeen,
    PollAnswer,
    Rejected,
    StatusUpdate,
    Suspended,
    Throttled,
)
from worker.platforms.base import Adapter, json_body, transport_status, validate_model

LEADS_PATH = "/developer/v1/leads"
#: records on one `action=list` page, as SalesMan documents
PAGE = 200
#: the pages one lookup reads: the delivery loop's own LOOKUP_PAGES; on the last
#: one a lead not proven absent is held, never sent again
LOOKUP_PAGES = 5
#: the pages of `list` one reconciliation pass reads before asking `info` lead by lead
POLL_PAGES = 5
#: a record stamped this long before our lead was accepted is older than it,
#: whatever the CRM's time zone (UTC-12 to UTC+14) and a skewed clock
OLDER_IN_ANY_ZONE = timedelta(days=1)
#: request fields that hold a secret: masked wherever a request is recorded
SECRET_FIELDS = ("apikey",)
#: request fields that hold a person's data: masked in records, never in messages
PERSONAL_FIELDS = ("phone", "email", "title", "ip")
#: the longest text field we send, and the longest description
TEXT_MAX = 255
DESCRIPTION_MAX = 5000

#: the document's error codes: each means the destination cannot work
AUTH_ERRORS = {
    "400": "SalesMan refused the API key (400)",
    "401": "SalesMan does not know the login (401)",
    "402": "SalesMan does not know the method (402)",
}
#: the public source's answer to a `list` that found nothing
LIST_EMPTY = "404"
STATUS_NAMES = {"0": "Открыт", "1": "В работе", "2": "Обработан", "3": "Закрыт"}
REZULT_NAMES = {"1": "Спам", "2": "Дубль", "3": "Другое", "4": "Не целевой"}

_PHONE = re.compile(r"\+?[0-9 ()\-]+")
#: where a JSON answer starts when PHP printed notices before it
_JSON_START = re.compile(r'\{\s*"(?:result|error|Error|data|code)"')
#: a code as text: "400", or the document's own "400 – Не верный API key"
_CODE = re.compile(r"\s*(\d+)\s*(?:[–—-].*)?", re.DOTALL)
#: a record's `datum`: a date (the document), or a date and a time (the public source)
_DATUM = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[ T](\d{2}:\d{2}(?::\d{2})?))?")


class SalesmanDestination(DestinationConfig):
    """
    A SalesMan CRM account: its login and API key; one lead a request, gently paced.

    The defaults are deliberately slow (1 request/s, burst 1, one in flight):
    SalesMan has no limiter of its own, and every add e-mails a manager.
    """

    platform: Literal["salesman"]
    login: str = Field(min_length=1)
    api_key: SecretStr
    rate: Rate = 1.0
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
    #: email-validator's syntax rules (pydantic's EmailStr; no DNS lookup)
    email: Annotated[EmailStr, Field(max_length=255)] | None = None
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
    first: Literal["new", "old", ""] = "new",
) -> httpx.Request:
    """
    One `action=list` page (200 records), by creation date.

    SalesMan's filters are strict: `dateStart` gives records created after
    that date, `dateEnd` records created before it. `first=""` leaves the
    order to the CRM's default (new), as the document's example does.
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


def error_code(body: Any) -> str:
    """
    SalesMan's error code wherever the answer puts it, as text ("" when none):
    `error.code`, `error`, `code`, `Error`, `result.error.code`, `result.code`.
    A code of the document's three wins over any other the body also holds.
    """
    if not isinstance(body, Mapping):
        return ""
    places = [body.get("error"), body.get("code"), body.get("Error")]
    result = body.get("result")
    if isinstance(result, Mapping):
        places += [result.get("error"), result.get("code")]
    codes = [_code(p.get("code") if isinstance(p, Mapping) else p) for p in places]
    codes = [c for c in codes if c]
    return next((c for c in codes if c in AUTH_ERRORS), codes[0] if codes else "")


def records(response: httpx.Response) -> list[Mapping[str, Any]]:
    """
    The records of a `list` answer.

    Raises PlatformContractError (naming SalesMan's error code, never the body)
    when the answer is not a list: an empty page and an unreadable one must
    not look alike, or a lookup would send a lead again on a broken answer.
    The public source's "not found" (code 404, no data) is an empty page.
    """
    body = _body(response)
    code = error_code(body)
    data = body.get("data") if isinstance(body, Mapping) else None
    if code in AUTH_ERRORS or (data is None and code != LIST_EMPTY):
        raise PlatformContractError(f"SalesMan's list answer has no data list ({_why(body)})")
    if data is None:
        return []
    if not isinstance(data, list):
        raise PlatformContractError("SalesMan's list answer has data that is not a list")
    return [r for r in data if isinstance(r, Mapping)]


def info_records(body: Any) -> list[Mapping[str, Any]] | None:
    """
    The records of an `info` answer's `data`: an array (the document), an object
    (one record, as PHP encodes an associative array), at the top or inside
    `result` (the public source); None when the answer has no `data` at all.
    """
    holders = [body, body.get("result")] if isinstance(body, Mapping) else []
    for holder in holders:
        data = holder.get("data") if isinstance(holder, Mapping) else None
        if isinstance(data, list):
            return [r for r in data if isinstance(r, Mapping) and _is_lead(r)]
        if isinstance(data, Mapping):
            return [data] if _is_lead(data) else []
    return None


def info_record(body: Any, external_id: str) -> Mapping[str, Any] | None:
    """The record `info` gave for `external_id`: the one with that id, or a lone one without."""
    found = info_records(body) or []
    for record in found:
        if _text(record.get("id")) == external_id:
            return record
    anonymous = [r for r in found if "id" not in r]
    return anonymous[0] if len(found) == 1 and anonymous else None


def add_outcome(body: Any) -> LeadOutcome | Suspended | Failed:
    """What SalesMan's JSON answer to `action=add` means for the lead and the destination."""
    if not isinstance(body, Mapping):
        return Failed("SalesMan answered JSON that is not an object", in_doubt=True)
    code = error_code(body)
    if code in AUTH_ERRORS:
        return Suspended(AUTH_ERRORS[code])
    result, error = body.get("result"), body.get("error")
    if isinstance(result, Mapping):
        if _text(result.get("id")) == "":  # "Success" without an id: look before sending again
            return Failed("SalesMan answered success without an id", in_doubt=True)
        return Delivered(external_id=_text(result["id"]), detail=_text(result.get("text")))
    if isinstance(error, Mapping) and "result" not in body:
        words = _text(error.get("text")) or _text(body.get("Error")) or f"code {code}"
        return Rejected(f"SalesMan refused the lead: {words}")
    why = f"error code {code}" if code else "a shape we do not know"
    return Failed(f"SalesMan answered {why}", in_doubt=True)


def held(delivery: Delivery, why: str) -> Rejected:
    """
    An in-doubt lead the lookup could neither find nor prove absent: dead with
    the reason, never sent again on a guess (it may be in the CRM, deeper).
    """
    return Rejected(
        f"in doubt and not found, not sent again: {why}; the lead may be in SalesMan "
        f"already: look for {marker(delivery.lead_id)} there before putting it back",
        state=LeadState.DEAD,
    )


class SalesmanAdapter(Adapter[SalesmanDestination]):
    """Pure adapter for SalesMan CRM's `leads` method."""

    platform = "salesman"
    config_model = SalesmanDestination
    deduplicates = False
    reconciles = True

    def validate(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        return validate_model(SalesmanLead, raw).model_dump(exclude_none=True)

    def build_request(
        self, deliveries: Sequence[Delivery], dest: SalesmanDestination
    ) -> httpx.Request:
        """
        `action=add` for the one delivery, its marker at the end of `dest.marker_field`.

        A form POST, not the document's GET: SalesMan reads `$_REQUEST` (query
        or form), its own examples POST, and the `apikey` stays out of URLs and
        proxy logs.
        """
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
        """
        Page `page` of the leads since the day before this one was accepted,
        newest first. Never None (None would mean "no way to look: send").
        """
        return list_request(dest, page=page, date_start=_day_before(delivery.created_at))

    def parse_lookup(
        self, response: httpx.Response, delivery: Delivery, dest: SalesmanDestination
    ) -> LeadOutcome | NotSeen | None:
        """
        Delivered when a record carries this lead's marker; None when the page
        proves it absent; NotSeen when a next page may tell; held (dead, in
        doubt) when no page can (see the module's docstring).

        Raises PlatformContractError when the answer is not a list (an error
        code, a PHP page): the loop then looks again later instead of sending.
        """
        page = records(response)
        asked = _asked(response)
        record = _marked(page, delivery)
        if record is not None:
            return Delivered(
                external_id=_text(record.get("id")) or None,
                detail="found in the CRM after an answer was lost",
                data={"crm": crm_state(record)},
            )
        if len(page) < PAGE or _past(page, delivery.created_at):
            return None
        if _filters_ignored(page, asked):
            return held(delivery, "SalesMan ignored the list's filters, so its pages repeat")
        if _page_number(asked) >= LOOKUP_PAGES - 1:
            return held(delivery, f"not in the newest {LOOKUP_PAGES} pages of SalesMan's list")
        return NotSeen()

    def build_poll(
        self,
        deliveries: Sequence[Delivery],
        dest: SalesmanDestination,
        now: datetime,
        page: int = 0,
    ) -> httpx.Request | None:
        """
        One lead with a CRM id: `action=info&id=…` (page 0 only). Several:
        page `page` of the leads since the day before the oldest was accepted,
        up to `POLL_PAGES`.
        """
        if not deliveries or page >= POLL_PAGES:
            return None
        if len(deliveries) == 1 and deliveries[0].external_id:
            return info_request(deliveries[0].external_id, dest) if page == 0 else None
        return list_request(
            dest, page=page, date_start=_day_before(min(d.created_at for d in deliveries))
        )

    def parse_poll(
        self, response: httpx.Response, deliveries: Sequence[Delivery], dest: SalesmanDestination
    ) -> Sequence[PollAnswer] | Throttled | Failed:
        """
        Per delivery: a StatusUpdate (still DELIVERED: the CRM's status is
        information, not our state) when its known status (0–3) or result
        changed, the detail `statusName/rezultName` and data under `crm`; None
        when unchanged or proven absent; NotSeen when a later page or `info`
        may find it (`last`: no later page can).
        """
        transport = transport_status(response)
        if transport is not None:
            return transport
        asked = _asked(response)
        try:
            if asked.get("action") == "info":
                return _info_answers(_body(response), deliveries)
            page = records(response)
        except PlatformContractError as exc:
            return Failed(str(exc))
        last = _filters_ignored(page, asked) or _page_number(asked) >= POLL_PAGES - 1
        by_id = {_text(r.get("id")): r for r in page}
        answers: list[PollAnswer] = []
        for d in deliveries:
            record = by_id.get(str(d.external_id)) if d.external_id else _marked(page, d)
            if record is not None:
                answers.append(_status_update(record, d))
            elif len(page) < PAGE or _past(page, d.created_at):
                answers.append(None)
            else:
                answers.append(NotSeen(last=last))
        return answers

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
        code = error_code(body)
        found = info_records(body) if code not in AUTH_ERRORS else None
        if not found:
            return {"error": f"no such lead in the CRM ({_why(body)})"}
        asked = _asked(response).get("id")
        record = info_record(body, asked) if asked else found[0]
        if record is None:
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
        if not isinstance(data, list) or error_code(body) in AUTH_ERRORS:
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


def _info_answers(body: Any, deliveries: Sequence[Delivery]) -> list[PollAnswer] | Failed:
    """`info`'s answer for the one lead asked about; None when the CRM has no such record."""
    if error_code(body) in AUTH_ERRORS or info_records(body) is None:
        return Failed(f"SalesMan's info answer has no data ({_why(body)})")
    return [
        _status_update(info_record(body, d.external_id), d) if d.external_id else None
        for d in deliveries
    ]


def _status_update(record: Mapping[str, Any] | None, delivery: Delivery) -> StatusUpdate | None:
    if record is None:
        return None
    crm = crm_state(record)
    if crm["status"] not in STATUS_NAMES or delivery.data.get("crm") == crm:
        return None
    detail = "/".join(x for x in (crm["status_name"], crm["rezult_name"]) if x)
    return StatusUpdate(LeadState.DELIVERED, detail, {"crm": crm})


def _marked(page: Sequence[Mapping[str, Any]], delivery: Delivery) -> Mapping[str, Any] | None:
    """The record that carries this delivery's marker in any field."""
    tag = marker(delivery.lead_id)
    return next((r for r in page if any(tag in str(v) for v in r.values())), None)


def _past(page: Sequence[Mapping[str, Any]], accepted: datetime) -> bool:
    """
    Whether a list page went past where a lead accepted at `accepted` would be:
    its records are newest first and the oldest is stamped more than
    OLDER_IN_ANY_ZONE before `accepted`. Any record without a readable stamp,
    or out of order, and the page proves nothing.
    """
    stamps = [_stamp(r.get("datum")) for r in page]
    if not stamps or None in stamps:
        return False
    known = [s for s in stamps if s is not None]
    if any(newer[0] < older[0] for newer, older in itertools.pairwise(known)):
        return False
    ours = accepted.astimezone(UTC).replace(tzinfo=None) - OLDER_IN_ANY_ZONE
    return known[-1][1] <= ours


def _filters_ignored(page: Sequence[Mapping[str, Any]], asked: Mapping[str, str]) -> bool:
    """
    Whether the page holds a record created before the `dateStart` we sent. A
    record of that very day proves nothing: "больше указанной даты" may compare
    a creation time with the date's midnight, and keep that day's records.
    """
    try:
        start = date.fromisoformat(asked.get("dateStart", ""))
    except ValueError:
        return False
    stamps = [_stamp(r.get("datum")) for r in page]
    midnight = datetime.combine(start, datetime.min.time())
    return any(s is not None and s[1] <= midnight for s in stamps)


def _stamp(datum: Any) -> tuple[datetime, datetime] | None:
    """
    When a record was created, in the CRM's clock, as (earliest, latest): a
    date alone spans its whole day. None when `datum` cannot be read.
    """
    match = _DATUM.fullmatch(_text(datum).strip())
    if match is None:
        return None
    try:
        day = datetime.fromisoformat(match.group(1))
        if match.group(2) is None:
            return day, day + timedelta(days=1)
        moment = datetime.fromisoformat(f"{match.group(1)}T{match.group(2)}")
    except ValueError:
        return None
    return moment, moment


def _asked(response: httpx.Response) -> dict[str, str]:
    """The parameters of the request this answers (query and form; the form wins)."""
    try:
        request = response.request
    except RuntimeError:  # a response built without its request
        return {}
    params = dict(request.url.params)
    if request.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
        params.update(parse_qsl(request.content.decode("utf-8", "replace"), keep_blank_values=True))
    return params


def _page_number(asked: Mapping[str, str]) -> int:
    """The list page a request asked for; unknown counts as the last, the cautious reading."""
    offset = asked.get("offset", "")
    return int(offset) if offset.isdigit() else LOOKUP_PAGES


def _is_lead(record: Mapping[str, Any]) -> bool:
    """A lead's record has an id or a status (a `stat` row, `info`'s old name, has neither)."""
    return "id" in record or "status" in record


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
    code = error_code(body)
    if not code:
        return "no error code"
    return AUTH_ERRORS.get(code, f"error code {code}")


def _code(value: Any) -> str:
    """An error code as text: a number, or text that is one (with the document's words after)."""
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else ""
    if isinstance(value, str):
        match = _CODE.fullmatch(value)
        return match.group(1) if match else ""
    return ""


def _day_before(when: datetime) -> date:
    return (when - timedelta(days=1)).date()


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _count(value: Any) -> int:
    text = _text(value)
    return int(text) if text.isdigit() else 0
