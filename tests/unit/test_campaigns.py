"""Admitad's `campaigns` notations, normalised into stages as its document says."""

from __future__ import annotations

from typing import Any

import pytest

from worker.errors import LeadInvalid
from worker.platforms.admitad.campaigns import Stage, normalise, to_algorithm

DOC_NOTATION = [
    17809,
    16126,
    [17288, 16651],
    {"ids": [16633]},
    {"ids": [16326, 14605], "pause": 150},
]
DOC_EQUIVALENT = [
    {"ids": [17809], "pause": 0},
    {"ids": [16126], "pause": 0},
    {"ids": [17288, 16651], "pause": 0},
    {"ids": [16633], "pause": 0},
    {"ids": [16326, 14605], "pause": 150},
]


def test_the_documents_notation_example_normalises_to_its_documented_equivalent() -> None:
    """The mixed notation of the document means exactly its algorithm notation."""
    assert to_algorithm(normalise(DOC_NOTATION)) == DOC_EQUIVALENT


def test_the_equivalent_normalises_to_itself() -> None:
    """The algorithm notation is already normal."""
    assert to_algorithm(normalise(DOC_EQUIVALENT)) == DOC_EQUIVALENT


def test_the_json_string_form_is_read_like_the_array() -> None:
    """A form field's JSON string reads as the array it holds."""
    assert normalise("[17809, 17810]") == [Stage((17809,)), Stage((17810,))]
    text = '[{"ids": [17809, 16126], "pause": 0}, {"ids": [17288], "pause": 150}]'
    assert normalise(text) == [Stage((17809, 16126), 0), Stage((17288,), 150)]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ([], "campaigns"),
        (17809, "campaigns"),
        ("not json", "campaigns"),
        ({"ids": [1]}, "campaigns"),
        ([True], "campaigns[0]"),
        (["17809"], "campaigns[0]"),
        ([0], "campaigns[0]"),
        ([1.5], "campaigns[0]"),
        ([1, []], "campaigns[1]"),
        ([[1, [2]]], "campaigns[0][1]"),
        ([[1, 1]], "campaigns[0]"),
        ([[1, 2], [2]], "campaigns[1]"),
        ([1, {"ids": [1]}], "campaigns[1]"),
        ([{"ids": []}], "campaigns[0].ids"),
        ([{"pause": 5}], "campaigns[0].ids"),
        ([{"ids": [1], "pause": 1441}], "campaigns[0].pause"),
        ([{"ids": [1], "pause": -1}], "campaigns[0].pause"),
        ([{"ids": [1], "pause": 1.0}], "campaigns[0].pause"),
        ([{"ids": [1], "pause": True}], "campaigns[0].pause"),
        ([{"ids": [1], "wait": 5}], "campaigns[0].wait"),
    ],
)
def test_anything_else_is_refused_naming_the_place(raw: Any, field: str) -> None:
    """A notation the document does not show is refused, naming campaigns[i] and the rule."""
    with pytest.raises(LeadInvalid) as info:
        normalise(raw)
    (error,) = info.value.errors
    assert error.field == field
    assert error.rule


def test_a_pause_of_a_whole_day_is_allowed() -> None:
    """1440 minutes is Admitad's longest pause."""
    assert normalise([{"ids": [1], "pause": 1440}]) == [Stage((1,), 1440)]
