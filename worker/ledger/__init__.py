"""
The ledger: the only package that speaks SQL. Callers use these names, and what
comes back is values, never ORM rows; ops' read-only questions are in `reports`,
and the settlement events' outbox in `outbox`.
"""

from worker.ledger.outbox import Event, Notify
from worker.ledger.reports import Backlog, backlog
from worker.ledger.store import (
    NewLead,
    Pause,
    RequeueFilter,
    active_pause,
    claim_due,
    clear_pause,
    count_requeue,
    due_counts,
    extend_lease,
    insert_leads,
    lease_waiting,
    pauses,
    poll_due_counts,
    purge_personal_data,
    record_attempt,
    record_refusal,
    release,
    release_next_stage,
    requeue,
    set_pause,
    settle,
    sweep_expired_leases,
    unlease,
)
from worker.outcomes import AttemptRecord, Settlement

__all__ = [
    "AttemptRecord",
    "Backlog",
    "Event",
    "NewLead",
    "Notify",
    "Pause",
    "RequeueFilter",
    "Settlement",
    "active_pause",
    "backlog",
    "claim_due",
    "clear_pause",
    "count_requeue",
    "due_counts",
    "extend_lease",
    "insert_leads",
    "lease_waiting",
    "pauses",
    "poll_due_counts",
    "purge_personal_data",
    "record_attempt",
    "record_refusal",
    "release",
    "release_next_stage",
    "requeue",
    "set_pause",
    "settle",
    "sweep_expired_leases",
    "unlease",
]
