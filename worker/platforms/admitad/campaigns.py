"""
Admitad's `campaigns` parameter, normalised into stages exactly as Admitad documents.

The document's own equivalence:

    [17809, 16126, [17288, 16651], {"ids": [16633]}, {"ids": [16326, 14605], "pause": 150}]

means

    [{"ids": [17809], "pause": 0}, {"ids": [16126], "pause": 0},
     {"ids": [17288, 16651], "pause": 0}, {"ids": [16633], "pause": 0},
     {"ids": [16326, 14605], "pause": 150}]

A bare id is a stage of its own; a list of ids is one stage; an object is a
stage of its `ids` with its `pause` (minutes to wait before the stage is sent,
0 to 1440, default 0). The JSON-string form a form field carries
(`"[17809, 17810]"`) is read the same way. Anything else is refused with
LeadInvalid naming `campaigns[i]` (or `campaigns[i].ids` / `.pause`) and the
rule, never the value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker.errors import FieldError, LeadInvalid

#: the longest pause Admitad allows, minutes (a day)
MAX_PAUSE = 1440
#: the keys a stage object may have
STAGE_KEYS = frozenset({"ids", "pause"})


@dataclass(frozen=True, slots=True)
class Stage:
    """One group of programs and the pause (minutes) before the group is sent."""

    ids: tuple[int, ...]
    pause: int = 0

    def to_json(self) -> dict[str, Any]:
        """The stage in Admitad's algorithm notation."""
        return {"ids": list(self.ids), "pause": self.pause}


def _is_int(value: Any) -> bool:
    """JSON integers only: a bool is an int to Python, not to Admitad."""
    return isinstance(value, int) and not isinstance(value, bool)


def _id(value: Any, where: str) -> int:
    if not _is_int(value) or value <= 0:
        raise LeadInvalid.one(where, "a program id: a positive integer")
    return int(value)


def _ids(values: Any, where: str) -> tuple[int, ...]:
    if not isinstance(values, list) or not values:
        raise LeadInvalid.one(where, "a non-empty list of program ids")
    ids = tuple(_id(v, f"{where}[{j}]") for j, v in enumerate(values))
    if len(set(ids)) != len(ids):
        raise LeadInvalid.one(where, "a program appears once")
    return ids


def _pause(value: Any, where: str) -> int:
    if not _is_int(value) or not 0 <= value <= MAX_PAUSE:
        raise LeadInvalid.one(where, f"whole minutes, 0 to {MAX_PAUSE}")
    return int(value)


def _stage(item: Any, where: str) -> Stage:
    if isinstance(item, Mapping):
        unknown = sorted(str(k) for k in item if k not in STAGE_KEYS)
        if unknown:
            raise LeadInvalid.one(f"{where}.{unknown[0][:40]}", "unknown key (ids, pause)")
        return Stage(
            _ids(item.get("ids"), f"{where}.ids"), _pause(item.get("pause", 0), f"{where}.pause")
        )
    if isinstance(item, list):
        return Stage(_ids(item, where))
    if _is_int(item):
        return Stage((_id(item, where),))
    raise LeadInvalid.one(where, 'a program id, a list of ids, or {"ids": [...], "pause": N}')


def normalise(raw: Any) -> list[Stage]:
    """Every documented notation of `campaigns` → the stages it means, in order."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError):
            raise LeadInvalid.one("campaigns", "a JSON array of program ids or stages") from None
    if not isinstance(raw, list) or not raw:
        raise LeadInvalid.one("campaigns", "a non-empty array of program ids or stages")
    stages = [_stage(item, f"campaigns[{i}]") for i, item in enumerate(raw)]
    seen: set[int] = set()
    for i, stage in enumerate(stages):
        if seen.intersection(stage.ids):
            raise LeadInvalid(
                [FieldError(f"campaigns[{i}]", "a program appears in one stage only")]
            )
        seen.update(stage.ids)
    return stages


def from_payload(stages: Sequence[Mapping[str, Any]]) -> list[Stage]:
    """Stages as a normalised lead keeps them (`[{"ids": [...], "pause": n}]`) → Stage values."""
    return [Stage(tuple(int(i) for i in s["ids"]), int(s.get("pause", 0))) for s in stages]


def to_algorithm(stages: Sequence[Stage]) -> list[dict[str, Any]]:
    """The stages as Admitad's `campaigns` algorithm, for server-side staging."""
    return [s.to_json() for s in stages]


def compact(stages: Sequence[Stage]) -> list[Any]:
    """
    The stages in the shortest notation that means them, as the document writes
    `campaigns`: a stage of one program with no pause is its bare id, of several
    programs a list, with a pause an object. `[17809, 17810]` (two stages) and
    `[[17809, 16126]]` (one stage of two) read back exactly as given.
    """
    out: list[Any] = []
    for stage in stages:
        if stage.pause:
            out.append(stage.to_json())
        elif len(stage.ids) == 1:
            out.append(stage.ids[0])
        else:
            out.append(list(stage.ids))
    return out


def program_ids(stages: Sequence[Stage]) -> list[int]:
    """Every program the stages reach, in order."""
    return [c_id for stage in stages for c_id in stage.ids]
