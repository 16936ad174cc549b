"""
SMS verification (Admitad's banks): an application created with `sync_create`
waits in `waiting_code` for the user's code, until the destination's
`code_ttl` has passed.

Admitad's own example answers a confirm with `waiting_sms_verification`, so
the answer cannot tell a right code from a wrong one. After any answer the
lead is `awaiting_status` and its application is polled like any other until
it is final. While the application still waits for verification (Admitad
lists no response for it yet) and the code has not expired, the lead takes
another code.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from worker import delivery as loop
from worker import ledger
from worker.context import WorkerContext
from worker.leads import Delivery, LeadState
from worker.outcomes import Failed, Pending, Rejected, Suspended, Throttled
from worker.platforms import adapter_for

#: states of a lead that may take a code (the second only while its application waits for one)
TAKES_A_CODE = (LeadState.WAITING_CODE, LeadState.AWAITING_STATUS)


@dataclass(frozen=True, slots=True)
class Confirmation:
    """What became of a code: the lead's new state and the platform's words."""

    lead_id: str | None
    state: str
    detail: str


def code_deadline(waiting: Delivery, due_at: datetime | None) -> datetime | None:
    """When the code of a lead stops counting: kept in its data after the first confirm."""
    kept = waiting.data.get("code_until")
    if isinstance(kept, str):
        return datetime.fromisoformat(kept)
    return due_at if waiting.state == LeadState.WAITING_CODE else None


def confirm(ctx: WorkerContext, application_id: str, code: str) -> Confirmation:
    """Send the user's code for an application waiting for it; record what the bank said."""
    owner, now = uuid.uuid4().hex, ctx.clock()
    with ctx.sessions.begin() as session:
        found = ledger.lease_waiting(
            session,
            application_id,
            states=TAKES_A_CODE,
            owner=owner,
            now=now,
            lease=ctx.settings.lease,
        )
    if found is None:
        return Confirmation(None, "unknown", "no application waits for a code under that id")
    destination, waiting, due_at = found
    deadline = code_deadline(waiting, due_at)
    refusal = _takes_no_code(waiting, deadline, now)
    if refusal:
        with ctx.sessions.begin() as session:
            ledger.unlease(session, owner, [waiting.id], now)
        return Confirmation(waiting.lead_id, str(waiting.state), refusal)
    assert deadline is not None  # noqa: S101 - _takes_no_code refuses a lead without one
    dest = ctx.settings.destination(destination)
    adapter: Any = adapter_for(dest)
    if not hasattr(adapter, "build_confirm"):
        with ctx.sessions.begin() as session:
            ledger.unlease(session, owner, [waiting.id], now)
        return Confirmation(waiting.lead_id, "unknown", f"{dest.platform} takes no SMS codes")
    exchange = loop.send(ctx, dest, adapter, adapter.build_confirm(application_id, code, dest))
    outcome = (
        Failed(exchange.error)
        if exchange.response is None
        else adapter.parse_confirm(exchange.response, dest)
    )
    settlement = _after_confirm(waiting, outcome, deadline, now)
    with ctx.sessions.begin() as session:
        ledger.settle(session, owner, [settlement], now)
        loop._record(
            ctx, session, dest, "confirm", exchange, [(waiting.id, "confirm", settlement.detail)]
        )
    return Confirmation(waiting.lead_id, str(settlement.state), settlement.detail)


def _takes_no_code(waiting: Delivery, deadline: datetime | None, now: datetime) -> str:
    """Why this lead takes no code now; empty when it does."""
    if deadline is None:
        return "the application does not wait for an SMS code"
    if now >= deadline:
        return "the SMS code has expired"
    if waiting.state == LeadState.AWAITING_STATUS and waiting.data.get("responses"):
        return "the application is verified and with its bank: it takes no more codes"
    return ""


def _after_confirm(
    waiting: Delivery, outcome: object, deadline: datetime, now: datetime
) -> ledger.Settlement:
    """
    Any answer from the bank: awaiting status, looked at soon. A refused code
    or a failed request: the lead stays as it was and may take another code.
    """
    data: dict[str, Any] = {**waiting.data, "code_until": deadline.isoformat()}
    if isinstance(outcome, Pending):
        wait = outcome.wait or timedelta(0)
        return ledger.Settlement(
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
    return ledger.Settlement(
        delivery_id=waiting.id,
        state=waiting.state,
        attempts=waiting.attempt - 1,
        due_at=due,
        detail=detail,
        external_id=waiting.external_id,
        data=data,
    )
