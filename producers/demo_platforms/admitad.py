"""Admitad in the demo: two-stage applications, one bank of the first stage declining."""

from __future__ import annotations

import random
from typing import Any

from producers.demo_platforms import DemoPlatform
from sandbox import admitad as emulator

CLIENT_ID = "demo"
CLIENT_SECRET = "demo-secret"  # noqa: S105 - the emulator's, set just below
#: the first stage's banks (one declines), then the bank of the second stage
FIRST, DECLINING, SECOND = 17809, 16126, 16633


def sample(rng: random.Random, i: int) -> dict[str, Any]:
    """Two stages: two banks first; if either takes it, a third after a 2-minute pause."""
    return {
        "campaigns": [{"ids": [FIRST, DECLINING], "pause": 0}, {"ids": [SECOND], "pause": 2}],
        "user_notified": 1,
        "first_name": rng.choice(["Anna", "Ivan", "Oleg"]),
        "last_name": "Petrov",
        "mobile_phone": f"7916{i:07d}",
        "credit_sum": "150000.00",
        "credit_days": 30,
        "birth_date": "01.02.1990",
    }


DEMO = DemoPlatform(
    app=lambda: emulator.create_app(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        decide_after=0.3,
        outcomes={DECLINING: "declined"},
    ),
    table={
        "website_id": 1,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "rate": 50,
        "poll_interval": 0.2,
        "pause_minute": 0.5,  # the demo's pause minutes last half a second
    },
    sample=sample,
    bad=({"campaigns": [FIRST], "user_notified": 0, "birth_date": "31.02.1990"},),
)
