"""
Admitad's `campaigns` notations, normalised into stages exactly as Admitad documents.

    [17809, 16126, [17288, 16651], {"ids": [16633]}, {"ids": [16326, 14605], "pause": 150}]

is the same as

    [{"ids": [17809], "pause": 0}, {"ids": [16126], "pause": 0},
     {"ids": [17288, 16651], "pause": 0}, {"ids": [16633], "pause": 0},
     {"ids": [16326, 14605], "pause": 150}]

A bare id is a stage of its own; a list is one stage; an object is a stage
with its `pause` (minutes before the stage is sent, 0 to 1440). The JSON-string
form (`"[17809, 17810]"`) is read too. Anything else is refused, naming
`campaigns[i]` and the rule.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker.errors import FieldError, LeadInvalid

#: the longest pause Admitad allows, minutes (a day)
MAX_PAUSE = 1440


@dataclass(frozen=True, slots=True)
class Stage:
    """One group of programs and the pause (minutes) before it is sent."""

    ids: tuple[int, ...]
    pause: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"ids": list(self.ids), "pause": self.pause}


def _id(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LeadInvalid.one(where, "a program id: a positive integer")
    return value


def _ids(values: Any, where: str) -> tuple[int, ...]:
    if not isinstance(values, list) or not values:
        raise LeadInvalid.one(where, "a non-empty list of program ids")
    return tuple(_id(v, f"{where}[{j}]") for j, v in enumerate(values))


def _stage(item: Any, where: str) -> Stage:
    if isinstance(item, Mapping):
        unknown = set(item) - {"ids", "pause"}
        if unknown:
            raise LeadInvalid.one(f"{where}.{sorted(unknown)[0]}", "unknown key (ids, pause)")
        pause = item.get("pause", 0)
        if isinstance(pause, bool) or not isinstance(pause, int) or not 0 <= pause <= MAX_PAUSE:
            raise LeadInvalid.one(f"{where}.pause", f"an integer of minutes, 0 to {MAX_PAUSE}")
        return Stage(_ids(item.get("ids"), f"{where}.ids"), pause)
    if isinstance(item, list):
        return Stage(_ids(item, where))
    return Stage((_id(item, where),))


def normalise(raw: Any) -> list[Stage]:
    """Every documented notation of `campaigns` → the list of stages it means."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise LeadInvalid.one("campaigns", "a JSON array of program ids or stages") from None
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise LeadInvalid.one("campaigns", "a non-empty list of program ids or stages")
    stages = [_stage(item, f"campaigns[{i}]") for i, item in enumerate(raw)]
    seen: set[int] = set()
    for i, stage in enumerate(stages):
        repeated = seen.intersection(stage.ids)
        if repeated:
            raise LeadInvalid(
                [FieldError(f"campaigns[{i}]", "a program may appear in one stage only")]
            )
        seen.update(stage.ids)
    return stages


def from_payload(stages: Sequence[Mapping[str, Any]]) -> list[Stage]:
    """Stages as the ledger keeps them (already normalised) → Stage values."""
    return [Stage(tuple(int(i) for i in s["ids"]), int(s.get("pause", 0))) for s in stages]


def to_algorithm(stages: Sequence[Stage]) -> list[dict[str, Any]]:
    """The normalised list as Admitad's `campaigns` algorithm (server-side staging)."""
    return [s.to_json() for s in stages]
