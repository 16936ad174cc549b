"""
What `import producers` costs a host app, beside a bare `import celery`.

    .venv/bin/python -m tests.benchmarks.bench_import [RUNS]

Each case runs in a fresh interpreter, RUNS times (default 7), interleaved so
that a noisy neighbour hits every case alike; the medians are printed.
Clock: `time.perf_counter` inside the child, around the statements only
(interpreter start-up is outside it). Memory: the child's peak RSS
(VmHWM) after the statements, less the same figure for an interpreter
that ran nothing.

The import itself loads nothing of ours beyond the package; the first
`submit` loads what taking a lead in needs (the platforms' rules, SQLAlchemy,
the ledger) and is shown apart, on an SQLite ledger with no wake-up sent.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.factories import kuper_table
from tests.system.conftest import write_config

# VmHWM, not ru_maxrss: the latter survives exec and would report the forking parent's peak
PROBE = """
import json, sys, time
start = time.perf_counter()
exec(compile(sys.argv[1], "<case>", "exec"))
elapsed = time.perf_counter() - start
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"s": elapsed, "rss_kb": peak, "modules": len(sys.modules)}))
"""

FIRST_SUBMIT = """
import producers
from producers.client import Producer
from worker.settings import load
producers_ = Producer.from_settings(load(), waker=None)
producers_.submit("kuper-main", {"phone": "+79158881122", "utm": {"utm_source": "site"},
                                  "vacancy_id": 3, "city_id": 53})
"""

CASES = {
    "nothing": "pass",
    "import celery": "import celery",
    "celery app + publish setup": (
        "from celery import Celery\napp = Celery('host', broker='redis://127.0.0.1:6379/14')\n"
        "app.connection_for_write()"
    ),
    "import producers": "import producers",
    "import producers + first submit": FIRST_SUBMIT,
}


def run_case(code: str, env: dict[str, str], cwd: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, code],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main(runs: int = 7) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp) / "leadrelay.toml", {"kuper-main": kuper_table("http://x")})
        ledger = f"sqlite:///{tmp}/ledger.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEADRELAY_")}
        env.update(LEADRELAY_CONFIG=str(config), LEADRELAY_DATABASE_URL=ledger)
        subprocess.run(
            [sys.executable, "-m", "producers", "db", "upgrade"],
            env=env,
            cwd=tmp,
            check=True,
            capture_output=True,
        )
        seen: dict[str, list[dict[str, float]]] = {name: [] for name in CASES}
        for _ in range(runs):
            for name, code in CASES.items():
                seen[name].append(run_case(code, env, tmp))

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in seen[name])

    base_rss = median("nothing", "rss_kb")
    celery_s = median("import celery", "s")
    print(f"import cost, median of {runs} fresh interpreters (perf_counter; peak RSS over an")
    print(f"interpreter that ran nothing, {base_rss / 1024:.1f} MB)")
    print(f"{'case':34} {'time':>9} {'× celery':>9} {'RSS +MB':>8} {'modules':>8}")
    for name in CASES:
        if name == "nothing":
            continue
        s = median(name, "s")
        rss = (median(name, "rss_kb") - base_rss) / 1024
        print(
            f"{name:34} {s * 1000:7.1f}ms {s / celery_s:8.1f}× {rss:8.1f}"
            f" {median(name, 'modules'):8.0f}"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
