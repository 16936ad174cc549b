"""
The adapter contract: what the delivery loop needs from a platform.

An adapter is pure, like httpx's `_build_redirect_request`: lead payloads in,
an `httpx.Request` out; an `httpx.Response` in, outcome values out. It opens
no socket, reads no clock it is not given, touches no Redis and no SQL. All
I/O, retries and limits live once in `worker.delivery.loop`.

The hooks with a default here are optional: a platform overrides what it has.
"""

from __future__ import annotations

import base64
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

import httpx
from pydantic import BaseModel, ValidationError

from worker.config import DestinationConfig
from worker.errors import FieldError, LeadInvalid, PlatformContractError
from worker.leads import Delivery, LeadState
from worker.outcomes import (
    Answer,
    Failed,
    LeadOutcome,
    Narrowed,
    NotSeen,
    PollAnswer,
    Settlement,
    Suspended,
    Throttled,
)

D = TypeVar("D", bound=DestinationConfig)


class KeyValueCache(Protocol):
    """A small shared cache (Redis in production, a dict in the demo) for tokens and settings."""

    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str, ttl: timedelta) -> None: ...


@dataclass(frozen=True, slots=True)
class Prerequisite:
    """
    Something an adapter must know before sending a lead (Admitad: a program's
    field rules). The loop fetches `request` under the destination's limiter
    and keeps the answer's body in the shared cache under `key` for `ttl`.
    """

    key: str
    request: httpx.Request
    ttl: timedelta


@dataclass(frozen=True, slots=True)
class FetchFailure:
    """
    Why a prerequisite could not be fetched. `passing`: the reason may pass (a
    5xx, a 429, a transport error), unlike an answer (a 404) or a refused token.
    """

    reason: str
    passing: bool


@runtime_checkable
class TakesCodes(Protocol):
    """
    An adapter whose platform holds an application until the user's SMS code
    comes (Admitad's banks). `worker.delivery.confirm` runs the exchange; the
    adapter decides whether a lead takes a code, and what the answer means.
    """

    def code_deadline(self, waiting: Delivery, due_at: datetime | None) -> datetime | None:
        """When the lead's code stops counting; None when it waits for no code."""
        ...

    def code_refusal(self, waiting: Delivery, deadline: datetime | None, now: datetime) -> str:
        """Why the lead takes no code now; empty when it does."""
        ...

    def build_confirm(self, application_id: str, code: str, dest: Any) -> httpx.Request:
        """The request that sends the code."""
        ...

    def parse_confirm(
        self, response: httpx.Response, dest: Any
    ) -> LeadOutcome | Failed | Suspended | Throttled:
        """What the platform said of the code."""
        ...

    def after_confirm(
        self, waiting: Delivery, outcome: object, deadline: datetime, now: datetime
    ) -> Settlement:
        """The lead after the platform's answer (or the failure to get one)."""
        ...


class Adapter(ABC, Generic[D]):
    """
    Base of every platform adapter.

    Subclasses set the class attributes and implement `validate`,
    `build_request` and `parse_response`.
    """

    #: the platform's name: its key in `worker.platforms.REGISTRY`, and the `Literal`
    #: of its destination model's `platform` (`register` checks that they agree)
    platform: ClassVar[str]
    #: the model of this platform's destination table
    config_model: ClassVar[type[DestinationConfig]]
    #: True when sending a lead twice cannot make a second lead at the platform
    deduplicates: ClassVar[bool] = False
    #: True when delivered leads are polled afterwards for the platform's own status
    reconciles: ClassVar[bool] = False
    #: the most due deliveries one polling pass claims and asks about
    poll_batch: ClassVar[int] = 100

    @abstractmethod
    def validate(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Check one lead against its documented rules; the normalised lead, or LeadInvalid."""

    def validate_for(self, raw: Mapping[str, Any], dest: D) -> dict[str, Any]:
        """
        `validate`, plus the rules of this destination's own settings (Admitad:
        the marker's field must be left to us). Intake calls this one.
        """
        return self.validate(raw)

    def deduplicates_for(self, dest: D) -> bool:
        """Whether this destination deduplicates; by default the class's (Kuper: per source)."""
        return self.deduplicates

    @abstractmethod
    def build_request(self, deliveries: Sequence[Delivery], dest: D) -> httpx.Request:
        """The one request that carries these deliveries (at most `dest.batch_size`)."""

    @abstractmethod
    def parse_response(
        self, response: httpx.Response, deliveries: Sequence[Delivery], dest: D
    ) -> Answer:
        """One LeadOutcome per delivery, in order, or one RequestOutcome for them all."""

    def auth(self, dest: D, cache: KeyValueCache) -> httpx.Auth | None:
        """The httpx auth flow for this destination, when the request does not carry its own."""
        return None

    def build_lookup(
        self, delivery: Delivery, dest: D, now: datetime, page: int = 0
    ) -> httpx.Request | None:
        """
        For a platform without deduplication: a request that finds an in-doubt
        delivery, sent before it is sent again. None: no way to look, send again.
        `page`: the next page, after `parse_lookup` said NotSeen of the one before.
        """
        return None

    def parse_lookup(
        self, response: httpx.Response, delivery: Delivery, dest: D
    ) -> LeadOutcome | NotSeen | None:
        """
        What the lookup found: an outcome when the platform already has the
        lead; None when it has not; NotSeen when this page did not reach far
        enough to say (the loop then asks for the next page).
        """
        return None

    def build_poll(
        self, deliveries: Sequence[Delivery], dest: D, now: datetime, page: int = 0
    ) -> httpx.Request | None:
        """
        A request asking for the status of leads the platform decides later.
        `page`: the next page of a list, after `parse_poll` said NotSeen of some
        on the page before; None when there is no further page to read. Asked
        about one delivery alone, the adapter may use a request for that one
        record (SalesMan's `info`, Admitad's `?id=`).
        """
        return None

    def parse_poll(
        self, response: httpx.Response, deliveries: Sequence[Delivery], dest: D
    ) -> Sequence[PollAnswer] | Throttled | Failed:
        """
        Per delivery: a StatusUpdate when its status changed, None when it did
        not, NotSeen when the answer did not cover it (the poller then asks
        `build_poll` about it alone).
        """
        return [None] * len(deliveries)

    def prerequisites(self, delivery: Delivery, dest: D) -> Sequence[Prerequisite]:
        """What must be known before this delivery is sent (fetched and cached by the loop)."""
        return ()

    def check(
        self,
        delivery: Delivery,
        dest: D,
        answers: Mapping[str, str],
        failed: Mapping[str, FetchFailure] | None = None,
    ) -> LeadOutcome | Narrowed | None:
        """
        With the prerequisites' answers (body text by key) and the ones that
        could not be fetched (`failed`: key → why): None to send the lead as it
        is; Narrowed to send it with less (Admitad: without a program whose own
        rule it breaks); or the outcome that settles it without sending.
        """
        return None

    def build_info(self, delivery: Delivery, dest: D) -> httpx.Request | None:
        """A request for the platform's own record of a delivered lead (`status --live`)."""
        return None

    def parse_info(self, response: httpx.Response) -> Mapping[str, Any]:
        """The platform's record, as plain data (redacted before it is shown)."""
        return {}

    def first_delay(self, payload: Mapping[str, Any], dest: D) -> timedelta:
        """How long after acceptance the lead's first delivery is due (Admitad: stage 1's pause)."""
        return timedelta(0)

    def next_look(
        self, delivery: Delivery, dest: D, state: LeadState, data: Mapping[str, Any]
    ) -> timedelta:
        """
        After a status look left `delivery` in `state` with `data` (`data["looks"]`:
        looks so far), how long until the next: `poll_interval` unless the
        platform has reason to look sooner (Admitad: a stage still undecided).
        """
        return timedelta(seconds=dest.poll_interval)

    def stages(self, payload: Mapping[str, Any], dest: D) -> int:
        """How many deliveries a lead makes: 1, or its number of stages (staged Admitad)."""
        return 1

    def next_stage_due(
        self,
        delivery: Delivery,
        dest: D,
        state: LeadState,
        data: Mapping[str, Any],
        now: datetime,
    ) -> datetime | None:
        """
        For staged leads: once stage `delivery.stage` settled in `state` with
        `data`, when the next stage is due; None while this stage is undecided
        or when no stage follows.
        """
        return None

    def throttle_or_failure(self, response: httpx.Response) -> Throttled | Failed | None:
        """The common reading of 429, 503 and 5xx answers; None for anything else."""
        return transport_status(response)


def transport_status(response: httpx.Response) -> Throttled | Failed | None:
    """429/503 → Throttled (with Retry-After), other 5xx → Failed, else None."""
    if response.status_code in (429, 503):
        return Throttled(
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            reason=f"HTTP {response.status_code}",
        )
    if response.status_code >= 500:
        return Failed(f"HTTP {response.status_code}")
    return None


def parse_retry_after(value: str | None, now: datetime | None = None) -> timedelta | None:
    """Retry-After as seconds or an HTTP date (RFC 9110 §10.2.3); None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = int(value)
        # a number of seconds past what timedelta holds is unreadable, not a crash
        return timedelta(seconds=seconds) if seconds < 10**9 else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if now is None:
        return None if when.tzinfo is None else max(timedelta(0), when - when.now(when.tzinfo))
    return max(timedelta(0), when - now)


def json_body(response: httpx.Response) -> Any:
    """The answer's JSON, or PlatformContractError naming what was wrong (never the body)."""
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: too deep
        raise PlatformContractError(
            f"HTTP {response.status_code} answer is not JSON ({type(exc).__name__})"
        ) from exc


def field_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    """pydantic's errors as FieldErrors: `utm.utm_source: Field required`; never the input value."""
    out = []
    for err in exc.errors(include_input=False, include_url=False):
        path = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in err["loc"]
        ).lstrip(".")
        rule = err["msg"].removeprefix("Value error, ")
        out.append(FieldError(f"{prefix}{path}" or "lead", rule))
    return out


M = TypeVar("M", bound=BaseModel)


def validate_model(model: type[M], raw: Mapping[str, Any]) -> M:
    """Validate `raw` against `model`, raising LeadInvalid with every field error."""
    if not isinstance(raw, Mapping):
        raise LeadInvalid.one("lead", "must be a JSON object")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise LeadInvalid(field_errors(exc)) from None


_DIGITS = re.compile(r"[^0-9]+")
_PHONE_SHAPE = re.compile(r"\+?[0-9 ()\-]+")  #: ASCII only: other scripts' digits are refused


def normalise_ru_phone(value: str) -> str:
    """
    A Russian mobile number as `79XXXXXXXXX`.

    Accepts `+7 (915) 888-11-22`, `8 915 888 11 22`, `79158881122`; raises
    ValueError (with the rule, not the number) for anything else.
    """
    if not _PHONE_SHAPE.fullmatch(value):
        raise ValueError("a phone holds digits, spaces, brackets, dashes and a leading +")
    digits = _DIGITS.sub("", value)
    if len(digits) == 11 and digits[0] in "78":
        digits = "7" + digits[1:]
    elif len(digits) == 10:
        digits = "7" + digits
    if len(digits) != 11 or not digits.startswith("79"):
        raise ValueError("a Russian mobile number: 11 digits starting with 79 (or 8 9…, +7 9…)")
    return digits


def basic_auth(username: str, password: str) -> str:
    """The value of an `Authorization: Basic …` header (RFC 7617)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"
