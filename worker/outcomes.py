"""
What an adapter says a platform's answer means, as values the delivery loop acts on.

An answer is either about each lead of the request (`LeadOutcome`, one per
lead, in the order of the request) or about the whole request
(`RequestOutcome`). Adapters return them; only the delivery domain (`worker.delivery`) acts
on them.

=============  ======================================  ===================
outcome        what it means                           the lead becomes
=============  ======================================  ===================
Delivered      the platform took the lead              delivered
Pending        taken; the platform decides later       awaiting_status
Rejected       refused for good, in its own words      rejected
Retry          not now; try this lead again later      retry_wait → …
Throttled      429/503: the destination cools down     due again, uncounted
Suspended      auth or quota: the destination pauses   due again, uncounted
Failed         5xx, broken answer: retry every lead    retry_wait, counted
Split          a 4xx for the request as a whole        each half sent alone
=============  ======================================  ===================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from worker.leads import LeadState


@dataclass(frozen=True, slots=True)
class Delivered:
    """The platform took the lead; `external_id` is its id for it, when it gives one."""

    external_id: str | None = None
    detail: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Pending:
    """The platform took the lead and will decide later; we poll for the decision."""

    external_id: str | None = None
    detail: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    state: LeadState = LeadState.AWAITING_STATUS
    #: when to look again (or, waiting for a code, when to give up); None: at once
    wait: timedelta | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Refused for good; `reason` is the platform's own words."""

    reason: str
    data: Mapping[str, Any] = field(default_factory=dict)
    state: LeadState = LeadState.REJECTED


@dataclass(frozen=True, slots=True)
class Retry:
    """
    This lead, not now.

    `after` overrides the destination's backoff for this lead. With `horizon`,
    the retries do not count against `max_attempts`: the lead is retried until
    `horizon` has passed since it was accepted, then ends as `give_up_as`
    (Calltouch's "not in Calltouch yet" ends as `unmatched`).
    """

    reason: str
    after: timedelta | None = None
    horizon: timedelta | None = None
    give_up_as: LeadState = LeadState.DEAD


@dataclass(frozen=True, slots=True)
class Throttled:
    """429 or 503: every worker holds off the destination; the batch is due again."""

    retry_after: timedelta | None = None
    reason: str = "rate limited"


@dataclass(frozen=True, slots=True)
class Suspended:
    """
    The destination cannot deliver now (bad credentials, spent daily quota).

    The batch goes back untouched; the destination pauses until `until`, or
    until its daily quota resets when `until_quota_reset`, or for its
    configured `auth_pause` otherwise, and ops are told why.
    """

    reason: str
    until: datetime | None = None
    until_quota_reset: bool = False


@dataclass(frozen=True, slots=True)
class Failed:
    """
    The request failed as a whole (5xx, timeout, broken answer): each lead retries.

    `in_doubt` says the platform may have received the request (a read timeout,
    a connection cut after sending): for a platform without deduplication the
    next attempt looks the lead up before sending it again.
    """

    reason: str
    in_doubt: bool = False
    retry_after: timedelta | None = None


@dataclass(frozen=True, slots=True)
class Split:
    """
    The platform refused the request as a whole (Kuper's 400/422) without
    saying which lead: the loop sends each half on its own, recursively, so
    only the leads the platform itself refuses end rejected. A one-lead
    request never gets this: its refusal is that lead's `Rejected`.
    """

    reason: str


@dataclass(frozen=True, slots=True)
class Narrowed:
    """
    Not an outcome: a check before sending says "send, but with less". `data`
    is merged into the delivery's data before its request is built, and kept
    (Admitad: `{"dropped": [{"campaign_id", "message"}]}`, the programs left
    out because the application breaks their own rules).
    """

    data: Mapping[str, Any]
    detail: str = ""


LeadOutcome = Delivered | Pending | Rejected | Retry
RequestOutcome = Throttled | Suspended | Failed | Split
Answer = list[LeadOutcome] | RequestOutcome


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A later decision about a delivered or pending lead, found by polling."""

    state: LeadState
    detail: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NotSeen:
    """
    A poll's or lookup's answer did not cover this lead (a page of a list that
    did not reach it): unlike None (seen, unchanged), the loop reads the next
    page, or asks about the lead alone. `last`: no page after this one can
    cover it, so the poller asks about it alone at once.
    """

    last: bool = False


#: what a poll says of one lead: a change, nothing changed (None), or not covered
PollAnswer = StatusUpdate | NotSeen | None


# What the loop writes back once it has decided: plain values, so the decisions
# (`worker.delivery.retry`, `worker.delivery.polling`'s pure parts) load no database library; the
# ledger takes them as they are.


@dataclass(frozen=True, slots=True)
class Settlement:
    """What becomes of one claimed delivery: decided by `delivery.retry`, kept by the ledger."""

    delivery_id: int
    state: LeadState
    attempts: int
    due_at: datetime | None
    detail: str = ""
    external_id: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    in_doubt: bool = False
    outcome: str = ""  #: the outcome's name, for the attempt log


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One HTTP exchange, already redacted, for the ledger's attempt log."""

    destination: str
    kind: str
    at: datetime
    request: Mapping[str, Any]
    status_code: int | None
    answer: str
    error: str
    elapsed_ms: int
