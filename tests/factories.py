"""Valid-by-default leads and destination tables; override what a test is about."""

from __future__ import annotations

import itertools
from typing import Any

_counter = itertools.count(1)


def kuper_lead(**overrides: Any) -> dict[str, Any]:
    """A Kuper lead that passes every rule, with a phone no other call of this returns."""
    n = next(_counter)
    lead: dict[str, Any] = {
        "phone": f"+7 (916) {n // 10000 % 1000:03d}-{n // 100 % 100:02d}-{n % 100:02d}",
        "utm": {"utm_source": "test_partner"},
        "vacancy_id": 3,
        "city_id": 53,
        "first_name": "Тест",
    }
    lead.update(overrides)
    return lead


def kuper_table(base_url: str, **overrides: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "platform": "kuper",
        "base_url": base_url,
        "username": "partner",
        "password": "kuper-secret-pw",
        "rate": 50,
        "burst": 5,
        "batch_size": 50,
        "retry_initial": 0.2,
        "retry_max": 1,
    }
    table.update(overrides)
    return table


def calltouch_lead(**overrides: Any) -> dict[str, Any]:
    """A Calltouch custom-fields lead matched by a request id the emulator knows."""
    n = next(_counter)
    lead: dict[str, Any] = {
        "matching": [{"type": "request", "requestParams": {"requestId": n}}],
        "addCustomFields": {
            "overwrite": False,
            "customFields": [{"field": "stage", "value": "won"}],
        },
    }
    lead.update(overrides)
    return lead


def calltouch_table(base_url: str, **overrides: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "platform": "calltouch",
        "base_url": base_url,
        "site_id": "1234",
        "access_token": "calltouch-secret-token",
        "retry_initial": 0.2,
        "retry_max": 1,
    }
    table.update(overrides)
    return table


def salesman_lead(**overrides: Any) -> dict[str, Any]:
    n = next(_counter)
    lead: dict[str, Any] = {
        "title": "Иван Петров",
        "phone": f"+7 916 {n // 10000 % 1000:03d}-{n // 100 % 100:02d}-{n % 100:02d}",
        "email": f"ivan{n}@example.com",
        "company": "ООО Ромашка",
        "description": "хочет демо",
        "utm_source": "site",
    }
    lead.update(overrides)
    return lead


def salesman_table(base_url: str, **overrides: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "platform": "salesman",
        "base_url": base_url,
        "login": "manager@example.com",
        "api_key": "salesman-secret-apikey",
        "rate": 20,
        "retry_initial": 0.2,
        "retry_max": 1,
    }
    table.update(overrides)
    return table


#: a valid destination table per platform, for tests that go over every adapter
TABLES = {"kuper": kuper_table, "calltouch": calltouch_table, "salesman": salesman_table}
