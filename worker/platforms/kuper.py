"""
Kuper Partner Leads API: `POST /partner-candidate/v2/leads/import`.

A JSON array of up to 300 leads per request (Kuper itself advises 50), Basic
Auth. Kuper answers per lead in `details`: `success`, an `error` text, the
`uuid` of a created candidate and what its deduplication rule did.

Deduplication is a setting of each Kuper source ("Дедублицировать всегда" in
the sources table), not a promise of the API. A destination says whether its
source has it (`deduplicate`, off unless set):

* on: a lead whose phone the source already holds is skipped with
  `deduplication.applied: true`, so a lead in doubt (an earlier send's answer
  was lost) is simply sent again, and Kuper skipping it means the earlier send
  arrived: delivered;
* off: Kuper creates the lead again, so a lead in doubt may end up at Kuper
  twice. The loop sends it again all the same (Kuper offers no way to look a
  lead up) and the ledger keeps it flagged `in_doubt`, the record that it may
  be there twice. A skip with deduplication applied is then Kuper's own no.

A 400 or 422 refuses the request as a whole without naming the lead that
broke it: a request of several leads is `Split` (the loop sends each half on
its own), a one-lead request is that lead's `Rejected`, in Kuper's words.
Another 4xx the document does not show is not the leads' fault: `Failed`,
retried, never read as a refusal.

The door enforces what Kuper's partners most often get wrong (its own doc):
`phone` as a string `79XXXXXXXXX` (we accept `+7 (915) 888-11-22` and
`8 915 888 11 22` and normalise them), `utm.utm_source` filled in, and
`vacancy_id` / `city_id` as integers (a numeric string is coerced). It takes
only the fields the document shows: `phone`, `utm.utm_source`, `vacancy_id`,
`city_id`, `first_name`, `last_name`.
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
from worker.leads import Delivery
from worker.outcomes import (
    Answer,
    Delivered,
    Failed,
    LeadOutcome,
    Rejected,
    Split,
    Suspended,
)
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
#: a refusal of the request as a whole, without naming the lead (Kuper's schema check)
WHOLE_REQUEST_REFUSALS = (400, 422)


class KuperDestination(DestinationConfig):
    """A Kuper partner account."""

    platform: Literal["kuper"]
    username: str = Field(min_length=1)
    password: SecretStr
    batch_size: int = Field(default=50, ge=1, le=MAX_BATCH)
    #: the source has Kuper's "Дедублицировать всегда" switched on: a lead whose
    #: phone the source already holds is skipped, never created twice. Off unless
    #: set, as on the document's own example source; with it off a lead sent
    #: again after a lost answer may be at Kuper twice, and stays flagged in doubt
    deduplicate: bool = False


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
    """The document shows one UTM field, the source the leads go to."""

    model_config = ConfigDict(extra="forbid")

    utm_source: Text


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

    platform = "kuper"
    config_model = KuperDestination
    #: a per-source setting at Kuper: `deduplicates_for` reads the destination's
    deduplicates = False

    def validate(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        return validate_model(KuperLead, raw).model_dump(exclude_none=True)

    def deduplicates_for(self, dest: KuperDestination) -> bool:
        return dest.deduplicate

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
        status = response.status_code
        if status in (401, 403):
            return Suspended(f"Kuper refused the credentials (HTTP {status})")
        if status in WHOLE_REQUEST_REFUSALS:
            return _refused(response, deliveries)
        if status != 200:
            return Failed(f"Kuper answered HTTP {status}, which its document does not show")
        try:
            body = json_body(response)
        except PlatformContractError as exc:
            return Failed(str(exc))
        details = body.get("details") if isinstance(body, dict) else None
        if not isinstance(details, list):
            return Failed("Kuper answered 200 without a details list")
        return _match_details(details, deliveries, dest.deduplicate)


def _refused(response: httpx.Response, deliveries: Sequence[Delivery]) -> Answer:
    """
    A 400/422: the request as a whole broke Kuper's rules and Kuper does not
    say which lead did. Several leads: split them, so only the lead at fault
    ends rejected. One lead: it is that lead's refusal.
    """
    try:
        words = _error_words(json_body(response))
    except PlatformContractError:
        words = ""
    words = words or f"HTTP {response.status_code}"
    if len(deliveries) > 1:
        return Split(f"Kuper refused the request (HTTP {response.status_code}): {words}")
    return [Rejected(f"Kuper refused the lead: {words}")]


def _error_words(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("message", "error", "detail", "errors"):
            if body.get(key):
                value = body[key]
                return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return ""


def _match_details(
    details: list[Any], deliveries: Sequence[Delivery], deduplicates: bool
) -> Answer:
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
            outcomes[index] = _outcome(detail, deliveries[index].in_doubt, deduplicates)
        else:
            unplaced.append(detail)
    free = [i for i, o in enumerate(outcomes) if o is None]
    for index, detail in zip(free, unplaced, strict=False):
        outcomes[index] = _outcome(detail, deliveries[index].in_doubt, deduplicates)
    if any(o is None for o in outcomes):
        return Failed(f"Kuper answered {len(details)} details for {len(deliveries)} leads")
    return [o for o in outcomes if o is not None]


def _outcome(detail: Mapping[str, Any], in_doubt: bool, deduplicates: bool) -> LeadOutcome:
    """
    One detail as an outcome. `success: true` is delivered, with the `uuid`
    when Kuper gives one (the document's first candidate, whose deduplication
    rule was not applied, comes without). Only on a source that deduplicates
    is a lead in doubt (an earlier send may have arrived) that Kuper now skips
    as a duplicate our own earlier send: delivered. Anywhere else a skip is
    Kuper's no, in its own words.
    """
    dedup = detail.get("deduplication")
    data = {"deduplication": dedup} if isinstance(dedup, Mapping) else {}
    applied = isinstance(dedup, Mapping) and dedup.get("applied") is True
    earlier_send = deduplicates and in_doubt and applied
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
