"""
An SMS code for an application a platform holds until the user confirms it
(Admitad's banks): the lead is leased, its adapter decides whether it takes a
code now, the code goes through the exchange, and the adapter's reading of
the answer settles it. The platform's own rules live with its adapter
(`worker.platforms.admitad.sms`).
"""

from __future__ import annotations

from dataclasses import dataclass

from worker import ledger
from worker.delivery import notify
from worker.delivery.context import WorkerContext
from worker.delivery.exchange import Exchange, NoSlot, Turn, call, read, record
from worker.leads import CODE_STATES, Delivery
from worker.platforms import adapter_for
from worker.platforms.base import TakesCodes


@dataclass(frozen=True, slots=True)
class Confirmation:
    """What became of a code: the lead's new state and the platform's words."""

    lead_id: str | None
    state: str
    detail: str


def confirm(ctx: WorkerContext, application_id: str, code: str) -> Confirmation:
    """Send the user's code for an application waiting for it; record what the platform said."""
    owner, now = Turn.owner_id(), ctx.clock()
    with ctx.sessions.begin() as session:
        found = ledger.lease_waiting(
            session,
            application_id,
            states=CODE_STATES,
            owner=owner,
            now=now,
            lease=ctx.settings.lease,
        )
    if found is None:
        return Confirmation(None, "unknown", "no application waits for a code under that id")
    destination, waiting, due_at = found
    dest = ctx.settings.destination(destination)
    turn = Turn(ctx, dest, adapter_for(dest), owner)
    adapter = turn.adapter
    if not isinstance(adapter, TakesCodes):
        return _unleased(turn, waiting, "unknown", f"{dest.platform} takes no SMS codes")
    deadline = adapter.code_deadline(waiting, due_at)
    refusal = adapter.code_refusal(waiting, deadline, now)
    if refusal or deadline is None:
        return _unleased(turn, waiting, str(waiting.state), refusal)
    exchange = call(turn, adapter.build_confirm(application_id, code, dest), kind="confirm")
    if not isinstance(exchange, Exchange):
        wait = exchange.wait.total_seconds() if isinstance(exchange, NoSlot) else 0
        why = f"not sent: {dest.name}'s rate limit is busy; send the code again in {wait:.0f} s"
        return _unleased(turn, waiting, str(waiting.state), why)
    outcome = read(exchange, lambda r: adapter.parse_confirm(r, dest))
    settlement = adapter.after_confirm(waiting, outcome, deadline, turn.now())
    with ctx.sessions.begin() as session:
        target = notify.target(dest, ctx.secrets)
        ledger.settle(session, owner, [settlement], turn.now(), target)
        record(turn, session, exchange, [(waiting.id, "confirm", settlement.detail)])
    return Confirmation(waiting.lead_id, str(settlement.state), settlement.detail)


def _unleased(turn: Turn, waiting: Delivery, state: str, detail: str) -> Confirmation:
    """Give the lead back as it was, and say why no code went out."""
    with turn.ctx.sessions.begin() as session:
        ledger.unlease(session, turn.owner, [waiting.id], turn.now())
    return Confirmation(waiting.lead_id, state, detail)
