"""
Admitad's staged algorithm, run on our side, as pure decisions.

Admitad's example: `[{"ids": [17809, 16126], "pause": 0}, {"ids": [17288, 16651],
"pause": 150}, {"ids": [16633], "pause": 80}]`. Stage 1 goes at once. When stage 1
is decided (none of its responses is `processing` any more):

* at least one accepted (by default `waiting` or `approved`: the advertiser took
  it by API without refusal) → stage 2 goes 150 minutes later, its own pause;
* every one `declined` or `error` → stage 2 goes at once.

Stage 3 follows stage 2 the same way, with its 80 minutes. The due time is a
ledger column (the sweeper sends it when due), never a Celery countdown: pauses
run up to a day, past any broker's visibility timeout.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Literal

Verdict = Literal["undecided", "accepted", "refused"]

#: statuses Admitad may still change before the program has answered
UNDECIDED = frozenset({"processing"})


def decide(statuses: Iterable[str], accepted: frozenset[str]) -> Verdict:
    """A stage's verdict from its programs' statuses."""
    statuses = list(statuses)
    if not statuses:
        return "refused"  # no program took the application at all (every one in errors[])
    if any(s in UNDECIDED for s in statuses):
        return "undecided"
    return "accepted" if any(s in accepted for s in statuses) else "refused"


def next_stage_due(
    verdict: Verdict, next_pause_minutes: int, now: datetime, minute: timedelta
) -> datetime | None:
    """
    When the next stage is due: after its own pause if this one had a success, at
    once if not; None while this one is undecided. `minute` is how long a pause
    minute lasts (a minute; less in tests and the demo).
    """
    if verdict == "undecided":
        return None
    if verdict == "accepted":
        return now + next_pause_minutes * minute
    return now
