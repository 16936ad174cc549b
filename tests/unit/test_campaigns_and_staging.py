"""Admitad's campaigns notations and the staged algorithm's decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from worker import staging
from worker.errors import LeadInvalid
from worker.platforms.admitad import AdmitadAdapter
from worker.platforms.admitad.campaigns import normalise


def test_the_documents_example_normalises_to_its_documented_equivalent() -> None:
    raw = [17809, 16126, [17288, 16651], {"ids": [16633]}, {"ids": [16326, 14605], "pause": 150}]
    assert [s.to_json() for s in normalise(raw)] == [
        {"ids": [17809], "pause": 0},
        {"ids": [16126], "pause": 0},
        {"ids": [17288, 16651], "pause": 0},
        {"ids": [16633], "pause": 0},
        {"ids": [16326, 14605], "pause": 150},
    ]


def test_the_algorithm_notation_and_the_json_string_are_read() -> None:
    text = '[{"ids": [17809, 16126], "pause": 0}, {"ids": [17288, 16651], "pause": 150}]'
    assert [s.pause for s in normalise(text)] == [0, 150]
    assert [s.ids for s in normalise("[17809, 17810]")] == [(17809,), (17810,)]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ([], "campaigns"),
        ([{"ids": [1], "pause": 1441}], "campaigns[0].pause"),
        ([{"ids": [1], "pause": -1}], "campaigns[0].pause"),
        ([{"ids": []}], "campaigns[0].ids"),
        ([True], "campaigns[0]"),
        (["17809"], "campaigns[0]"),
        ([[1, 2], [2]], "campaigns[1]"),
        ([{"ids": [1], "wait": 5}], "campaigns[0].wait"),
        ("not json", "campaigns"),
    ],
)
def test_anything_else_is_refused_naming_the_place(raw: Any, field: str) -> None:
    with pytest.raises(LeadInvalid) as info:
        normalise(raw)
    assert info.value.errors[0].field == field


def test_user_notified_other_than_1_is_refused_at_the_door() -> None:
    with pytest.raises(LeadInvalid) as info:
        AdmitadAdapter().validate({"campaigns": [1], "user_notified": 0})
    assert info.value.errors[0].field == "user_notified"
    assert "drops" in info.value.errors[0].rule


NOW = datetime(2026, 11, 22, tzinfo=UTC)
ACCEPTED = frozenset({"waiting", "approved"})


@pytest.mark.parametrize(
    ("statuses", "verdict"),
    [
        (["processing", "approved"], "undecided"),
        (["declined", "error"], "refused"),
        (["declined", "waiting"], "accepted"),
        (["approved"], "accepted"),
        ([], "refused"),
    ],
)
def test_a_stage_is_decided_when_nothing_is_processing(statuses: list[str], verdict: str) -> None:
    assert staging.decide(statuses, ACCEPTED) == verdict


def test_the_next_stage_waits_its_own_pause_only_after_a_success() -> None:
    minute = timedelta(minutes=1)
    assert staging.next_stage_due("accepted", 150, NOW, minute) == NOW + timedelta(minutes=150)
    assert staging.next_stage_due("refused", 150, NOW, minute) == NOW
    assert staging.next_stage_due("undecided", 150, NOW, minute) is None
