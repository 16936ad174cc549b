"""SalesMan in the demo: one lead a request into a CRM that deduplicates nothing."""

from __future__ import annotations

import random
from typing import Any

from producers.demo_platforms import DemoPlatform
from sandbox import salesman as emulator

LOGIN = "demo@example.com"
API_KEY = "demo-apikey"


def sample(rng: random.Random, i: int) -> dict[str, Any]:
    """A web-form lead with a contact person, a phone and an e-mail."""
    return {
        "title": rng.choice(["Анна Смирнова", "Иван Петров", "Олег Сидоров"]),
        "phone": f"+7 903 {i // 10000 % 1000:03d}-{i // 100 % 100:02d}-{i % 100:02d}",
        "email": f"client{i}@example.com",
        "company": "ООО Ромашка",
        "description": "заявка с сайта",
        "utm_source": "demo",
    }


DEMO = DemoPlatform(
    app=lambda: emulator.create_app(login=LOGIN, api_key=API_KEY),
    table={
        "login": LOGIN,
        "api_key": API_KEY,
        "rate": 50,  # the emulator sends no e-mail; a real CRM gets the default, 1/s
        "concurrency": 2,
    },
    sample=sample,
    bad=({"title": "Без контактов"}, {"title": "X", "email": "not-an-email"}),
)
