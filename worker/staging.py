"""
Admitad's staged algorithm, run on our side, as pure decisions.

The document's example, `campaigns=[{"ids": [17809, 16126], "pause": 0},
{"ids": [17288, 16651], "pause": 150}, {"ids": [16633], "pause": 80}]`:

1. Stage 1 (17809, 16126) goes at once: its pause is 0.
2. Stage 1 is decided when none of its programs' responses is `processing`
   any more (`decide`). If at least one was accepted (by default `waiting` or
   `approved`: the advertiser took it by API without refusal), stage 2
   (17288, 16651) is due 150 minutes later: stage 2's own pause. If every one
   was `declined` or `error`, stage 2 is due at once: the 150 minutes are
   waited only after a success.
3. Stage 3 (16633) follows stage 2 the same way, after 80 minutes or at once.

`next_stage_due` gives the due time the ledger stores for the next stage's
delivery; the beat sweeper sends it when due. Never a Celery countdown: a pause
runs up to 1440 minutes, past any broker's visibility timeout.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from worker.platforms.admitad.campaigns import Stage

Verdict = Literal["undecided", "accepted", "refused"]

#: a response with this status has not reached the program yet
UNDECIDED = frozenset({"processing"})
#: one pause minute; tests and the demo pass a shorter one (scaled, not mocked away)
MINUTE = timedelta(minutes=1)


def decide(stage_statuses: Sequence[str], accepted: frozenset[str]) -> Verdict:
    """
    A stage's verdict from its programs' statuses: undecided while any is
    `processing`; accepted when any is in `accepted`; refused otherwise, and
    also when the stage has no response at all (no program took the application).
    """
    if any(s in UNDECIDED for s in stage_statuses):
        return "undecided"
    if any(s in accepted for s in stage_statuses):
        return "accepted"
    return "refused"


def next_stage_due(
    stages: Sequence[Stage],
    decided_stage: int,
    verdict: Verdict,
    now: datetime,
    *,
    minute: timedelta = MINUTE,
) -> datetime | None:
    """
    When the stage after `decided_stage` (1-based) is due: after that next
    stage's own pause when `verdict` is accepted, at once when refused. None
    when no stage follows, and while the verdict is undecided.
    """
    if verdict == "undecided" or not 1 <= decided_stage < len(stages):
        return None
    if verdict == "accepted":
        return now + stages[decided_stage].pause * minute
    return now
