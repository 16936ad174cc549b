"""
What every destination's TOML table holds, whatever its platform.

A destination is one platform account: credentials plus the limits we hold
ourselves to. Each platform extends `DestinationConfig` with its credentials
and defaults (`worker.platforms.<name>`); `worker.settings` reads the file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import time, timedelta
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from worker.errors import ConfigError

#: the queue of beat's periodic jobs and of raw intake messages
CONTROL_QUEUE = "leadrelay"
#: the queue where apps without our code drop raw leads (`leadrelay.submit`)
INTAKE_QUEUE = "leadrelay.intake"
#: the worker group of a destination that names none
DEFAULT_GROUP = "default"
#: the worker group that consumes CONTROL_QUEUE and INTAKE_QUEUE (no destination's)
CONTROL_GROUP = "control"
#: a worker group's name: it becomes part of a Deployment's name, so DNS-label rules
GROUP_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"


def _rate(value: object) -> float | Literal["auto"]:
    """A positive number (a `${VAR}` arrives as text) or "auto"; one error names both."""
    if value == "auto":
        return "auto"
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if math.isfinite(number) and number > 0:
            return number
    raise PydanticCustomError("rate", 'must be a positive number of requests/s, or "auto"')


#: a destination's `rate`: requests/s, or "auto" to learn it between rate_floor and rate_ceiling
Rate = Annotated[float | Literal["auto"], PlainValidator(_rate)]
#: `rate_floor` when none is set, as a share of `rate_ceiling`
FLOOR_SHARE = 1 / 20


@dataclass(frozen=True, slots=True)
class RateBounds:
    """Where a learned rate lives (requests/s): never under `floor`, never over `ceiling`."""

    floor: float
    #: the rate it starts from, before the platform has said anything
    start: float
    ceiling: float


class UnsetSecret(SecretStr):
    """
    A secret whose environment variable this process does not have.

    A producer reads the whole destinations file but sends to no platform, so it
    needs no platform's secret: the setting is kept as this placeholder, and only
    reading its value (to send) is an error naming the setting and the variable.
    """

    def __init__(self, where: str, variable: str) -> None:
        super().__init__("")
        self.where = where
        self.variable = variable

    def __repr__(self) -> str:
        return f"UnsetSecret(${{{self.variable}}})"

    def error(self) -> ConfigError:
        return ConfigError(
            self.where, f"names ${{{self.variable}}}, which is not set in the environment"
        )

    def get_secret_value(self) -> str:
        raise self.error()


class DestinationConfig(BaseModel):
    """The limits and retry policy shared by every platform's destination table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    #: the platform's name, a key of `worker.platforms.REGISTRY`; each platform's
    #: model narrows it to its own name (`platform: Literal["kuper"]`)
    platform: str
    base_url: str
    #: requests per second, shared by every worker process and host; "auto" learns it
    #: from the platform's answers (worker.delivery.learned_rate), within the two below
    rate: Rate = 5.0
    #: with rate = "auto": the most requests/s it may learn (required), the fewest
    #: (default: a twentieth of the ceiling), and where it starts (default: the floor)
    rate_ceiling: PositiveFloat | None = Field(default=None, validate_default=True)
    rate_floor: PositiveFloat | None = None
    rate_start: PositiveFloat | None = None
    #: requests that may go at once after a quiet spell
    burst: PositiveInt = 1
    #: how much wider than 1/rate the limiter spaces requests: the time between our
    #: grant and the platform's clock varies by a few ms, and at exactly 1/rate that
    #: jitter can put rate + 1 requests into one of the platform's seconds
    rate_margin: float = Field(default=0.02, ge=0, le=0.5)
    #: requests in flight at once, across every worker
    concurrency: PositiveInt = 4
    #: leads per request; each platform caps it
    batch_size: PositiveInt = 1
    #: seconds for one request (connect, write, read)
    timeout: PositiveFloat = 10.0
    #: sends of one lead before it is dead
    max_attempts: PositiveInt = 8
    #: the quota's scope in the shared limiter; destinations with the same key share it
    limiter_key: str | None = None
    #: first retry wait and its cap, seconds (exponential with jitter in between)
    retry_initial: PositiveFloat = 5.0
    retry_max: PositiveFloat = 3600.0
    #: how long a destination pauses after an auth failure before it tries again, seconds
    auth_pause: PositiveFloat = 600.0
    #: requests a day the platform allows (Calltouch's points); None: no daily quota
    daily_quota: PositiveInt | None = None
    #: when the daily quota resets, local time in `quota_zone`
    quota_resets_at: time = time(0, 0)
    quota_zone: str = "Europe/Moscow"
    #: how often to ask a platform that decides later about a lead, seconds
    poll_interval: PositiveFloat = 60.0
    #: stop asking after this long since the lead was accepted; it ends `expired`
    poll_horizon: timedelta = timedelta(days=30)
    #: a Celery task of the upstream app told each time a lead settles here (one JSON
    #: dict argument, no personal data); None: nobody is told
    notify_task: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]{0,199}$")
    #: the queue that task listens on; required with `notify_task`
    notify_queue: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,200}$")
    #: days a settled lead stays in the ledger after its last delivery settled; then
    #: the lead, its deliveries and the exchanges that carried only it are deleted
    #: (the hourly retention run, and `leadrelay purge`). None: kept for good
    keep_days: PositiveInt | None = None
    #: the workers that drain this destination: those started with
    #: LEADRELAY_WORKER_GROUP set to this name (one Deployment per group)
    worker_group: str = Field(default=DEFAULT_GROUP, pattern=GROUP_PATTERN)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("rate_ceiling")
    @classmethod
    def _ceiling_with_auto(cls, value: float | None, info: ValidationInfo) -> float | None:
        learns = info.data.get("rate") == "auto"
        if learns and value is None:
            raise PydanticCustomError("rate_auto", 'required with rate = "auto"')
        if not learns and value is not None and "rate" in info.data:
            raise PydanticCustomError("rate_auto", 'only with rate = "auto"')
        return value

    @field_validator("rate_floor", "rate_start")
    @classmethod
    def _within_ceiling(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is None or "rate" not in info.data:
            return value
        if info.data["rate"] != "auto":
            raise PydanticCustomError("rate_auto", 'only with rate = "auto"')
        ceiling, floor = info.data.get("rate_ceiling"), info.data.get("rate_floor")
        if ceiling is not None and value > ceiling:
            raise PydanticCustomError("rate_auto", f"must not exceed rate_ceiling ({ceiling:g})")
        if info.field_name == "rate_start" and floor is not None and value < floor:
            raise PydanticCustomError("rate_auto", f"must not be under rate_floor ({floor:g})")
        return value

    @model_validator(mode="after")
    def _notify_pair(self) -> DestinationConfig:
        if (self.notify_task is None) != (self.notify_queue is None):
            missing = "notify_queue" if self.notify_queue is None else "notify_task"
            raise PydanticCustomError("notify_pair", f"{missing}: required with the other notify_*")
        return self

    def unset_secrets(self) -> list[ConfigError]:
        """One error per secret whose environment variable is not set (none: ready to send)."""
        values = (getattr(self, name) for name in type(self).model_fields)
        return [v.error() for v in values if isinstance(v, UnsetSecret)]

    @property
    def rate_bounds(self) -> RateBounds | None:
        """The bounds of a learned rate; None for a fixed one."""
        if not isinstance(self.rate, str) or self.rate_ceiling is None:
            return None
        floor = self.rate_floor or self.rate_ceiling * FLOOR_SHARE
        if self.rate_start is None:
            return RateBounds(floor=floor, start=floor, ceiling=self.rate_ceiling)
        # a start under the default floor lowers it (an explicit floor is checked above)
        return RateBounds(min(floor, self.rate_start), self.rate_start, self.rate_ceiling)

    @property
    def initial_rate(self) -> float:
        """The requests/s before any answer: the fixed rate, or a learned rate's start."""
        if isinstance(self.rate, str):
            return self.rate_bounds.start if self.rate_bounds else 0.0
        return self.rate

    @property
    def queue(self) -> str:
        """The Celery queue of this destination's wake-ups."""
        return queue_name(self.name)

    @property
    def limiter_scope(self) -> str:
        """The key of the quota this destination draws from."""
        return self.limiter_key or f"{self.platform}:{self.name}"

    @property
    def lease(self) -> timedelta:
        """How long a claim holds: two request timeouts (a lookup, a send) and room to record."""
        return timedelta(seconds=self.timeout * 2 + 5)


def group_queues(group: str, destinations: Iterable[DestinationConfig]) -> list[str]:
    """
    The queues a worker of `group` consumes: the control group takes beat's
    jobs and raw intake; any other group, the queues of its destinations.
    """
    if group == CONTROL_GROUP:
        return [CONTROL_QUEUE, INTAKE_QUEUE]
    return [d.queue for d in destinations if d.worker_group == group]


def queue_name(destination: str) -> str:
    """`deliver.<destination>`: one Celery queue per destination."""
    return f"deliver.{destination}"
