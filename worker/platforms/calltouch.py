"""
Calltouch lead-service: `POST /lead-service/v1/api/customfield/lead/add`.

Adds custom fields to a lead (a call or a request) Calltouch already holds.
Headers `Access-Token` and `SiteId`; a JSON body `{"leads": [...]}` of up to
100 leads. Each lead names how to find it (`matching`: 1 to 20 rules, tried
in order, the first that finds something wins) and what to add
(`addCustomFields`). Calltouch answers at once, one `data.leads[i]` per lead.

What the delivery loop must know:

* A lead Calltouch cannot find yet (the call or request has not reached it)
  is not refused for good: it is retried every `unmatched_retry` until
  `unmatched_horizon` has passed since it was accepted, then ends `unmatched`.
* A `validationError` answer refuses the whole request: the leads it names
  are rejected with Calltouch's `fieldPath` and message, the rest are sent
  again at once in a request without them.
* The per-second limit is per source IP (5 requests/s), not per account:
  every destination leaving through one egress shares `limiter_scope`.
* The daily points budget (Calltouch's "система баллов") is per project. The
  doc does not show its error; we read an `apiError` whose `errorCode` is
  `POINTS_EXHAUSTED` (or whose code or message speaks of points) on any 4xx
  as a spent budget, and pause until the quota resets. The sandbox answers
  HTTP 403 with that body.
* Adding the same fields twice is harmless (with `overwrite: false` the
  second is a no-op), so a lost answer is simply sent again.

Pure: deliveries in → one httpx.Request out; httpx.Response in → outcomes out.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Literal, Self

import httpx
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    PlainValidator,
    SecretStr,
    StrictBool,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from worker.config import DestinationConfig
from worker.errors import PlatformContractError
from worker.leads import Delivery, LeadState
from worker.outcomes import (
    Answer,
    Delivered,
    Failed,
    LeadOutcome,
    Rejected,
    Retry,
    Suspended,
)
from worker.platforms.base import Adapter, json_body, validate_model

ADD_PATH = "/lead-service/v1/api/customfield/lead/add"
#: "Можно перечислить до 100 лидов за 1 запрос"
MAX_BATCH = 100
#: "общее кол-во типов не должно превышать 20 строк"
MAX_MATCHING = 20
#: "Максимум 20 полей"
MAX_CUSTOM_FIELDS = 20
#: the `apiErrorData.errorCode` of a spent daily points budget (our reading; the doc shows none)
POINTS_EXHAUSTED = "apiPointsLimitExceeded"
#: the reason other leads of a request refused for validation are sent again
RESEND_REASON = "resend: another lead in the batch failed validation"

MatchingType = Literal["call", "request", "callContact", "requestContact", "leadContact"]

#: each matching type and the one params object it takes
PARAMS_OF: dict[str, str] = {
    "call": "callParams",
    "request": "requestParams",
    "callContact": "callContactParams",
    "requestContact": "requestContactParams",
    "leadContact": "leadContactParams",
}


class CalltouchDestination(DestinationConfig):
    """One Calltouch project (SiteId) and the token that may write to it."""

    platform: Literal["calltouch"]
    site_id: str = Field(pattern=r"^[0-9]+$")
    access_token: SecretStr
    batch_size: int = Field(default=MAX_BATCH, ge=1, le=MAX_BATCH)
    #: Calltouch allows 5 requests/s per source IP; destinations on one egress share it
    rate: float = Field(default=5.0, gt=0)
    #: how often a lead Calltouch has not found yet is tried again (timedelta or seconds)
    unmatched_retry: timedelta = timedelta(minutes=30)
    #: how long after acceptance we keep looking before the lead ends `unmatched`
    unmatched_horizon: timedelta = timedelta(hours=24)
    #: the egress (source IP or NAT name) requests leave through; None: this host
    egress: str | None = None

    @field_validator("unmatched_retry", "unmatched_horizon")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration")
        return value

    @property
    def limiter_scope(self) -> str:
        """
        Calltouch counts requests per source IP, so the quota is the egress's:
        `calltouch:egress:<egress or hostname>`, unless `limiter_key` says otherwise.
        """
        if self.limiter_key:
            return self.limiter_key
        return f"calltouch:egress:{self.egress or socket.gethostname()}"


# --- the lead, as Calltouch's doc shows it ----------------------------------

_PHONE_SHAPE = re.compile(r"^\+?[0-9\s()\-]+$")


def _phone(value: str) -> str:
    """A phone as digits: `+7 (915) 888-11-22` → `79158881122` (Calltouch takes either)."""
    if not _PHONE_SHAPE.match(value):
        raise ValueError("a phone holds digits, spaces, brackets, dashes and a leading +")
    digits = re.sub(r"[^0-9]", "", value)
    if len(digits) == 11 and digits[0] == "8":
        digits = "7" + digits[1:]
    elif len(digits) == 10:
        digits = "7" + digits
    if not 11 <= len(digits) <= 15:
        raise ValueError("a phone of 11 to 15 digits with its country code")
    return digits


def _custom_value(value: Any) -> str | int | float:
    """A custom field's value: a string or a number, as the doc's examples show."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("a string or a number")
    return value


Text = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Phone = Annotated[str, AfterValidator(_phone)]
#: email-validator's syntax rules (pydantic's EmailStr; deliverability, a DNS lookup, is off)
Email = EmailStr
Md5 = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{32}$", to_lower=True)]
Id = Annotated[StrictInt, Field(gt=0)]
CustomValue = Annotated[str | int | float, PlainValidator(_custom_value)]
#: Calltouch reads an empty array as blank ("This value should not be blank."): at least one
Phones = Annotated[list[Phone], Field(min_length=1)]
Emails = Annotated[list[Email], Field(min_length=1)]
Tags = Annotated[list[Text], Field(min_length=1)]
TagsLogic = Literal["and", "or"]
#: where the doc's example shows `tags` and `tagsLogic`
_TAGS_SHOWN = "Calltouch's doc shows tags and tagsLogic on request and leadContact only"


def _refused(rule: str) -> PlainValidator:
    """
    A key a producer may expect by analogy but Calltouch's doc does not show on
    this params object: refused at the door with `rule` (Calltouch itself would
    refuse the whole request), whatever its value, null included.
    """

    def refuse(value: Any) -> None:
        raise ValueError(rule)

    return PlainValidator(refuse)


class _Wire(BaseModel):
    """Calltouch's JSON: camelCase keys, JSON types as written, nothing unknown."""

    model_config = ConfigDict(extra="forbid", strict=True, alias_generator=to_camel)


class CallParams(_Wire):
    """`call`: the call with this Calltouch id."""

    call_id: Id


class RequestParams(_Wire):
    """`request`: the request with this Calltouch id, optionally only with these tags."""

    request_id: Id
    tags: Tags | None = None
    tags_logic: TagsLogic | None = None


class _ContactParams(_Wire):
    """
    Find by contact near a date, within `searchDepth` minutes. Each type
    searches by its own keys (`criteria`); at least one of them must be given.
    """

    #: the keys this type searches by, as field names
    criteria: ClassVar[tuple[str, ...]] = ("phones",)

    phones: Phones | None = None
    date: Text | None = None
    search_depth: Id | None = None

    @model_validator(mode="after")
    def _something_to_search_by(self) -> Self:
        if not any(getattr(self, name) for name in self.criteria):
            keys = [to_camel(name) for name in self.criteria]
            words = keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + " or " + keys[-1]
            raise ValueError(f"needs {words} to search by")
        return self


class CallContactParams(_ContactParams):
    """
    `callContact`: a call from one of these phones. The doc finds a call "по
    номеру телефона / дате", so an e-mail is refused rather than sent.
    """

    emails: Annotated[
        None, _refused("not taken by callContact: Calltouch finds a call by phone and date")
    ] = Field(default=None, exclude=True)
    tags: Tags | None = None
    tags_logic: TagsLogic | None = None
    call_type_to_match: Text | None = None


class RequestContactParams(_ContactParams):
    """
    `requestContact`: a request with one of these phones (plain or md5) or
    e-mails. The doc's example shows no tags here (only on `request` and
    `leadContact`), so they are refused rather than sent.
    """

    criteria = ("phones", "emails", "md5_phones")

    emails: Emails | None = None
    md5_phones: Annotated[list[Md5], Field(min_length=1)] | None = None
    request_type_to_match: Text | None = None
    tags: Annotated[None, _refused(f"not taken by requestContact: {_TAGS_SHOWN}")] = Field(
        default=None, exclude=True
    )
    tags_logic: Annotated[None, _refused(f"not taken by requestContact: {_TAGS_SHOWN}")] = Field(
        default=None, exclude=True
    )


class LeadContactParams(_ContactParams):
    """`leadContact`: a call or a request with one of these phones or e-mails."""

    criteria = ("phones", "emails")

    emails: Emails | None = None
    search_among_phones_in_text: StrictBool | None = None
    tags: Tags | None = None
    tags_logic: TagsLogic | None = None
    lead_type_to_match: Text | None = None


class MatchingRule(_Wire):
    """One way to find the lead: its `type` and exactly that type's params object."""

    type: MatchingType
    call_params: CallParams | None = None
    request_params: RequestParams | None = None
    call_contact_params: CallContactParams | None = None
    request_contact_params: RequestContactParams | None = None
    lead_contact_params: LeadContactParams | None = None

    @model_validator(mode="after")
    def _params_of_its_type(self) -> Self:
        wanted = PARAMS_OF[self.type]
        given = [
            to_camel(name)
            for name in type(self).model_fields
            if name != "type" and getattr(self, name) is not None
        ]
        if wanted not in given:
            raise ValueError(f"type {self.type} needs {wanted}")
        if len(given) > 1:
            raise ValueError(f"type {self.type} takes {wanted} and no other params object")
        return self


class CustomField(_Wire):
    field: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    value: CustomValue


class AddCustomFields(_Wire):
    """The fields to add; they must exist in the Calltouch project beforehand."""

    overwrite: StrictBool | None = None
    custom_fields: list[CustomField] = Field(min_length=1, max_length=MAX_CUSTOM_FIELDS)


class CalltouchLead(_Wire):
    """
    One element of `leads`. `addCustomFields` is optional in Calltouch's doc
    but required here: a lead that adds nothing has no reason to be sent.
    """

    matching: list[MatchingRule] = Field(min_length=1, max_length=MAX_MATCHING)
    add_custom_fields: AddCustomFields


# --- the adapter -------------------------------------------------------------


class CalltouchAdapter(Adapter[CalltouchDestination]):
    """Pure adapter for Calltouch's custom fields on leads."""

    platform = "calltouch"
    config_model = CalltouchDestination
    deduplicates = True

    def validate(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """One element of `leads`, normalised (phones as digits), or LeadInvalid with its paths."""
        lead = validate_model(CalltouchLead, raw)
        return lead.model_dump(by_alias=True, exclude_none=True)

    def build_request(
        self, deliveries: Sequence[Delivery], dest: CalltouchDestination
    ) -> httpx.Request:
        body = json.dumps({"leads": [dict(d.payload) for d in deliveries]}, ensure_ascii=False)
        return httpx.Request(
            "POST",
            dest.base_url + ADD_PATH,
            content=body.encode(),
            headers={
                "Content-Type": "application/json",
                "Access-Token": dest.access_token.get_secret_value(),
                "SiteId": dest.site_id,
            },
        )

    def parse_response(
        self,
        response: httpx.Response,
        deliveries: Sequence[Delivery],
        dest: CalltouchDestination,
    ) -> Answer:
        """
        In this order: a spent points budget (any 4xx) → Suspended until the
        quota resets; 429/503 → Throttled; 5xx → Failed; 401/403 → Suspended;
        a validationError → per lead; 200 with `data.leads` → per lead; anything
        else → Failed. Never raises: an answer we cannot read is a Failed.
        """
        try:
            body = json_body(response)
        except PlatformContractError as exc:
            body, not_json = None, str(exc)
        else:
            not_json = ""
        data = body.get("data") if isinstance(body, dict) else None
        data = data if isinstance(data, dict) else {}
        if 400 <= response.status_code < 500 and _points_exhausted(data):
            return Suspended(
                f"Calltouch daily API points spent: {_api_words(data)}", until_quota_reset=True
            )
        transport = self.throttle_or_failure(response)
        if transport is not None:
            return transport
        if response.status_code in (401, 403):
            words = _api_words(data) or f"HTTP {response.status_code}"
            return Suspended(f"Calltouch refused the credentials: {words}")
        if not_json:
            return Failed(not_json)
        if data.get("type") == "validationError":
            return _validation_outcomes(data, len(deliveries))
        if response.status_code != 200 or data.get("type") == "apiError":
            words = _api_words(data) or "no error text"
            return Failed(f"Calltouch refused the request (HTTP {response.status_code}): {words}")
        return _lead_outcomes(data.get("leads"), deliveries, dest)


def _api_error(data: Mapping[str, Any]) -> Mapping[str, Any]:
    error = data.get("apiErrorData") if data.get("type") == "apiError" else None
    return error if isinstance(error, Mapping) else {}


def _api_words(data: Mapping[str, Any]) -> str:
    """`errorCode: errorMessage` of an apiError, whichever is there."""
    error = _api_error(data)
    parts = [str(error[k]) for k in ("errorCode", "errorMessage") if error.get(k)]
    return ": ".join(parts)


def _points_exhausted(data: Mapping[str, Any]) -> bool:
    """Our code, or any apiError whose code or message speaks of points (баллы)."""
    error = _api_error(data)
    code = str(error.get("errorCode") or "")
    message = str(error.get("errorMessage") or "").lower()
    return code == POINTS_EXHAUSTED or "points" in code.lower() or "балл" in message


_LEAD_PATH = re.compile(r"^leads\[(\d+)\](?:\.(.+))?$")


def _validation_outcomes(data: Mapping[str, Any], count: int) -> Answer:
    """
    Reject each lead a violation names (`leads[i]…`) with its path and message;
    send the others again at once. No lead named: the request itself is wrong.
    """
    payload = data.get("validationErrorData")
    violations = payload.get("violations") if isinstance(payload, Mapping) else None
    if not isinstance(violations, list) or not violations:
        return Failed("Calltouch answered validationError without violations")
    named: dict[int, list[dict[str, str]]] = {}
    unnamed: list[str] = []
    for violation in violations:
        if not isinstance(violation, Mapping):
            return Failed("Calltouch answered a violation that is not an object")
        path, message = str(violation.get("fieldPath", "")), str(violation.get("message", ""))
        found = _LEAD_PATH.match(path)
        if found and int(found[1]) < count:
            named.setdefault(int(found[1]), []).append(
                {"fieldPath": found[2] or "lead", "message": message}
            )
        else:
            unnamed.append(f"{path or 'request'}: {message}")
    if not named:
        return Failed("Calltouch refused the request: " + "; ".join(unnamed))
    outcomes: list[LeadOutcome] = []
    for index in range(count):
        if index in named:
            reason = "; ".join(f"{v['fieldPath']}: {v['message']}" for v in named[index])
            outcomes.append(Rejected(reason, data={"violations": named[index]}))
        else:
            outcomes.append(Retry(RESEND_REASON, after=timedelta(0)))
    return outcomes


def _lead_outcomes(
    leads: Any, deliveries: Sequence[Delivery], dest: CalltouchDestination
) -> Answer:
    """`data.leads[i]` settles delivery i; Calltouch answers in the order it was asked."""
    if not isinstance(leads, list):
        return Failed("Calltouch answered 200 without data.leads")
    if len(leads) != len(deliveries):
        return Failed(f"Calltouch answered {len(leads)} leads for {len(deliveries)}")
    outcomes: list[LeadOutcome] = []
    for answer in leads:
        outcome = _lead_outcome(answer, dest)
        if outcome is None:
            return Failed("Calltouch answered a lead in an unknown shape")
        outcomes.append(outcome)
    return outcomes


#: words of a custom field problem: the lead was found, the field was not
_FIELD_PROBLEM = re.compile(r"пользовательск|custom\s*field", re.IGNORECASE)


def _lead_outcome(answer: Any, dest: CalltouchDestination) -> LeadOutcome | None:
    """
    One `data.leads[i]`. Not added and nothing matched (`matchedType` null):
    Calltouch does not hold the call or request yet, so look again later.
    Any other failure is Calltouch's final word. None: a shape we do not know.
    """
    if not isinstance(answer, Mapping):
        return None
    # the doc's own table spells it "isCustonFieldsAdded"; its example does not
    added = answer.get("isCustomFieldsAdded", answer.get("isCustonFieldsAdded"))
    if not isinstance(added, bool):
        return None
    matched = answer.get("matchedType")
    data = {"matchedType": matched} if matched else {}
    for block in ("requestInfo", "callInfo"):
        if isinstance(answer.get(block), Mapping):
            data[block] = answer[block]
    if added:
        return Delivered(
            external_id=_matched_id(answer), detail=f"custom fields added to {matched}", data=data
        )
    words = str(answer.get("error") or "custom fields not added, no reason given")
    if matched is None and not _FIELD_PROBLEM.search(words):
        return Retry(
            reason=words,
            after=dest.unmatched_retry,
            horizon=dest.unmatched_horizon,
            give_up_as=LeadState.UNMATCHED,
        )
    return Rejected(words, data=data)


def _matched_id(answer: Mapping[str, Any]) -> str | None:
    """Calltouch's id of what matched: `requestInfo.requestId`, else `callInfo.callId`."""
    for block, key in (("requestInfo", "requestId"), ("callInfo", "callId")):
        info = answer.get(block)
        if isinstance(info, Mapping) and info.get(key) is not None:
            return str(info[key])
    return None
