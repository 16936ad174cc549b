"""Kuper in the demo: batches of 50 to a partner account whose sources all take leads."""

from __future__ import annotations

import random
from typing import Any

from producers.demo_platforms import DemoPlatform
from sandbox import kuper as emulator

USERNAME = "demo"
PASSWORD = "demo-password"  # noqa: S105 - the emulator's, set just below


def sample(rng: random.Random, i: int) -> dict[str, Any]:
    """A candidate with a phone as people write it, normalised at the door."""
    phone = (
        f"+7 (9{rng.randint(10, 99)}) {rng.randint(100, 999)}-{i // 100 % 100:02d}-{i % 100:02d}"
    )
    return {
        "phone": phone,
        "utm": {"utm_source": "demo_partner"},
        "vacancy_id": rng.randint(1, 40),
        "city_id": str(rng.randint(1, 90)),  # a numeric string: coerced at the door
        "first_name": rng.choice(["Анна", "Иван", "Олег", "Мария"]),
    }


DEMO = DemoPlatform(
    app=lambda: emulator.create_app(username=USERNAME, password=PASSWORD),
    table={
        "username": USERNAME,
        "password": PASSWORD,
        "rate": 20,
        "burst": 2,
        "batch_size": 50,
    },
    sample=sample,
    bad=(
        {"phone": "12345", "utm": {"utm_source": "demo_partner"}, "vacancy_id": 1, "city_id": 1},
        {"phone": "+7 915 000-00-01", "utm": {}, "vacancy_id": "three", "city_id": 1},
    ),
)
