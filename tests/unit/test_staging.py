"""Admitad's staged algorithm: when a stage is decided and when the next one is due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker import staging
from worker.platforms.admitad.campaigns import normalise

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
ACCEPTED = frozenset({"waiting", "approved"})
#: the document's three-stage example
STAGES = normalise(
    [
        {"ids": [17809, 16126], "pause": 0},
        {"ids": [17288, 16651], "pause": 150},
        {"ids": [16633], "pause": 80},
    ]
)


@pytest.mark.parametrize(
    ("statuses", "verdict"),
    [
        (["processing", "approved"], "undecided"),
        (["processing"], "undecided"),
        (["declined", "error"], "refused"),
        (["declined", "waiting"], "accepted"),
        (["approved"], "accepted"),
        ([], "refused"),
    ],
)
def test_a_stage_is_decided_once_nothing_is_processing(statuses: list[str], verdict: str) -> None:
    """Undecided while a response is processing; accepted with one success; refused else."""
    assert staging.decide(statuses, ACCEPTED) == verdict


def test_which_statuses_count_as_accepted_is_a_setting() -> None:
    """With only `approved` accepted, a `waiting` stage is refused."""
    assert staging.decide(["waiting"], frozenset({"approved"})) == "refused"


def test_after_a_success_the_second_stage_waits_its_own_150_minutes() -> None:
    """The document: the second group waits 150 minutes only if the first had a success."""
    due = staging.next_stage_due(STAGES, 1, "accepted", NOW)
    assert due == NOW + timedelta(minutes=150)


def test_after_all_declined_the_second_stage_is_due_at_once() -> None:
    """Every response of stage 1 declined or error: stage 2 goes without its pause."""
    assert staging.next_stage_due(STAGES, 1, "refused", NOW) == NOW


def test_the_third_stage_follows_the_second_by_its_80_minutes() -> None:
    """Stage 3 waits its own pause after an accepted stage 2."""
    assert staging.next_stage_due(STAGES, 2, "accepted", NOW) == NOW + timedelta(minutes=80)
    assert staging.next_stage_due(STAGES, 2, "refused", NOW) == NOW


def test_three_stages_declined_then_accepted() -> None:
    """Stage 1 declined → stage 2 at once; stage 2 accepted → stage 3 after 80 minutes."""
    t1 = NOW
    t2 = staging.next_stage_due(STAGES, 1, staging.decide(["declined", "error"], ACCEPTED), t1)
    assert t2 == t1
    decided = t1 + timedelta(minutes=7)
    t3 = staging.next_stage_due(
        STAGES, 2, staging.decide(["declined", "waiting"], ACCEPTED), decided
    )
    assert t3 == decided + timedelta(minutes=80)


def test_no_stage_follows_the_last_one_nor_an_undecided_one() -> None:
    """None when the decided stage is the last, and while it is undecided."""
    assert staging.next_stage_due(STAGES, 3, "accepted", NOW) is None
    assert staging.next_stage_due(STAGES, 1, "undecided", NOW) is None


def test_a_pause_minute_can_be_scaled() -> None:
    """Tests and the demo scale a pause minute; the pause still counts in minutes."""
    due = staging.next_stage_due(STAGES, 1, "accepted", NOW, minute=timedelta(seconds=1))
    assert due == NOW + timedelta(seconds=150)
