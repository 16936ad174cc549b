"""
Where a submitted lead stands: `status(lead_id)`, `status_by_key(destination, key)`.

    from producers import status, status_by_key

    seen = status_by_key("kuper-main", "order-1781")
    if seen is not None and seen.final:
        print(seen.state, [d.external_id for d in seen.deliveries])

The answer is a `LeadStatus`, a frozen pydantic model, or None for a lead the
ledger does not hold. It carries ids, states, times, counts and the platforms'
short words, redacted: never the lead's payload, a request body or a raw answer.
The async twins are `producers.astatus` and `producers.astatus_by_key`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from producers.client import default
from worker.intake import Ledgered
from worker.leads import FINAL_STATES, LeadState
from worker.ledger import status as ledger_status
from worker.ops.redact import redact_text
from worker.settings import secret_values

#: the longest detail a status carries (the ledger keeps up to 2,000 characters)
DETAIL_CHARS = 300

#: Of a lead whose every delivery is final, the state that stands for it: the best
#: any stage reached (a stage the platform took, before one it refused, before one
#: we gave up on).
_FINAL_ORDER = (
    LeadState.APPROVED,
    LeadState.DELIVERED,
    LeadState.DECLINED,
    LeadState.REJECTED,
    LeadState.UNMATCHED,
    LeadState.ERROR,
    LeadState.EXPIRED,
    LeadState.DEAD,
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class AttemptStatus(_Frozen):
    """One exchange with the platform that carried one of the lead's deliveries."""

    stage: int
    """The delivery it carried: 0 for a lead of one delivery, else the Admitad stage."""
    kind: str
    """`send`; `check` (a program's rules, before a send); `lookup` (before a send in doubt
    is repeated); `poll` (a status); `confirm` (an SMS code)."""
    at: datetime
    """When the request left (UTC)."""
    status_code: int | None
    """The HTTP status; None when no answer came (a timeout, a cut connection)."""
    outcome: str
    """What it meant for the delivery: `delivered`, `rejected`, `retry`, `throttled`, …"""
    detail: str
    """The platform's words for this delivery, or why the exchange failed; redacted, short."""
    elapsed_ms: int
    """How long the exchange took."""


class DeliveryStatus(_Frozen):
    """One delivery of the lead: the whole lead, or one stage of a staged Admitad application."""

    stage: int
    """0 for a lead of one delivery; 1, 2, … for the stages of a staged application."""
    state: LeadState
    """Where this delivery stands."""
    attempts: int
    """Sends counted against `max_attempts` (a throttled send does not count)."""
    in_doubt: bool
    """A send once went unanswered: the platform may hold the lead twice if it has no dedup."""
    due_at: datetime | None
    """When it is due next (a send, a retry, a stage after its pause, a status poll)."""
    settled_at: datetime | None
    """When it reached a final state, or was delivered."""
    external_id: str | None
    """The platform's id for it (Kuper's uuid, Admitad's application, SalesMan's lead)."""
    detail: str
    """The platform's last words or our reason (`dead`, `rejected`, …); redacted, short."""


class LeadStatus(_Frozen):
    """
    One lead: its ids, where it stands, each delivery and every attempt, oldest first.

    `state` is the lead's own: while any delivery still moves, the state of the
    first one that does (by stage); once every one is final, the best any
    reached (`approved`, then `delivered`, `declined`, `rejected`, `unmatched`,
    `error`, `expired`, `dead`). `deliveries` holds each stage's own.
    """

    lead_id: str
    """Our id: what `submit` returned."""
    destination: str
    """The destination it was submitted to."""
    idempotency_key: str | None
    """The producer's key, if it gave one."""
    source: str
    """How it came in: `api`, `import`, `celery`, …"""
    accepted_at: datetime
    """When the ledger committed it (UTC)."""
    state: LeadState
    """Where the lead stands (see the class's description)."""
    final: bool
    """True once no delivery of the lead will move again on its own."""
    deliveries: tuple[DeliveryStatus, ...]
    """One per delivery, by stage."""
    attempts: tuple[AttemptStatus, ...]
    """Every exchange that carried one of its deliveries, oldest first."""

    @classmethod
    def from_seen(cls, seen: ledger_status.LeadSeen, secrets: Iterable[str] = ()) -> LeadStatus:
        """Build the status from what the ledger read, redacting every free text."""
        masked = tuple(secrets)
        deliveries = tuple(
            DeliveryStatus(
                stage=d.stage,
                state=LeadState(d.state),
                attempts=d.attempts,
                in_doubt=d.in_doubt,
                due_at=d.due_at,
                settled_at=d.settled_at,
                external_id=d.external_id,
                detail=short(d.detail, masked),
            )
            for d in seen.deliveries
        )
        return cls(
            lead_id=seen.id,
            destination=seen.destination,
            idempotency_key=seen.idempotency_key,
            source=seen.source,
            accepted_at=seen.accepted_at,
            state=lead_state(deliveries),
            final=all(d.state in FINAL_STATES for d in deliveries),
            deliveries=deliveries,
            attempts=tuple(
                AttemptStatus(
                    stage=a.stage,
                    kind=a.kind,
                    at=a.at,
                    status_code=a.status_code,
                    outcome=a.outcome,
                    detail=short(a.detail, masked),
                    elapsed_ms=a.elapsed_ms,
                )
                for a in seen.attempts
            ),
        )


def lead_state(deliveries: Sequence[DeliveryStatus]) -> LeadState:
    """The lead's state from its deliveries' (see `LeadStatus`)."""
    moving = [d.state for d in deliveries if d.state not in FINAL_STATES]
    if moving:
        return moving[0]
    reached = {d.state for d in deliveries}
    return next((s for s in _FINAL_ORDER if s in reached), LeadState.QUEUED)


def short(text: str, secrets: Sequence[str]) -> str:
    """`text` redacted (secrets, phones, e-mails, credentials), then cut to DETAIL_CHARS."""
    cleaned = redact_text(text, secrets)
    return cleaned if len(cleaned) <= DETAIL_CHARS else cleaned[: DETAIL_CHARS - 1] + "…"


def lead_status(ctx: Ledgered, lead_id: str) -> LeadStatus | None:
    """The lead with our id `lead_id`, read through `ctx`'s ledger; None if unknown."""
    with ctx.sessions() as session:
        seen = ledger_status.lead_status(session, lead_id)
    return None if seen is None else LeadStatus.from_seen(seen, secret_values(ctx.settings))


def lead_status_by_key(ctx: Ledgered, destination: str, key: str) -> LeadStatus | None:
    """The lead submitted to `destination` with idempotency key `key`; None if unknown."""
    with ctx.sessions() as session:
        seen = ledger_status.lead_status_by_key(session, destination, key)
    return None if seen is None else LeadStatus.from_seen(seen, secret_values(ctx.settings))


def status(lead_id: str) -> LeadStatus | None:
    """Where the lead with our id `lead_id` stands, or None if the ledger holds no such lead."""
    return lead_status(default().ctx, lead_id)


def status_by_key(destination: str, key: str) -> LeadStatus | None:
    """Where the lead submitted to `destination` with idempotency key `key` stands, or None."""
    return lead_status_by_key(default().ctx, destination, key)
