"""Calltouch in the demo: custom fields added to requests, and leads it does not have yet."""

from __future__ import annotations

import random
from typing import Any

from producers.demo_platforms import DemoPlatform
from sandbox import calltouch as emulator

SITE_ID = "5150"
ACCESS_TOKEN = "demo-token"  # noqa: S105 - the emulator's, set just below
#: every 40th sample lead names a request Calltouch does not have yet
UNKNOWN_EVERY = 40


def sample(rng: random.Random, i: int) -> dict[str, Any]:
    """A deal stage for a request; every 40th names one Calltouch lacks (it ends unmatched)."""
    unknown = i % UNKNOWN_EVERY == UNKNOWN_EVERY - 1
    request_id = 990_000 + i if unknown else rng.randint(1, 500_000)
    return {
        "matching": [
            {"type": "request", "requestParams": {"requestId": request_id}},
            {"type": "leadContact", "leadContactParams": {"phones": [f"7916{i:07d}"]}},
        ],
        "addCustomFields": {
            "overwrite": False,
            "customFields": [{"field": "deal_stage", "value": rng.choice(["won", "lost"])}],
        },
    }


DEMO = DemoPlatform(
    app=lambda: emulator.create_app(
        site_id=SITE_ID,
        access_token=ACCESS_TOKEN,
        known_request_ids=range(1, 900_000),
        unknown_phones=[f"7916{i:07d}" for i in range(UNKNOWN_EVERY - 1, 10_000, UNKNOWN_EVERY)],
    ),
    table={
        "site_id": SITE_ID,
        "access_token": ACCESS_TOKEN,
        "rate": 5,
        # the demo's "not in Calltouch yet" leads give up after seconds, not a day
        "unmatched_retry": 0.5,
        "unmatched_horizon": 2,
    },
    sample=sample,
    bad=({"matching": [], "addCustomFields": {"customFields": [{"field": "x", "value": 1}]}},),
)
