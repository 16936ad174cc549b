"""
How long an event loop is held while some work runs: a ticker beside the work,
and the garbage collector's pauses told apart. Shared by the async producer's
test and its benchmark; it imports no test fixture.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

#: how long the ticker sleeps between two wake-ups (seconds); an idle loop's gap is a little over
TICK_S = 0.001


@dataclass
class Stalls:
    """What a ticker saw of the event loop while some work ran (time.perf_counter, seconds)."""

    longest_s: float  #: the largest gap between two wake-ups of a ticker sleeping 1 ms
    #: the largest gap less the garbage collector's pauses inside it: what the code held
    longest_but_gc_s: float
    longest_gc_s: float  #: the longest pause of CPython's collector during the work
    p99_s: float  #: the 99th percentile of the ticker's gaps, never past the longest


async def watch(work: Awaitable[T]) -> tuple[T, Stalls]:
    """
    Run `work` beside a ticker that sleeps 1 ms, recording each gap between its
    wake-ups, and the collector's pauses (gc.callbacks). A full collection scans
    every object the process holds, whoever made it: it is told apart, not hidden.
    """
    gaps: list[tuple[float, float]] = []
    pauses: list[tuple[float, float]] = []
    started: list[float] = []
    stop = asyncio.Event()

    def on_gc(phase: str, _: dict[str, int]) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            pauses.append((started.pop(), time.perf_counter()))

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(TICK_S)
            now = time.perf_counter()
            gaps.append((last, now))
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)  # the ticker runs before the work starts
    gc.callbacks.append(on_gc)
    try:
        result = await work
    finally:
        gc.callbacks.remove(on_gc)
        stop.set()
        await tick

    def held(start: float, end: float) -> float:
        collecting = sum(max(0.0, min(end, b) - max(start, a)) for a, b in pauses)
        return end - start - collecting

    return result, Stalls(
        longest_s=max(b - a for a, b in gaps),
        longest_but_gc_s=max(held(a, b) for a, b in gaps),
        longest_gc_s=max((b - a for a, b in pauses), default=0.0),
        p99_s=statistics.quantiles([b - a for a, b in gaps], n=100, method="inclusive")[98],
    )
