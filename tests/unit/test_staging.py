"""Admitad's staged algorithm: when a stage is decided and when the next one is due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.platforms.admitad import staging
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


STAGE_1 = (17809, 16126)


@pytest.mark.parametrize(
    ("statuses", "answered", "verdict"),
    [
        ({17809: "processing", 16126: "approved"}, set(), "undecided"),
        ({17809: "processing"}, {16126}, "undecided"),
        ({17809: "declined", 16126: "error"}, set(), "refused"),
        ({17809: "declined", 16126: "waiting"}, set(), "accepted"),
        ({17809: "approved"}, {16126}, "accepted"),
        ({17809: "declined"}, {16126}, "refused"),
        ({}, {17809, 16126}, "refused"),
    ],
)
def test_a_stage_is_decided_once_every_program_answered(
    statuses: dict[int, str], answered: set[int], verdict: str
) -> None:
    """Each program answers by a status past `processing` or an entry in errors[]."""
    assert staging.decide(STAGE_1, statuses, answered, ACCEPTED) == verdict


def test_a_program_not_listed_yet_keeps_the_stage_undecided() -> None:
    """16126 declined, 17809 not in `responses` at all: the stage is not decided."""
    assert staging.decide(STAGE_1, {16126: "declined"}, set(), ACCEPTED) == "undecided"


def test_no_responses_and_no_errors_is_undecided_not_refused() -> None:
    """An application Admitad has not sent anywhere yet says nothing about the stage."""
    assert staging.decide(STAGE_1, {}, set(), ACCEPTED) == "undecided"


def test_which_statuses_count_as_accepted_is_a_setting() -> None:
    """With only `approved` accepted, a `waiting` stage is refused."""
    assert staging.decide((1,), {1: "waiting"}, set(), frozenset({"approved"})) == "refused"


def test_the_first_stage_waits_its_own_pause() -> None:
    """The document: `pause` is the pause before the group is sent, the first one too."""
    paused = normalise([{"ids": [1], "pause": 30}, {"ids": [2], "pause": 5}])
    assert staging.first_delay(paused) == timedelta(minutes=30)
    assert staging.first_delay(STAGES) == timedelta(0)


def test_an_undecided_stage_is_looked_at_soon_then_less_often() -> None:
    """5 s, 10 s, 20 s … never longer than the destination's poll interval."""
    ceiling = timedelta(seconds=300)
    waits = [staging.next_look(n, ceiling).total_seconds() for n in range(8)]
    assert waits == [5, 10, 20, 40, 80, 160, 300, 300]
    assert staging.next_look(10**6, ceiling) == ceiling


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
    refused = staging.decide(STAGE_1, {17809: "declined", 16126: "error"}, set(), ACCEPTED)
    t2 = staging.next_stage_due(STAGES, 1, refused, t1)
    assert t2 == t1
    decided = t1 + timedelta(minutes=7)
    accepted = staging.decide((17288, 16651), {17288: "declined", 16651: "waiting"}, (), ACCEPTED)
    t3 = staging.next_stage_due(STAGES, 2, accepted, decided)
    assert t3 == decided + timedelta(minutes=80)


def test_no_stage_follows_the_last_one_nor_an_undecided_one() -> None:
    """None when the decided stage is the last, and while it is undecided."""
    assert staging.next_stage_due(STAGES, 3, "accepted", NOW) is None
    assert staging.next_stage_due(STAGES, 1, "undecided", NOW) is None


def test_a_pause_minute_can_be_scaled() -> None:
    """Tests and the demo scale a pause minute; the pause still counts in minutes."""
    due = staging.next_stage_due(STAGES, 1, "accepted", NOW, minute=timedelta(seconds=1))
    assert due == NOW + timedelta(seconds=150)
