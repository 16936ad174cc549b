"""
The `leadrelay` command as users run it: a subprocess with the environment
pointing at the real PostgreSQL and Redis, asserting on what it prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.factories import kuper_lead, kuper_table
from tests.system.conftest import write_config


@pytest.fixture
def run_cli(
    ledger_url: str, redis_url: str, tmp_path: Path
) -> Callable[..., subprocess.CompletedProcess[str]]:
    config = write_config(
        tmp_path / "leadrelay.toml", {"kuper-cli": kuper_table("http://127.0.0.1:9")}
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

    def run(
        *args: str, env_extra: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "producers", *args],
            env={**env, **(env_extra or {})},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )

    return run


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows)
        + "\n",
        encoding="utf-8",
    )
    return path


def test_submit_reports_each_bad_row_by_line_field_and_rule_and_keeps_the_good(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    leads = write_jsonl(
        tmp_path / "leads.jsonl",
        [
            kuper_lead(),
            kuper_lead(vacancy_id="три"),
            "{not json",
            kuper_lead(),
            kuper_lead(phone="123"),
        ],
    )
    result = run_cli("submit", str(leads), "--to", "kuper-cli")
    assert result.returncode == 1
    assert f"{leads}:2: vacancy_id: an integer" in result.stderr
    assert f"{leads}:3: line: not valid JSON" in result.stderr
    assert f"{leads}:5: phone: a Russian mobile number" in result.stderr
    assert "accepted 2, already known 0, refused 3 row(s)" in result.stdout

    stats = json.loads(run_cli("stats", "--json").stdout)
    assert stats[0]["destination"] == "kuper-cli" and stats[0]["queued"] == 2


def test_submit_csv_with_dotted_columns_and_keys(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    csv_file = tmp_path / "leads.csv"
    csv_file.write_text(
        "order,phone,utm.utm_source,vacancy_id,city_id\n"
        "a1,+7 915 888-11-22,site,3,53\n"
        "a1,+7 915 888-11-22,site,3,53\n"
        "a2,8 915 888 11 23,,3,53\n",
        encoding="utf-8",
    )
    result = run_cli("submit", str(csv_file), "--to", "kuper-cli", "--key-field", "order", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout) == {
        "accepted": 1,
        "duplicates": 1,
        "refused": [{"line": 4, "field": "utm", "rule": "Field required"}],
    }


def test_status_finds_a_lead_by_its_idempotency_key(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    leads = write_jsonl(tmp_path / "one.jsonl", [{**kuper_lead(), "order": "o-77"}])
    assert (
        run_cli("submit", str(leads), "--to", "kuper-cli", "--key-field", "order").returncode == 0
    )
    report = json.loads(run_cli("status", "o-77", "--json").stdout)
    assert report["destination"] == "kuper-cli" and report["idempotency_key"] == "o-77"
    assert report["deliveries"][0]["state"] == "queued"
    missing = run_cli("status", "nope")
    assert missing.returncode == 1 and "no lead" in missing.stderr


def test_an_unknown_destination_and_a_broken_config_are_clear_errors(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    leads = write_jsonl(tmp_path / "x.jsonl", [kuper_lead()])
    result = run_cli("submit", str(leads), "--to", "nowhere")
    assert result.returncode == 2 and "destination 'nowhere' is not configured" in result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[destinations.k]\nplatform = "kuper"\nbase_url = "https://k"\nusername = "u"\n'
        'password = "p"\nbatch_size = 500\n',
        encoding="utf-8",
    )
    result = run_cli("stats", env_extra={"LEADRELAY_CONFIG": str(bad)})
    assert result.returncode == 2 and "destinations.k.batch_size" in result.stderr
    assert "Traceback" not in result.stderr


def test_retry_puts_dead_leads_back_and_asks_before_many(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, ledger_url: str
) -> None:
    import psycopg

    leads = write_jsonl(tmp_path / "l.jsonl", [kuper_lead() for _ in range(3)])
    assert run_cli("submit", str(leads), "--to", "kuper-cli").returncode == 0
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE deliveries SET state = 'dead', detail = 'HTTP 502 (gave up after 8 attempts)'"
            " WHERE id IN (SELECT id FROM deliveries ORDER BY id LIMIT 2)"
        )

    asked = run_cli("retry", "--ask-above", "1")
    assert asked.returncode == 1 and "add --yes" in asked.stderr
    none = json.loads(run_cli("retry", "--reason", "HTTP 404", "--json").stdout)
    assert none == {"requeued": {}, "total": 0}

    done = json.loads(
        run_cli("retry", "--destination", "kuper-cli", "--reason", "HTTP 502", "--json").stdout
    )
    assert done == {"requeued": {"kuper-cli": 2}, "total": 2}
    assert json.loads(run_cli("stats", "--json").stdout)[0]["queued"] == 3


def test_pause_and_resume_are_shown_in_stats(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    paused = run_cli("pause", "kuper-cli", "--reason", "platform maintenance", "--json")
    assert json.loads(paused.stdout)["paused_until"] is None
    row = json.loads(run_cli("stats", "--json").stdout)[0]
    assert (row["paused_until"], row["paused_why"]) == ("indefinitely", "platform maintenance")
    assert json.loads(run_cli("resume", "kuper-cli", "--json").stdout)["was_paused"] is True
    assert json.loads(run_cli("stats", "--json").stdout)[0]["paused_until"] is None
    assert run_cli("pause", "nowhere").returncode == 2


def test_purge_empties_the_payload_of_settled_leads_past_retention_only(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, ledger_url: str
) -> None:
    import psycopg

    leads = write_jsonl(tmp_path / "p.jsonl", [kuper_lead() for _ in range(3)])
    assert run_cli("submit", str(leads), "--to", "kuper-cli").returncode == 0
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        conn.execute("UPDATE leads SET created_at = now() - interval '100 days'")
        conn.execute(
            "UPDATE deliveries SET state = 'delivered' WHERE id IN "
            "(SELECT id FROM deliveries ORDER BY id LIMIT 2)"
        )
    result = json.loads(run_cli("purge", "--days", "90", "--json").stdout)
    assert result == {"purged": 2, "kept_days": 90}
    with psycopg.connect(ledger_url) as conn:
        payloads = [
            r[0] for r in conn.execute("SELECT payload FROM leads ORDER BY purged_at NULLS LAST")
        ]
    assert payloads[:2] == [{}, {}]
    assert payloads[2]["utm"] == {"utm_source": "test_partner"}  # still queued: kept


def test_metrics_serves_the_backlog_per_destination_and_state(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
    ledger_url: str,
    redis_url: str,
) -> None:
    import time

    import httpx

    from sandbox import free_port

    leads = write_jsonl(tmp_path / "m.jsonl", [kuper_lead() for _ in range(4)])
    assert run_cli("submit", str(leads), "--to", "kuper-cli").returncode == 0
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADRELAY_")}
    env.update(
        {
            "LEADRELAY_DATABASE_URL": ledger_url,
            "LEADRELAY_BROKER_URL": redis_url,
            "LEADRELAY_CONFIG": str(tmp_path / "leadrelay.toml"),
        }
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "producers", "metrics", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(10)
    assert 'leadrelay_backlog{destination="kuper-cli",state="queued"} 4.0' in text
    assert 'leadrelay_oldest_due_seconds{destination="kuper-cli"}' in text


def test_version_and_short_help(run_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    from importlib.metadata import version

    shown = run_cli("--version")
    assert shown.returncode == 0 and shown.stdout.strip() == f"leadrelay {version('leadrelay')}"
    for args in (["-h"], ["stats", "-h"], ["db", "-h"]):
        helped = run_cli(*args)
        assert helped.returncode == 0, (args, helped.stderr)
        assert "Usage:" in helped.stdout and args[0].strip("-h") in helped.stdout
        assert not helped.stderr
