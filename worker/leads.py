"""
The words every layer shares: lead states, and `Delivery`, the value a
claimed delivery travels as from the ledger to an adapter and back. (A
platform is a plain name, a key of `worker.platforms.REGISTRY`.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class LeadState(StrEnum):
    HELD = "held"  #: a later Admitad stage, waiting for the stage before it to be decided
    QUEUED = "queued"  #: accepted and committed; waiting for its due time
    SENDING = "sending"  #: leased by a worker until lease_until
    RETRY_WAIT = "retry_wait"  #: a transient failure; due again at due_at
    DELIVERED = "delivered"  #: the platform took it (final)
    REJECTED = "rejected"  #: the platform refused it for good, in its own words (final)
    DEAD = "dead"  #: we gave up after max_attempts; the reason is on the last attempt
    UNMATCHED = "unmatched"  #: the platform never found what the lead refers to (final)
    AWAITING_STATUS = "awaiting_status"  #: accepted by a platform that decides later
    WAITING_CODE = "waiting_code"  #: a bank waits for the user's SMS code (Admitad)
    APPROVED = "approved"  #: the platform's final yes (Admitad)
    DECLINED = "declined"  #: the platform's final no (Admitad)
    ERROR = "error"  #: the platform's side failed it for good (Admitad)
    EXPIRED = "expired"  #: we stopped waiting for a status or a code (final)


#: States from which a delivery never moves again on its own.
FINAL_STATES = frozenset(
    {
        LeadState.DELIVERED,
        LeadState.REJECTED,
        LeadState.DEAD,
        LeadState.UNMATCHED,
        LeadState.APPROVED,
        LeadState.DECLINED,
        LeadState.ERROR,
        LeadState.EXPIRED,
    }
)

#: States a worker may claim once due_at has passed.
DUE_STATES = frozenset({LeadState.QUEUED, LeadState.RETRY_WAIT})

#: States the status poller claims once due_at has passed (due_at: the next look).
POLL_STATES = frozenset({LeadState.AWAITING_STATUS, LeadState.WAITING_CODE, LeadState.DELIVERED})
#: States of a lead that may take an SMS code (the second only while its application waits for one).
CODE_STATES = (LeadState.WAITING_CODE, LeadState.AWAITING_STATUS)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One lead on its way to one destination, as a worker holds it under lease."""

    id: int  #: the delivery row
    lead_id: str  #: our public id of the lead
    payload: Mapping[str, Any]  #: the lead as validated and normalised at the door
    attempt: int  #: 1 for the first send of this delivery
    created_at: datetime
    stage: int = 0  #: 0, or the stage number of a staged Admitad application
    external_id: str | None = None  #: the platform's id, once it gave one
    in_doubt: bool = False  #: a previous send may have arrived; look before resending
    data: Mapping[str, Any] = field(default_factory=dict)  #: what the platform said so far
    state: LeadState = LeadState.SENDING  #: the state it was claimed in (polling keeps it)
