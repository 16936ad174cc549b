"""
SMS verification (Admitad's banks), as pure decisions: an application created
with `sync_create` waits in `waiting_code` for the user's code, until the
destination's `code_ttl` has passed.

Admitad's own example answers a confirm with `waiting_sms_verification`, so
the answer cannot tell a right code from a wrong one. After any answer the
lead is `awaiting_status` and its application is polled like any other until
it is final. While the application still waits for verification (Admitad
lists no response for it yet) and the code has not expired, the lead takes
another code. `worker.delivery.confirm` runs the exchange; these decide.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from worker.leads import Delivery, LeadState
from worker.outcomes import Failed, Pending, Rejected, Settlement, Suspended, Throttled


def code_deadline(waiting: Delivery, due_at: datetime | None) -> datetime | None:
    """When the code of a lead stops counting: kept in its data after the first confirm."""
    kept = waiting.data.get("code_until")
    if isinstance(kept, str):
        return datetime.fromisoformat(kept)
    return due_at if waiting.state == LeadState.WAITING_CODE else None


def code_refusal(waiting: Delivery, deadline: datetime | None, now: datetime) -> str:
    """Why this lead takes no code now; empty when it does."""
    if deadline is None:
        return "the application does not wait for an SMS code"
    if now >= deadline:
        return "the SMS code has expired"
    if waiting.state == LeadState.AWAITING_STATUS and waiting.data.get("responses"):
        return "the application is verified and with its bank: it takes no more codes"
    return ""


def after_confirm(
    waiting: Delivery, outcome: object, deadline: datetime, now: datetime
) -> Settlement:
    """
    Any answer from the bank: awaiting status, looked at soon. A refused code
    or a failed request: the lead stays as it was and may take another code.
    """
    data: dict[str, Any] = {**waiting.data, "code_until": deadline.isoformat()}
    if isinstance(outcome, Pending):
        wait = outcome.wait or timedelta(0)
        return Settlement(
            delivery_id=waiting.id,
            state=LeadState.AWAITING_STATUS,
            attempts=waiting.attempt - 1,
            due_at=now + wait,
            detail=outcome.detail,
            external_id=outcome.external_id or waiting.external_id,
            data={**data, **outcome.data, "looks": 0},
            outcome="confirmed",
        )
    if isinstance(outcome, Rejected):
        detail = f"{outcome.reason}; another code may be sent until it expires"
    elif isinstance(outcome, Failed | Suspended | Throttled):
        detail = f"not confirmed now ({outcome.reason}); send the code again"
    else:
        detail = "an answer the relay cannot read; send the code again"
    due = deadline if waiting.state == LeadState.WAITING_CODE else now
    return Settlement(
        delivery_id=waiting.id,
        state=waiting.state,
        attempts=waiting.attempt - 1,
        due_at=due,
        detail=detail,
        external_id=waiting.external_id,
        data=data,
    )
