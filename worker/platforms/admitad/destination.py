"""An Admitad destination's table: the website, the OAuth2 application, the staging."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, PositiveInt, SecretStr, field_validator

from worker.config import DestinationConfig

SubidField = Literal["subid", "subid1", "subid2", "subid3", "subid4"]


class AdmitadDestination(DestinationConfig):
    """An Admitad website (`w_id`) and the OAuth2 application that sends to it."""

    platform: Literal["admitad"]
    #: the website's id, `w_id` in every applications URL
    website_id: int = Field(gt=0)
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    #: "client": our ledger runs the stages; "server": Admitad runs the whole algorithm
    staging: Literal["client", "server"] = "client"
    #: the statuses that count as the advertiser taking an application (for staging)
    accepted_statuses: frozenset[str] = frozenset({"waiting", "approved"})
    #: where the relay's marker goes, to find an application whose answer was lost;
    #: a lead that sets this field itself is refused at the door
    subid_field: SubidField = "subid4"
    #: sends a lead waits for a program's campaign_settings before that program is dropped
    settings_attempts: PositiveInt = 3
    #: the first look at an undecided stage; each later look waits twice as long,
    #: up to poll_interval
    first_look: timedelta = timedelta(seconds=5)
    #: send every application with test_mode=1: Admitad answers without creating one
    test_mode: bool = False
    #: 600 requests a minute per application, Admitad's own limit
    rate: float = Field(default=10.0, gt=0)
    #: how long a bank waits for the user's SMS code before the application expires
    code_ttl: timedelta = timedelta(minutes=15)
    #: how long a program's campaign_settings are trusted in the shared cache
    settings_ttl: timedelta = timedelta(hours=1)
    #: how long one minute of a stage's `pause` lasts (a minute; shorter in tests and demos)
    pause_minute: timedelta = timedelta(minutes=1)

    @field_validator("batch_size")
    @classmethod
    def _one_per_request(cls, value: int) -> int:
        if value != 1:
            raise ValueError("Admitad takes one application per request: batch_size must be 1")
        return value
