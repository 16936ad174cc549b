"""
Fuzzing the raw Celery way in: a real worker (`celery -A worker worker` on the
intake queue) gets generated malformed and good leads, and messages of the
wrong shape, from a bare Celery client. Every message ends as a refusal row
or an accepted lead; the worker logs no traceback and stays alive.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery
from hypothesis import HealthCheck, given, settings
from sqlalchemy import func, select

from tests.factories import TABLES
from tests.fuzz_strategies import GOOD, HUGE, PLATFORMS, Case, nested_garbage, one_of_each
from tests.system.conftest import Relay
from worker.delivery.context import build
from worker.ledger.tables import LeadRow, RefusalRow
from worker.settings import load, parse_destinations

INTAKE = "leadrelay.intake"


def dest_name(platform: str) -> str:
    return f"fuzz-{platform}"


def wrong_shapes(good: dict[str, Any]) -> list[tuple[list[Any], dict[str, Any], str]]:
    """(args, kwargs, the field the refusal names) of messages no app should send."""
    dest = dest_name("kuper")
    return [
        ([], {"destination": dest, "lead": "not a dict"}, "lead"),
        ([], {"destination": dest, "lead": [good]}, "lead"),
        ([], {"destination": dest, "lead": None}, "lead"),
        ([], {}, "destination"),  # no kwargs at all
        ([], {"destination": dest}, "lead"),
        ([], {"lead": good}, "destination"),
        ([dest, good, "k", "surplus"], {}, "message"),  # args, one too many
        ([], {"destination": dest, "lead": good, "priority_lead": True}, "message"),
        ([], {"destination": "nowhere", "lead": good}, "destination"),
        ([], {"destination": ["kuper"], "lead": good}, "destination"),
        ([], {"destination": {"a": nested_garbage(50)}, "lead": good}, "destination"),
        ([], {"destination": "x" * HUGE, "lead": good}, "destination"),
        ([], {"destination": dest, "lead": good, "idempotency_key": {"k": 1}}, "idempotency_key"),
        ([], {"destination": dest, "lead": good, "idempotency_key": "k" * 5000}, "idempotency_key"),
        ([], {"destination": dest, "lead": good, "idempotency_key": "a\x00b"}, "idempotency_key"),
        ([], {"destination": dest, "lead": {"utm": nested_garbage(300)}}, "utm."),
        ([], {"destination": dest, "lead": {"x": "y" * HUGE}}, "x"),
    ]


@pytest.mark.timeout(120)
def test_raw_celery_messages_are_each_refused_or_accepted_and_the_worker_survives(
    relay_factory: Callable[..., Relay],
    ledger_url: str,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tables = {dest_name(p): TABLES[p]("http://127.0.0.1:9") for p in PLATFORMS}
    relay = relay_factory(tables)
    relay.start_worker(concurrency=2, queues=INTAKE)  # deliveries wait: only intake is judged
    client = Celery(broker=redis_url)  # no import of our code on the sending side
    ctx = build(load(database_url=ledger_url, destinations=parse_destinations(tables)))
    sent: dict[str, tuple[str, Case | None]] = {}  # idempotency key → (platform, case)
    tally: Counter[str] = Counter()

    def send(args: list[Any], kwargs: dict[str, Any]) -> None:
        client.send_task("leadrelay.submit", args=args, kwargs=kwargs, queue=INTAKE)
        tally["tried"] += 1

    def fuzz(platform: str) -> None:

        @settings(
            max_examples=6,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(one_of_each(platform))
        def generate(cases: list[Case]) -> None:
            for case in cases:
                key = f"bad-{len(sent)}"
                sent[key] = (platform, case)
                send(
                    [],
                    {"destination": dest_name(platform), "lead": case.lead, "idempotency_key": key},
                )
                key = f"good-{len(sent)}"
                sent[key] = (platform, None)
                send(
                    [],
                    {
                        "destination": dest_name(platform),
                        "lead": GOOD[platform](),
                        "idempotency_key": key,
                    },
                )

        generate()

    for platform in PLATFORMS:
        fuzz(platform)
    shapes = wrong_shapes(GOOD["kuper"]())
    for args, kwargs, _ in shapes:
        send(args, kwargs)

    expected = len(sent) + len(shapes)
    deadline = time.monotonic() + 90
    while True:
        with ctx.sessions() as s:
            done = s.scalar(select(func.count()).select_from(LeadRow)) or 0
            done += s.scalar(select(func.count()).select_from(RefusalRow)) or 0
        if done >= expected or time.monotonic() > deadline:
            break
        assert relay.procs["w1"].poll() is None, relay.log("w1")[-3000:]
        time.sleep(0.3)

    with ctx.sessions() as s:
        leads = {r.idempotency_key: r for r in s.scalars(select(LeadRow))}
        refusals = list(s.scalars(select(RefusalRow)))
    ctx.close()
    log = relay.log("w1")
    assert "Traceback" not in log, log[-5000:]
    assert relay.procs["w1"].poll() is None  # still alive
    assert done == expected, (done, expected)

    refused_by_key = {r.idempotency_key: r for r in refusals if r.idempotency_key}
    for key, (platform, case) in sent.items():
        if case is None:
            assert key in leads and leads[key].destination == dest_name(platform), key
            tally["accepted"] += 1
            continue
        assert key not in leads, f"accepted: {case!r}"
        errors = refused_by_key[key].errors["errors"]
        assert all(e["field"] and e["rule"] for e in errors), errors
        assert any(e["field"].startswith(case.field) for e in errors), (case, errors)
        tally["refused"] += 1
    keyless = [[e["field"] for e in r.errors["errors"]] for r in refusals if not r.idempotency_key]
    assert len(keyless) == len(shapes)  # each wrong shape is refused once
    for _, _, field in shapes:  # … by the field it got wrong
        match = next(f for f in keyless if any(name.startswith(field) for name in f))
        keyless.remove(match)
    tally["refused"] += len(shapes)  # every shape matched one refusal above
    with capsys.disabled():
        print(
            f"\nfuzz: all-platforms celery-raw tried={tally['tried']} refused={tally['refused']} "
            f"accepted={tally['accepted']} crashed=0 worker_alive=1 shapes={len(shapes)}"
        )
