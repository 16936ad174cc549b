"""
SMS verification (Admitad's banks): an application created with `sync_create`
waits in `waiting_code` until the user's code is confirmed, or expires after the
destination's `code_ttl`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from worker import delivery as loop
from worker import ledger, retry
from worker.context import WorkerContext
from worker.leads import Delivery, LeadState
from worker.outcomes import Failed, Pending, Suspended, Throttled
from worker.platforms import adapter_for


@dataclass(frozen=True, slots=True)
class Confirmation:
    """What became of a code: the lead's new state and the platform's words."""

    lead_id: str | None
    state: str
    detail: str


def confirm(ctx: WorkerContext, application_id: str, code: str) -> Confirmation:
    """Send the user's code for an application waiting for it; record what the bank said."""
    owner, now = uuid.uuid4().hex, ctx.clock()
    with ctx.sessions.begin() as session:
        found = ledger.lease_waiting(
            session,
            application_id,
            state=LeadState.WAITING_CODE,
            owner=owner,
            now=now,
            lease=ctx.settings.lease,
        )
    if found is None:
        return Confirmation(None, "unknown", "no application waits for a code under that id")
    destination, waiting = found
    dest = ctx.settings.destination(destination)
    adapter = adapter_for(dest)
    confirm_request = getattr(adapter, "build_confirm", None)
    if confirm_request is None:
        return Confirmation(waiting.lead_id, "unknown", f"{dest.platform} takes no SMS codes")
    exchange = loop.send(ctx, dest, adapter, confirm_request(application_id, code, dest))
    if exchange.response is None:
        outcome: object = Failed(exchange.error)
    else:
        outcome = adapter.parse_confirm(exchange.response)  # type: ignore[attr-defined]
    deadline = now + getattr(dest, "code_ttl", ctx.settings.lease)
    if isinstance(outcome, Pending) and outcome.state == LeadState.WAITING_CODE:
        # a wrong code: the application keeps waiting for the right one
        settlement = _still_waiting(waiting, deadline, outcome.detail)
    elif isinstance(outcome, Failed | Suspended | Throttled):
        settlement = _still_waiting(waiting, deadline, f"not confirmed now ({outcome.reason})")
    else:
        settlement = retry.settle(waiting, outcome, dest, now, ctx.rand)  # type: ignore[arg-type]
    with ctx.sessions.begin() as session:
        ledger.settle(session, owner, [settlement], now)
        loop._record(
            ctx, session, dest, "confirm", exchange, [(waiting.id, "confirm", settlement.detail)]
        )
    return Confirmation(waiting.lead_id, str(settlement.state), settlement.detail)


def _still_waiting(waiting: Delivery, deadline: datetime, detail: str) -> ledger.Settlement:
    return ledger.Settlement(
        waiting.id,
        LeadState.WAITING_CODE,
        waiting.attempt - 1,
        deadline,
        detail,
        waiting.external_id,
        dict(waiting.data),
    )
