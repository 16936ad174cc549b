"""
How soon Admitad's next stage goes, with real worker and beat processes and the
example configuration's cadence: `poll_interval` 300 s, the first look 5 s after
a create (`first_look`), beat sweeping every 5 s. Only a pause minute is scaled
to a second, so pauses are seconds.

A refused stage is seen by the short first looks, not by the 5-minute poll
interval, and its next stage goes at once; an accepted stage's next stage waits
its whole pause, counted from a verdict seen within seconds.

The times are the emulator's own (`GET /__sandbox__/log`, monotonic seconds of
this process, where the emulator runs), printed with `-s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import httpx

from producers.client import Producer
from sandbox import admitad as admitad_sandbox
from sandbox import serve
from tests.factories import admitad_lead, admitad_table
from tests.system.conftest import Relay
from worker.delivery.context import build
from worker.settings import load, parse_destinations

MINUTE = 1.0  # one pause minute lasts a second here: scaled, not mocked away
DECIDE = 2.0  # seconds a program stays `processing` after the create
#: the example configuration's values (leadrelay.example.toml); first_look is its default, 5 s
EXAMPLE = {"poll_interval": 300, "rate": 10, "pause_minute": MINUTE}
SWEEP_EVERY = "5"
#: how late a next stage may go after it may go: the first look (5 s), a sweep (5 s),
#: a drain's start and its settings fetch, with room for a loaded machine
SLACK = 25.0


@contextmanager
def admitad(**options: Any) -> Iterator[str]:
    app = admitad_sandbox.create_app(
        client_secret="admitad-client-secret", decide_after=DECIDE, **options
    )
    with serve(app) as url:
        yield url


def log_entries(url: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{url}/__sandbox__/log").json())


def creates(url: str) -> list[float]:
    """Monotonic times of the applications the emulator created."""
    return [
        float(e["t"])
        for e in log_entries(url)
        if str(e["path"]).endswith("/create/") and e["status"] == 200
    ]


def looks(url: str) -> list[float]:
    """Monotonic times of the status looks (list requests) the emulator answered."""
    return [
        float(e["t"])
        for e in log_entries(url)
        if str(e["path"]).endswith("/broker/applications/") and e["status"] == 200
    ]


def submit_and_wait_for_two_creates(
    relay_factory: Callable[..., Relay],
    url: str,
    ledger_url: str,
    redis_url: str,
    campaigns: Sequence[Mapping[str, Any]],
    timeout: float,
) -> tuple[float, float]:
    """Run the relay, submit one lead with `campaigns`; the monotonic times of its two creates."""
    tables = {"admitad": admitad_table(url, **EXAMPLE)}
    relay = relay_factory(tables, sweep_every=SWEEP_EVERY)
    relay.start_worker()
    relay.start_beat()
    ctx = build(
        load(database_url=ledger_url, broker_url=redis_url, destinations=parse_destinations(tables))
    )
    try:
        Producer(ctx).submit_many("admitad", [admitad_lead(campaigns=list(campaigns))])
        deadline = time.monotonic() + timeout
        while len(made := creates(url)) < 2:
            assert time.monotonic() < deadline, f"creates: {made}\n{relay.log('w1')[-3000:]}"
            time.sleep(0.1)
    finally:
        ctx.close()
    first, second = made[:2]
    print(
        f"\ncreate 1 at t={first:.2f}, create 2 at t={second:.2f} (time.monotonic): "
        f"{second - first:.2f} s apart; looks at "
        + ", ".join(f"+{t - first:.2f} s" for t in looks(url) if t > first)
    )
    return first, second


def test_a_declined_stage_sends_the_next_stage_within_seconds_not_a_poll_interval_later(
    relay_factory: Callable[..., Relay], ledger_url: str, redis_url: str
) -> None:
    # stage 2 would wait a minute-long pause if stage 1 were accepted: it goes at once
    campaigns = [{"ids": [16126], "pause": 0}, {"ids": [17809], "pause": 60}]
    with admitad(outcomes={16126: "declined"}) as url:
        first, second = submit_and_wait_for_two_creates(
            relay_factory, url, ledger_url, redis_url, campaigns, timeout=60
        )
    assert second - first > DECIDE, "stage 2 went before stage 1 was decided"
    assert second - first <= SLACK, "the refusal was not seen within seconds"


def test_an_accepted_stage_sends_the_next_stage_after_its_pause_and_soon_after_it(
    relay_factory: Callable[..., Relay], ledger_url: str, redis_url: str
) -> None:
    pause = 10
    campaigns = [{"ids": [17809], "pause": 0}, {"ids": [16126], "pause": pause}]
    with admitad() as url:  # 17809 is `waiting` (taken) DECIDE seconds after the create
        first, second = submit_and_wait_for_two_creates(
            relay_factory, url, ledger_url, redis_url, campaigns, timeout=pause * MINUTE + 60
        )
    # the pause counts from the verdict, which came DECIDE seconds after the create
    assert second - first >= DECIDE + pause * MINUTE, "stage 2 went before its pause was over"
    assert second - first <= pause * MINUTE + SLACK, "stage 2 went long after its pause"
