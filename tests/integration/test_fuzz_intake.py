"""
Fuzzing the Python API and the CLI file import on the real PostgreSQL and Redis:
every malformed lead (one defect each, `tests.fuzz_strategies`) is refused
with an error naming its field and rule, nothing is stored or enqueued for
it, and the good leads of the same batch go through.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from producers.client import Producer
from tests.factories import TABLES
from tests.fuzz_strategies import (
    GOOD,
    PLATFORM_CATEGORIES,
    PLATFORMS,
    Case,
    is_refused_for,
    one_of_each,
)
from tests.system.conftest import write_config
from worker.config import queue_name
from worker.delivery.context import WorkerContext
from worker.intake import MAX_KEY, Submission
from worker.ledger.tables import LeadRow

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: idempotency keys the door refuses, each with a good lead
bad_keys = st.sampled_from(["", "k" * (MAX_KEY + 1), "a\x00b", "x\ud800", 17, ["k"], {"k": 1}])


def deliver_messages(client: redis.Redis, destination: str) -> list[Any]:
    """The arguments of every message waiting on the destination's queue (kombu's Redis list)."""
    out = []
    for raw in client.lrange(queue_name(destination), 0, -1):
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        out.append(body[0])
    return out


@pytest.mark.parametrize("platform", PLATFORMS)
def test_python_api_refuses_every_malformed_lead_by_field_and_keeps_the_good(
    platform: str,
    make_ctx: Callable[..., WorkerContext],
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    destination = f"fuzz-{platform}"
    ctx = make_ctx({destination: TABLES[platform]("http://127.0.0.1:9")})
    producer = Producer(ctx)  # the real waker: wake-ups go to Redis, where we look for them
    broker = redis.Redis.from_url(redis_url)
    counts: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    accepted_ids: set[str] = set()

    @FUZZ
    @given(
        cases=one_of_each(platform),
        goods=st.integers(0, 2),
        keys=st.lists(bad_keys, max_size=1),
        order=st.randoms(use_true_random=False),
    )
    def run(cases: list[Case], goods: int, keys: list[Any], order: Any) -> None:
        before = broker.llen(queue_name(destination))
        good = [Submission(GOOD[platform]()) for _ in range(goods)]
        bad_key = [Submission(GOOD[platform](), key) for key in keys]
        items: list[tuple[Submission, Case | None]] = [(s, None) for s in good]
        items += [(Submission(c.lead), c) for c in cases]
        items += [(s, Case(platform, "bad key", "idempotency_key", None)) for s in bad_key]
        order.shuffle(items)

        results = producer.submit_many(destination, [s for s, _ in items])

        assert len(results) == len(items)
        for (_, case), result in zip(items, results, strict=True):
            counts["tried"] += 1
            if case is None:
                assert result.ok and result.created, result.errors
                accepted_ids.add(str(result.lead_id))
                counts["accepted"] += 1
                continue
            assert result.lead_id is None, f"accepted: {case!r}"
            assert is_refused_for(case, result.errors), (case, result.errors)
            categories[case.category] += 1
            counts["refused"] += 1
        with ctx.sessions() as session:
            stored = set(session.scalars(select(LeadRow.id)).all())
        assert stored == accepted_ids  # nothing stored for a refused lead
        messages = deliver_messages(broker, destination)
        assert all(args == [destination] for args in messages)  # wake-ups carry no lead
        if not goods:
            assert len(messages) == before  # a batch of refusals wakes nobody

    run()
    assert set(categories) >= set(PLATFORM_CATEGORIES[platform]), (categories, counts)
    with capsys.disabled():
        print(
            f"\nfuzz: {platform} python-api tried={counts['tried']} refused={counts['refused']} "
            f"accepted={counts['accepted']} crashed=0 categories={len(categories)}"
        )


# --- the CLI file import ----------------------------------------------------------------


def _cli(
    ledger_url: str, redis_url: str, tmp_path: Path, destination: str, platform: str
) -> Callable[..., subprocess.CompletedProcess[str]]:
    config = write_config(
        tmp_path / "leadrelay.toml", {destination: TABLES[platform]("http://127.0.0.1:9")}
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADRELAY_")}
    env.update(
        {
            "LEADRELAY_DATABASE_URL": ledger_url,
            "LEADRELAY_BROKER_URL": redis_url,
            "LEADRELAY_CONFIG": str(config),
            "LEADRELAY_LOG_LEVEL": "WARNING",
        }
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "producers", *args],
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=120,
            cwd=tmp_path,
        )

    return run


#: lines that are not a lead at all, and the field their refusal names
RAW_LINES: list[tuple[bytes, str]] = [
    (b"{not json", "line"),
    (b"\x00\x00\x00", "line"),
    (b'{"phone": "\x00"}', "line"),  # a raw NUL inside a JSON string is not JSON
    (b"\xff\xfe garbage \xc3\x28", "line"),  # not UTF-8, not JSON
    (b"[" * 100_000 + b"]" * 100_000, "line"),  # deeper than any parser recurses
    (b"[1, 2, 3]", "lead"),
    (b'"a string"', "lead"),
    (b"null", "lead"),
    (b"42", "lead"),
    (b'{"a": ' + b"1" * 2_000_000 + b"}", "line"),  # a huge number
    (b'{"a": "' + b"x" * 2_000_000 + b'"}', "a"),  # a huge line
    (b"[" + b'"x", ' * 300_000 + b'"x"]', "lead"),
]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_cli_import_reports_each_bad_line_and_accepts_the_good(
    platform: str,
    ledger_url: str,
    redis_url: str,
    tmp_path: Path,
    make_ctx: Callable[..., WorkerContext],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Exit code 1 when any row was refused; `file:line: field: rule` on stderr for each."""
    destination = f"fuzz-{platform}"
    cases: list[Case] = []

    @settings(max_examples=8, deadline=None, derandomize=True)
    @given(one_of_each(platform))
    def collect(drawn: list[Case]) -> None:
        cases.extend(drawn)

    collect()
    lines: list[bytes] = []
    expected: dict[int, str] = {}  # line number → the field its refusal must name
    goods: list[int] = []
    for index, case in enumerate(cases):
        lines.append(json.dumps(GOOD[platform](), ensure_ascii=False).encode())
        goods.append(len(lines))
        text = json.dumps(case.lead, ensure_ascii=index % 2 == 0)
        lines.append(text.encode("utf-8", "surrogatepass"))
        expected[len(lines)] = case.field
    for raw, field in RAW_LINES:
        lines.append(raw)
        expected[len(lines)] = field
    file = tmp_path / "leads.jsonl"
    file.write_bytes(b"\n".join(lines) + b"\n")

    result = _cli(ledger_url, redis_url, tmp_path, destination, platform)(
        "submit", str(file), "--to", destination, "--json"
    )

    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 1, result.stderr[-3000:]
    report = json.loads(result.stdout)
    by_line: dict[int, list[dict[str, str]]] = {}
    for refusal in report["refused"]:
        assert refusal["field"] and refusal["rule"], refusal
        by_line.setdefault(refusal["line"], []).append(refusal)
    assert set(by_line) == set(expected), set(by_line) ^ set(expected)
    for line, field in expected.items():
        assert any(r["field"].startswith(field) for r in by_line[line]), (line, by_line[line])
    assert report["accepted"] == len(goods)
    ctx = make_ctx({destination: TABLES[platform]("http://127.0.0.1:9")})
    with ctx.sessions() as session:
        assert session.scalar(select(func.count()).select_from(LeadRow)) == len(goods)

    # the human form: one `file:line: field: rule` per refusal, no traceback
    human = _cli(ledger_url, redis_url, tmp_path, destination, platform)(
        "submit", str(file), "--to", destination
    )
    assert human.returncode == 1 and "Traceback" not in human.stderr
    for line in expected:
        assert f"{file}:{line}: " in human.stderr
    with capsys.disabled():
        print(
            f"\nfuzz: {platform} cli-import tried={len(lines)} refused={len(by_line)} "
            f"accepted={report['accepted']} crashed=0 exit={result.returncode}"
        )
