"""
The public Python API of lead relay, for upstream code.

    from producers import submit, submit_many, status, Submission

    lead_id = submit("kuper-main", {"phone": "+7 915 888-11-22", "utm": {"utm_source": "site"},
                                    "vacancy_id": 3, "city_id": 53},
                     idempotency_key="order-1781")
    seen = status(lead_id)              # or status_by_key("kuper-main", "order-1781")
    print(seen.state, seen.final, [(d.stage, d.state, d.external_id) for d in seen.deliveries])

From asyncio code (a FastAPI handler, say), the same calls without blocking the loop:

    from producers import asubmit, astatus, LeadInvalid, LeadStatus

    @app.post("/leads/{order_id}")
    async def create(order_id: str, lead: dict[str, Any]) -> dict[str, str]:
        try:
            lead_id = await asubmit("kuper-main", lead, idempotency_key=order_id)
        except LeadInvalid as exc:
            raise HTTPException(422, [str(e) for e in exc.errors]) from None
        return {"lead_id": lead_id}

    @app.get("/leads/{lead_id}")
    async def where(lead_id: str) -> LeadStatus:
        seen = await astatus(lead_id)
        if seen is None:
            raise HTTPException(404, "no such lead")
        return seen

A lead is validated against its platform's documented rules at once: a bad
one raises `LeadInvalid` with every field and rule it broke and is never
stored. The same idempotency key for the same destination gives the same lead
id and never a second delivery. `status` answers None for a lead the ledger
does not hold; its `LeadStatus` never carries the lead's personal data.

Every name here is loaded on first use (PEP 562): `import producers` loads
neither SQLAlchemy nor the service, and a host that never touches an async name
never loads `producers.aio` nor SQLAlchemy's asyncio extension.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from producers.aio import AsyncProducer, astatus, astatus_by_key, asubmit, asubmit_many
    from producers.client import Producer, confirm_sms, submit, submit_many
    from producers.lead_status import LeadStatus, status, status_by_key
    from worker.errors import FieldError, LeadInvalid, UnknownDestination
    from worker.intake import Accepted, Submission

#: each public name, and the module that defines it
_WHERE = {
    "Accepted": "worker.intake",
    "Submission": "worker.intake",
    "FieldError": "worker.errors",
    "LeadInvalid": "worker.errors",
    "UnknownDestination": "worker.errors",
    "Producer": "producers.client",
    "confirm_sms": "producers.client",
    "submit": "producers.client",
    "submit_many": "producers.client",
    "LeadStatus": "producers.lead_status",
    "status": "producers.lead_status",
    "status_by_key": "producers.lead_status",
    "AsyncProducer": "producers.aio",
    "astatus": "producers.aio",
    "astatus_by_key": "producers.aio",
    "asubmit": "producers.aio",
    "asubmit_many": "producers.aio",
}

__all__ = [
    "Accepted",
    "AsyncProducer",
    "FieldError",
    "LeadInvalid",
    "LeadStatus",
    "Producer",
    "Submission",
    "UnknownDestination",
    "astatus",
    "astatus_by_key",
    "asubmit",
    "asubmit_many",
    "confirm_sms",
    "status",
    "status_by_key",
    "submit",
    "submit_many",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
