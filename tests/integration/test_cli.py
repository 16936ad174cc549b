"""
The `leadrelay` command as users run it: a subprocess with the environment
pointing at the real PostgreSQL and Redis, asserting on what it prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
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
        tmp_path / "leadrelay.toml",
        {"kuper-cli": {**kuper_table("http://127.0.0.1:9"), "keep_days": 30}},
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
        *args: str, env_extra: dict[str, str] | None = None, unset: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "producers", *args],
            env={k: v for k, v in {**env, **(env_extra or {})}.items() if k not in unset},
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
    # settled but with no settling time: nothing for retention to go by, so nothing deleted
    assert result == {
        "purged": 2,
        "kept_days": 90,
        "deleted": {"kuper-cli": {"leads": 0, "attempts": 0}},
    }
    with psycopg.connect(ledger_url) as conn:
        payloads = [
            r[0] for r in conn.execute("SELECT payload FROM leads ORDER BY purged_at NULLS LAST")
        ]
    assert payloads[:2] == [{}, {}]
    assert payloads[2]["utm"] == {"utm_source": "test_partner"}  # still queued: kept


def test_purge_deletes_whole_the_leads_settled_before_keep_days(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, ledger_url: str
) -> None:
    import psycopg

    leads = write_jsonl(tmp_path / "p.jsonl", [kuper_lead() for _ in range(4)])
    assert run_cli("submit", str(leads), "--to", "kuper-cli").returncode == 0
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE deliveries SET state = 'delivered', settled_at = now() - interval '31 days'"
            " WHERE id IN (SELECT id FROM deliveries ORDER BY id LIMIT 2)"
        )
        conn.execute(
            "UPDATE deliveries SET state = 'rejected', settled_at = now() - interval '29 days'"
            " WHERE id = (SELECT max(id) FROM deliveries)"
        )
    shown = run_cli("purge")
    assert shown.returncode == 0, shown.stderr
    assert "kuper-cli: deleted 2 lead(s) settled more than 30 day(s) ago" in shown.stdout
    with psycopg.connect(ledger_url) as conn:
        states = sorted(r[0] for r in conn.execute("SELECT state FROM deliveries"))
        assert states == ["queued", "rejected"]
        assert conn.execute("SELECT count(*) FROM leads").fetchone() == (2,)
    (row,) = json.loads(run_cli("stats", "--json").stdout)
    assert (row["queued"], row["rejected"], row["delivered"]) == (1, 1, 0)


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


# ---------------------------------------------------------------- a first run


@pytest.fixture
def spare_pg() -> Iterator[str]:
    """An empty PostgreSQL database of this test's own (no schema), dropped after."""
    from tests.conftest import scratch_database

    with scratch_database(f"leadrelay_cli_{os.getpid()}") as url:
        yield url


PHONE_DIGITS = "9158881122"


def test_every_command_on_a_ledger_without_a_schema_says_to_run_db_upgrade(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, spare_pg: str
) -> None:
    """A fresh SQLite file or an empty PostgreSQL database: one line, exit 2, then upgrade."""
    leads = write_jsonl(tmp_path / "p.jsonl", [kuper_lead(phone=f"+7 {PHONE_DIGITS}")])
    db_file = tmp_path / "fresh.db"
    sqlite_url = f"sqlite:///{db_file}"
    commands = [
        ["submit", str(leads), "--to", "kuper-cli"],
        ["stats"],
        ["status", "order-1"],
        ["refusals"],
        ["retry", "--yes"],
        ["pause", "kuper-cli"],
        ["resume", "kuper-cli"],
        ["purge"],
        ["metrics", "--port", "0"],
    ]
    for url, shown, args_list in (
        (sqlite_url, sqlite_url, commands),
        (spare_pg, spare_pg, commands[:2]),
    ):
        for args in args_list:
            result = run_cli(*args, env_extra={"LEADRELAY_DATABASE_URL": url})
            assert (result.returncode, result.stderr) == (
                2,
                f"error: the ledger at {shown} has no schema: run leadrelay db upgrade\n",
            ), args
            assert PHONE_DIGITS not in result.stdout + result.stderr
    assert not db_file.exists()  # asking created no empty file

    upgraded = run_cli("db", "upgrade", env_extra={"LEADRELAY_DATABASE_URL": sqlite_url})
    assert upgraded.returncode == 0, upgraded.stderr
    result = run_cli(
        "submit", str(leads), "--to", "kuper-cli", env_extra={"LEADRELAY_DATABASE_URL": sqlite_url}
    )
    assert result.returncode == 0 and "accepted 1" in result.stdout, result.stderr


def test_a_ledger_behind_or_ahead_of_this_code_and_an_unreachable_one_are_one_line_each(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    import sqlite3

    from worker.ledger import migrate

    url = f"sqlite:///{tmp_path / 'old.db'}"
    env = {"LEADRELAY_DATABASE_URL": url}
    assert run_cli("db", "upgrade", "--revision", "0001", env_extra=env).returncode == 0
    head = migrate.schema_state(url).heads[0]
    behind = run_cli("stats", env_extra=env)
    assert behind.returncode == 2
    assert behind.stderr == (
        f"error: the ledger at {url} is at revision 0001, behind this leadrelay's {head}:"
        " run leadrelay db upgrade\n"
    )

    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    for args in (["stats"], ["db", "upgrade"]):
        ahead = run_cli(*args, env_extra=env)
        assert ahead.returncode == 2, args
        assert "is at revision 9999, which this leadrelay does not know" in ahead.stderr
        assert "Traceback" not in ahead.stderr

    gone = run_cli(
        "stats", env_extra={"LEADRELAY_DATABASE_URL": "postgresql://relay:s3cret@127.0.0.1:1/x"}
    )
    assert gone.returncode == 2
    assert gone.stderr.startswith(
        "error: the ledger at postgresql://relay:***@127.0.0.1:1/x cannot be reached: "
    )
    assert "s3cret" not in gone.stderr and "Traceback" not in gone.stderr
    other = run_cli("stats", env_extra={"LEADRELAY_DATABASE_URL": "mysql://u@h/d"})
    assert other.returncode == 2 and "LEADRELAY_DATABASE_URL: names mysql" in other.stderr


def test_a_failing_statement_shows_no_value_of_the_lead(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, spare_pg: str
) -> None:
    """The statement's parameters and PostgreSQL's "Failing row contains (…)" stay out."""
    import sqlite3

    import psycopg

    from worker.ledger import migrate

    sqlite_file = tmp_path / "ledger.db"
    sqlite_url = f"sqlite:///{sqlite_file}"
    for url in (spare_pg, sqlite_url):
        migrate.upgrade(url)
    with psycopg.connect(spare_pg, autocommit=True) as conn:
        conn.execute("ALTER TABLE leads ADD CONSTRAINT no_leads CHECK (false) NOT VALID")
    with sqlite3.connect(sqlite_file) as conn:
        conn.execute(
            "CREATE TRIGGER no_leads BEFORE INSERT ON leads BEGIN SELECT RAISE(ABORT, 'no leads');"
            " END"
        )
    leads = write_jsonl(
        tmp_path / "p.jsonl", [{**kuper_lead(phone=f"+7 {PHONE_DIGITS}"), "order": "ord-7781"}]
    )
    for url, words in (
        (spare_pg, 'violates check constraint "no_leads"'),
        (sqlite_url, "no leads"),
    ):
        result = run_cli(
            *("submit", str(leads), "--to", "kuper-cli", "--key-field", "order"),
            env_extra={"LEADRELAY_DATABASE_URL": url},
        )
        shown = result.stdout + result.stderr
        assert result.returncode == 1 and words in shown, shown
        assert "[SQL parameters hidden due to hide_parameters=True]" in shown
        assert PHONE_DIGITS not in shown and "7781" not in shown and "Failing row" not in shown


def test_a_command_that_needs_a_destination_says_where_the_file_is_looked_for(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    leads = write_jsonl(tmp_path / "x.jsonl", [kuper_lead()])
    (tmp_path / "leadrelay.toml").unlink()
    for args in (["submit", str(leads), "--to", "kuper-cli"], ["pause", "kuper-cli"]):
        result = run_cli(*args, unset=("LEADRELAY_CONFIG",))  # the default: ./leadrelay.toml
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(
            f"error: no destinations are configured: {tmp_path / 'leadrelay.toml'} does not exist"
        )
    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing yet\n", encoding="utf-8")
    result = run_cli("submit", str(leads), "--to", "k", env_extra={"LEADRELAY_CONFIG": str(empty)})
    assert result.returncode == 2
    assert f"no destinations are configured: {empty} names none" in result.stderr
    stats = run_cli("stats", env_extra={"LEADRELAY_CONFIG": str(empty)})  # needs none
    assert stats.returncode == 0 and "no destination is configured" in stats.stderr


def two_destinations(tmp_path: Path) -> dict[str, str]:
    config = write_config(
        tmp_path / "two.toml",
        {
            "kuper-cli": kuper_table("http://127.0.0.1:9"),
            "kuper-moscow-partner": kuper_table("http://127.0.0.1:9"),
        },
    )
    return {"LEADRELAY_CONFIG": str(config)}


def test_status_of_a_key_two_destinations_hold_lists_both_and_asks_which(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    env = two_destinations(tmp_path)
    leads = write_jsonl(tmp_path / "k.jsonl", [{**kuper_lead(), "order": "o-5"}])
    ids = {}
    for dest in ("kuper-cli", "kuper-moscow-partner"):
        sent = run_cli("submit", str(leads), "--to", dest, "--key-field", "order", env_extra=env)
        assert sent.returncode == 0, sent.stderr
        shown = run_cli("status", "o-5", "--to", dest, "--json", env_extra=env)
        report = json.loads(shown.stdout)
        assert report["destination"] == dest and report["idempotency_key"] == "o-5"
        ids[dest] = report["lead_id"]

    both = run_cli("status", "o-5", env_extra=env)
    assert both.returncode == 2
    assert both.stderr == (
        "error: idempotency key 'o-5' names 2 leads, one per destination:"
        " add --to DESTINATION, or give the lead id\n"
    )
    for dest, lead_id in ids.items():
        (line,) = [x for x in both.stdout.splitlines() if lead_id in x]
        assert line.split() == [lead_id, dest, "queued"]
    listed = json.loads(run_cli("status", "o-5", "--json", env_extra=env).stdout)
    assert {(x["destination"], x["lead_id"]) for x in listed["ambiguous"]} == set(ids.items())

    by_id = json.loads(run_cli("status", ids["kuper-cli"], "--json", env_extra=env).stdout)
    assert by_id["destination"] == "kuper-cli"
    nowhere = run_cli("status", "o-5", "--to", "kuper-elsewhere", env_extra=env)
    assert nowhere.returncode == 1 and "for destination 'kuper-elsewhere'" in nowhere.stderr

    retry = run_cli("retry", "--lead", "o-5", env_extra=env)
    assert retry.returncode == 2 and "add --destination DESTINATION" in retry.stderr
    one = run_cli("retry", "--lead", "o-5", "--destination", "kuper-cli", "--json", env_extra=env)
    assert json.loads(one.stdout) == {"requeued": {}, "total": 0}


def test_refusals_show_each_field_and_rule_and_never_a_value(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    make_ctx: Callable[..., Any],
) -> None:
    """Refusals as the intake task records them (raw Celery messages)."""
    from worker import intake

    ctx = make_ctx({"kuper-cli": kuper_table("http://127.0.0.1:9")})
    bad = kuper_lead(phone="+7 915 888 11", vacancy_id="три")
    del bad["utm"]
    refused = intake.accept_one(ctx, "kuper-cli", bad, idempotency_key="o-9", source="celery")
    assert refused.lead_id is None
    intake.accept_one(ctx, "kuper-nowhere", kuper_lead(), source="celery")

    text = run_cli("refusals")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].endswith("  celery  (no destination)  (no key)")
    (head,) = [i for i, x in enumerate(lines) if x.endswith("  celery  kuper-cli  key o-9")]
    fields = [x.strip().split(":")[0] for x in lines[head + 1 : head + 4]]
    assert sorted(fields) == ["phone", "utm", "vacancy_id"]
    assert lines[-1] == "2 refusal(s)"
    assert "888" not in text.stdout and "три" not in text.stdout

    only = json.loads(run_cli("refusals", "--destination", "kuper-cli", "--json").stdout)
    assert [(r["destination"], r["idempotency_key"], r["source"]) for r in only] == [
        ("kuper-cli", "o-9", "celery")
    ]
    assert {e["field"] for e in only[0]["errors"]} == {"phone", "utm", "vacancy_id"}
    assert json.loads(run_cli("refusals", "--since", "2999-01-01", "--json").stdout) == []
    assert run_cli("refusals", "--since", "yesterday").returncode == 2


def test_stats_fits_80_columns_and_wide_adds_the_rest(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    env = {**two_destinations(tmp_path), "COLUMNS": "80"}
    leads = write_jsonl(tmp_path / "s.jsonl", [kuper_lead() for _ in range(3)])
    run_cli("submit", str(leads), "--to", "kuper-moscow-partner", env_extra=env)
    run_cli("pause", "kuper-cli", "--reason", "platform maintenance", env_extra=env)

    shown = run_cli("stats", env_extra=env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert max(len(x) for x in lines) <= 80
    header = next(x for x in lines if x.startswith("destination"))
    assert header.split() == [
        "destination",
        "queued",
        "sending",
        "retry",
        "delivered",
        "rejected",
        "dead",
        "waited",
    ]
    (row,) = [x for x in lines if x.startswith("kuper-moscow-partner")]
    assert row.split()[1:] == ["3", "0", "0", "0", "0", "0", row.split()[-1]]
    assert row.split()[-1].endswith("s")
    assert "kuper-cli: paused until resumed (platform maintenance)" in lines

    wide = run_cli("stats", "--wide", env_extra=env).stdout
    wide_header = next(x for x in wide.splitlines() if x.startswith("destination"))
    assert wide_header.split()[-3:] == ["other", "settled/min", "settled/hour"]
    data = json.loads(run_cli("stats", "--json", env_extra=env).stdout)
    assert {"oldest_due_s", "settled_last_minute", "paused_why"} <= set(data[0])
