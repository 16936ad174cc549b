"""
`leadrelay submit FILE` in bounded memory: the peak RSS of the command at
100,000 and at 1,000,000 lines, side by side in one run.

Each size gets a fresh PostgreSQL ledger and a JSON Lines file of valid Kuper
leads (every 1,000th line broken, so refusals are reported too). The command
runs as a child process, as a user runs it; its peak RSS is the kernel's
(`ru_maxrss` of that child, from wait4) and its time is wall time around it
(`time.perf_counter`). A producer holds no platform secret: the destinations
file names the password as a variable nobody set.

    .venv/bin/python -m tests.benchmarks.bench_submit_file [100000 1000000]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from tests.benchmarks._common import PG_ADMIN, fresh_database, fresh_redis

TABLE = """[destinations.kuper]
platform = "kuper"
base_url = "http://127.0.0.1:9"
username = "partner"
password = "${BENCH_UNSET_KUPER_PASSWORD}"
batch_size = 50
"""


def write_leads(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            lead = {
                "phone": f"+7 (916) {i // 10000 % 1000:03d}-{i // 100 % 100:02d}-{i % 100:02d}",
                "utm": {"utm_source": f"bench{i // 1_000_000}"},
                "vacancy_id": 3,
                "city_id": 53,
                "first_name": "Тест",
                "order_id": f"order-{i}",
            }
            if i % 1000 == 999:
                lead["vacancy_id"] = "three"  # refused: the report names line, field and rule
            out.write(json.dumps(lead, ensure_ascii=False) + "\n")


def run(n: int, workdir: Path) -> dict[str, float]:
    name = f"leadrelay_bench_submit_{n}"
    url = fresh_database(name)
    leads = workdir / f"leads-{n}.jsonl"
    write_leads(leads, n)
    config = workdir / "leadrelay.toml"
    config.write_text(TABLE, encoding="utf-8")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LEADRELAY_")},
        "LEADRELAY_DATABASE_URL": url,
        "LEADRELAY_BROKER_URL": fresh_redis(int(os.environ.get("BENCH_REDIS_DB", "14"))),
        "LEADRELAY_CONFIG": str(config),
        "COLUMNS": "100",
    }
    env.pop("BENCH_UNSET_KUPER_PASSWORD", None)
    command = [
        sys.executable,
        "-m",
        "producers",
        "submit",
        str(leads),
        "--to",
        "kuper",
        "--key-field",
        "order_id",
    ]
    started = time.perf_counter()
    # the report of refused lines goes to a file: a pipe nobody reads until the end
    # fills (64 kB, about 700 refusals) and stops the command at its last write
    with (workdir / f"report-{n}.txt").open("wb") as report:
        child = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=report, cwd=workdir
        )
        _, status, usage = os.wait4(child.pid, 0)
    took = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    child.returncode = code
    with psycopg.connect(url) as conn:
        stored = conn.execute("SELECT count(*) FROM leads").fetchone()
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return {
        "lines": n,
        "exit": code,  # 1: some lines were refused, as every 1,000th is
        "stored": stored[0] if stored else 0,
        "seconds": took,
        "peak_mb": usage.ru_maxrss / 1024,
        "file_mb": leads.stat().st_size / 1e6,
    }


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [100_000, 1_000_000]
    with tempfile.TemporaryDirectory(prefix="bench-submit-") as tmp:
        rows = [run(n, Path(tmp)) for n in sizes]
    print("leadrelay submit FILE --to kuper: peak RSS of the command (wait4 ru_maxrss),")
    print("wall time around it (time.perf_counter); a fresh PostgreSQL ledger each")
    heads = ("file MB", "stored", "exit", "seconds", "leads/s", "peak MB")
    widths = (8, 9, 4, 8, 8, 8)
    print(f"{'lines':>10} " + " ".join(f"{h:>{w}}" for h, w in zip(heads, widths, strict=True)))
    for r in rows:
        rate = r["stored"] / r["seconds"] if r["seconds"] else 0.0
        print(
            f"{r['lines']:>10,} {r['file_mb']:>8.1f} {r['stored']:>9,} {r['exit']:>4}"
            f" {r['seconds']:>8.1f} {rate:>8,.0f} {r['peak_mb']:>8.1f}"
        )
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(
            f"peak RSS at {last['lines']:,} / at {first['lines']:,}:"
            f" {last['peak_mb'] / first['peak_mb']:.2f}x for {last['lines'] / first['lines']:.0f}x"
            " the lines"
        )


if __name__ == "__main__":
    main()
