"""The decisions load no database library: a worker can compute them without the ledger."""

from __future__ import annotations

import json
import subprocess
import sys

DECISIONS = [
    "worker.delivery.retry",
    "worker.platforms.admitad.staging",
    "worker.outcomes",
    "worker.platforms",
]
#: what a decision module may not bring in, even through a module it imports
FORBIDDEN = [
    "sqlalchemy",
    "psycopg",
    "worker.ledger",
    "worker.delivery.loop",
    "worker.delivery.polling",
]

PROBE = """
import importlib, json, sys
for name in sys.argv[1].split(","):
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


def test_importing_the_decisions_loads_no_sql_and_no_ledger() -> None:
    """A fresh interpreter, so modules other tests imported do not hide a path."""
    run = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(DECISIONS)],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = json.loads(run.stdout.splitlines()[-1])
    found = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert found == []
