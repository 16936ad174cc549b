"""
Admitad's staged algorithm, run on our side, as pure decisions.

The document's example, `campaigns=[{"ids": [17809, 16126], "pause": 0},
{"ids": [17288, 16651], "pause": 150}, {"ids": [16633], "pause": 80}]`:

1. Stage 1 (17809, 16126) goes after its own pause: 0 here, so at once. The
   document defines `pause` as the pause before the group is sent, and the
   first group is no exception (`first_delay`).
2. Stage 1 is decided once every one of its programs has answered (`decide`):
   each has a response that is no longer `processing`, or an entry in
   `errors[]` (or was dropped by us before sending: a broken rule of its own).
   A program not listed yet keeps the stage undecided. If at least one program
   accepted (by default `waiting` or `approved`: the advertiser took it by API
   without refusal), stage 2 (17288, 16651) is due 150 minutes later: stage
   2's own pause. If none did, stage 2 is due at once.
3. Stage 3 (16633) follows stage 2 the same way, after 80 minutes or at once.

While a stage is undecided its application is looked at on a short, growing
cadence (`next_look`: 5 s, 10 s, 20 s … up to the destination's
`poll_interval`), so a verdict is seen within seconds of being given, and
the pause after it starts on time.

`next_stage_due` gives the due time the ledger stores for the next stage's
delivery; the beat sweeper sends it when due. Never a Celery countdown: a pause
runs up to 1440 minutes, past any broker's visibility timeout.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from worker.platforms.admitad.campaigns import Stage

Verdict = Literal["undecided", "accepted", "refused"]

#: a response with this status has not reached the program yet
UNDECIDED = frozenset({"processing"})
#: one pause minute; tests and the demo pass a shorter one (scaled, not mocked away)
MINUTE = timedelta(minutes=1)
#: the first look at an undecided stage; each look after it waits twice as long
FIRST_LOOK = timedelta(seconds=5)


def decide(
    programs: Collection[int],
    statuses: Mapping[int, str],
    answered: Collection[int],
    accepted: frozenset[str],
) -> Verdict:
    """
    A stage's verdict from its programs' answers.

    `programs`: the stage's programs; `statuses`: program → its response's
    status, for the programs Admitad lists; `answered`: programs that answered
    otherwise (an entry in `errors[]`, or dropped before sending). Undecided
    while any program has neither a status other than `processing` nor an
    answer, so an empty `responses` with no `errors` is undecided too.
    Accepted when any status is in `accepted`; refused otherwise.
    """
    for c_id in programs:
        if c_id in answered:
            continue
        if statuses.get(c_id, "processing") in UNDECIDED:
            return "undecided"
    if any(statuses.get(c_id) in accepted for c_id in programs if c_id not in answered):
        return "accepted"
    return "refused"


def first_delay(stages: Sequence[Stage], *, minute: timedelta = MINUTE) -> timedelta:
    """How long after acceptance the first stage goes: its own pause."""
    return stages[0].pause * minute if stages else timedelta(0)


def next_look(looks: int, ceiling: timedelta, *, first: timedelta = FIRST_LOOK) -> timedelta:
    """
    The wait before the next look at an undecided stage, after `looks` looks:
    `first`, doubling each look, never longer than `ceiling` (the destination's
    poll_interval). Looks at 5, 15, 35, 75 … seconds after the send.
    """
    if looks >= 32:  # 2**32 × 5 s is past any ceiling; keeps the number small
        return ceiling
    return min(ceiling, first * (1 << looks))


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
