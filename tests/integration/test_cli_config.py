"""
A wrong setting stops a command, and a worker, at start with the setting's
name and rule; nothing starts half-configured.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BAD = [
    (
        {"LEADRELAY_LOG_LEVEL": "verbose"},
        "LEADRELAY_LOG_LEVEL: one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
    ),
    ({"LEADRELAY_LOG_FORMAT": "jsno"}, "LEADRELAY_LOG_FORMAT: Input should be 'json' or 'text'"),
    (
        {"LEADRELAY_CONFIG": "missing.toml"},
        "LEADRELAY_CONFIG: names missing.toml, which does not exist",
    ),
]


def run(args: list[str], env_extra: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADRELAY_")}
    env.update(LEADRELAY_DATABASE_URL=f"sqlite:///{cwd}/ledger.db", **env_extra)
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.mark.parametrize(("env", "message"), BAD)
def test_a_command_stops_at_a_wrong_setting(
    env: dict[str, str], message: str, tmp_path: Path
) -> None:
    done = run([sys.executable, "-m", "producers", "stats"], env, tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize(("env", "message"), BAD)
def test_a_worker_stops_at_a_wrong_setting_before_its_children_start(
    env: dict[str, str], message: str, tmp_path: Path
) -> None:
    args = [sys.executable, "-m", "celery", "-A", "worker", "worker", "-c", "1", "-l", "INFO"]
    done = run(args, env, tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
