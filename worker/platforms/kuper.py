"""
Kuper Partner Leads API: `POST /partner-candidate/v2/leads/import`.

A JSON array of up to 300 leads per request (Kuper itself advises 50), Basic
Auth. Kuper answers per lead in `details`: `success`, an `error` text, the
`uuid` of a created candidate and what its deduplication rule did. Kuper
deduplicates by phone within a source, so sending a lead again after a lost
answer cannot create a second candidate.

The door enforces what Kuper's partners most often get wrong (its own doc):
`phone` as a string `79XXXXXXXXX` (we accept `+7 (915) 888-11-22` and
`8 915 888 11 22` and normalise them), `utm.utm_source` filled in, and
`vacancy_id` / `city_id` as integers (a numeric string is coerced).
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import httpx
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StrictInt,
    field_validator,
)

from worker.config import DestinationConfig
from worker.errors import PlatformContractError
from worker.leads import Delivery, Platform
from worker.outcomes import Answer, Delivered, Failed, LeadOutcome, Rejected, Suspended
from worker.platforms.base import (
    Adapter,
    basic_auth,
    json_body,
    normalise_ru_phone,
    validate_model,
)

IMPORT_PATH = "/partner-candidate/v2/leads/import"
#: Kuper's documented ceiling; its own advice is 50
MAX_BATCH = 300


class KuperDestination(DestinationConfig):
    """A Kuper partner account."""

    platform: Literal[Platform.KUPER]
    username: str = Field(min_length=1)
    password: SecretStr
    batch_size: int = Field(default=50, ge=1, le=MAX_BATCH)


def _numeric_id(value: Any) -> Any:
    """Kuper's ids are integers; a string of digits is coerced, any other string refused."""
    if isinstance(value, str):
        # isascii: str.isdigit() also takes "٣" and "³", which are not Kuper's digits
        if not (value.strip().isascii() and value.strip().isdigit()):
            raise ValueError("an integer (a numeric string is coerced, other strings refused)")
        return int(value.strip())
    return value


KuperId = Annotated[StrictInt, BeforeValidator(_numeric_id), Field(gt=0)]
Text = Annotated[str, Field(min_length=1, max_length=255)]


class Utm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    utm_source: Text
    utm_medium: Text | None = None
    utm_campaign: Text | None = None
    utm_term: Text | None = None
    utm_content: Text | None = None


class KuperLead(BaseModel):
    """One lead as Kuper's import takes it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    phone: str
    utm: Utm
    vacancy_id: KuperId
    city_id: KuperId
    first_name: Text | None = None
    last_name: Text | None = None

    @field_validator("phone", mode="before")
    @classmethod
    def _phone(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError("a string (Kuper's phone field is a string)")
        return normalise_ru_phone(value)


class KuperAdapter(Adapter[KuperDestination]):
    """Pure adapter for Kuper's batch import."""

    platform = Platform.KUPER
    config_model = KuperDestination
    max_batch = MAX_BATCH
    deduplicates = True

    def validate(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        return validate_model(KuperLead, raw).model_dump(exclude_none=True)

    def build_request(
        self, deliveries: Sequence[Delivery], dest: KuperDestination
    ) -> httpx.Request:
        body = json.dumps([dict(d.payload) for d in deliveries], ensure_ascii=False)
        return httpx.Request(
            "POST",
            dest.base_url + IMPORT_PATH,
            content=body.encode(),
            headers={
                "Content-Type": "application/json",
                "Authorization": basic_auth(dest.username, dest.password.get_secret_value()),
            },
        )

    def parse_response(
        self,
        response: httpx.Response,
        deliveries: Sequence[Delivery],
        dest: KuperDestination,
    ) -> Answer:
        transport = self.throttle_or_failure(response)
        if transport is not None:
            return transport
        if response.status_code in (401, 403):
            return Suspended(f"Kuper refused the credentials (HTTP {response.status_code})")
        try:
            body = json_body(response)
        except PlatformContractError as exc:
            return Failed(str(exc))
        if response.status_code != 200:
            words = _error_words(body) or f"HTTP {response.status_code}"
            return [Rejected(f"Kuper refused the request: {words}") for _ in deliveries]
        details = body.get("details") if isinstance(body, dict) else None
        if not isinstance(details, list):
            return Failed("Kuper answered 200 without a details list")
        return _match_details(details, deliveries)


def _error_words(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("message", "error", "detail", "errors"):
            if body.get(key):
                value = body[key]
                return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return ""


def _match_details(details: list[Any], deliveries: Sequence[Delivery]) -> Answer:
    """Each detail settles the lead with its phone; order is the fallback."""
    by_phone: dict[str, deque[int]] = defaultdict(deque)
    for index, delivery in enumerate(deliveries):
        by_phone[str(delivery.payload.get("phone"))].append(index)
    outcomes: list[LeadOutcome | None] = [None] * len(deliveries)
    unplaced: list[Mapping[str, Any]] = []
    for detail in details:
        if not isinstance(detail, Mapping):
            return Failed("Kuper answered a detail that is not an object")
        queue = by_phone.get(str(detail.get("phone")))
        if queue:
            index = queue.popleft()
            outcomes[index] = _outcome(detail, deliveries[index].in_doubt)
        else:
            unplaced.append(detail)
    free = [i for i, o in enumerate(outcomes) if o is None]
    for index, detail in zip(free, unplaced, strict=False):
        outcomes[index] = _outcome(detail, deliveries[index].in_doubt)
    if any(o is None for o in outcomes):
        return Failed(f"Kuper answered {len(details)} details for {len(deliveries)} leads")
    return [o for o in outcomes if o is not None]


def _outcome(detail: Mapping[str, Any], in_doubt: bool) -> LeadOutcome:
    """
    One detail as an outcome. A lead in doubt (an earlier send may have
    arrived) that Kuper now deduplicates is our own earlier send: delivered.
    """
    dedup = detail.get("deduplication")
    data = {"deduplication": dedup} if isinstance(dedup, Mapping) else {}
    earlier_send = in_doubt and isinstance(dedup, Mapping) and dedup.get("applied") is True
    if earlier_send and detail.get("success") is not True:
        return Delivered(detail="already at Kuper: an earlier send arrived", data=data)
    if detail.get("success") is True:
        uuid = detail.get("uuid")
        message = dedup.get("message", "") if isinstance(dedup, Mapping) else ""
        return Delivered(external_id=str(uuid) if uuid else None, detail=str(message), data=data)
    reason = str(detail.get("error") or "")
    if not reason and isinstance(dedup, Mapping):
        reason = str(dedup.get("message") or "")
    return Rejected(reason or "Kuper skipped the lead without a reason", data=data)
