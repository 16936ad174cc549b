"""
Each platform's part of `leadrelay demo`, one module per platform, found by name.

The demo of platform `x` is `DEMO` in `producers.demo_platforms.x`: the
platform's emulator set up for the demo's scenario, the destination table
that reaches it, a sample-lead generator and a few leads that break the
platform's documented rules. They live together because they are one
scenario (the Calltouch emulator does not know the requests of every 40th
sample lead; the Admitad emulator declines one program the samples apply
to). The demo runs the platforms of the worker's registry that have one.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class DemoPlatform:
    """One platform in the demo: its emulator, its destination table, its sample leads."""

    #: the platform's emulator, built for the demo (credentials, known ids, answers)
    app: Callable[[], Any]
    #: the destination table besides `platform` and `base_url`, which the demo adds
    table: Mapping[str, Any]
    #: the i-th sample lead: valid, so the platform takes it or says no in its own words
    sample: Callable[[random.Random, int], dict[str, Any]]
    #: leads that break documented rules: refused at the door, by field
    bad: tuple[Mapping[str, Any], ...] = ()


def demo_platform(platform: str) -> DemoPlatform | None:
    """`DEMO` of `producers.demo_platforms.<platform>`; None when the platform has none."""
    try:
        module = importlib.import_module(f"{__name__}.{platform}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{platform}":
            raise
        return None
    demo: DemoPlatform = module.DEMO
    return demo
