"""Valid-by-default leads and destination tables; override what a test is about."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

from worker.ledger.store import NewLead

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


def admitad_lead(**overrides: Any) -> dict[str, Any]:
    lead: dict[str, Any] = {
        "campaigns": [17809],
        "user_notified": 1,
        "first_name": "Ivan",
        "last_name": "Ivanov",
        "middle_name": "Ivanovich",
        "mobile_phone": "79161234567",
        "email": "ivan@example.com",
        "work_date": "11.11.2016",
        "credit_sum": "150000.00",
        "credit_days": 30,
    }
    lead.update(overrides)
    return lead


def admitad_table(base_url: str, **overrides: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "platform": "admitad",
        "base_url": base_url,
        "website_id": 1,
        "client_id": "client",
        "client_secret": "admitad-client-secret",
        "poll_interval": 0.1,
        "pause_minute": 0.5,  # a pause minute lasts half a second in tests
        "retry_initial": 0.2,
        "retry_max": 1,
    }
    table.update(overrides)
    return table


#: a valid destination table per platform, for tests that go over every adapter
TABLES = {
    "kuper": kuper_table,
    "calltouch": calltouch_table,
    "salesman": salesman_table,
    "admitad": admitad_table,
}


def new_lead(
    i: int | str,
    key: str | None = None,
    stages: int = 1,
    delay: timedelta = timedelta(0),
    destination: str = "k",
) -> NewLead:
    """A lead as intake hands it to the ledger, its id made from `i` (32 characters)."""
    return NewLead(
        id=f"lead{i:0>28}",
        destination=destination,
        payload={"n": i},
        source="test",
        idempotency_key=key,
        stages=stages,
        delay=delay,
    )
