"""`leadrelay demo`, the README's first command: the embedded default, end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_the_demo_delivers_every_sample_lead_on_sqlite_with_nothing_installed(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADRELAY_")}
    env["LEADRELAY_BROKER_URL"] = "redis://127.0.0.1:1/0"  # no Redis is needed: nothing may try it
    result = subprocess.run(
        [sys.executable, "-m", "producers", "demo", "--leads", "120"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "leadrelay-demo.db").exists()
    assert "refused" in result.stdout  # the sample's bad leads are refused at the door, by field
    table = [line for line in result.stdout.splitlines() if "-demo" in line and "│" in line]
    assert len(table) == 4, result.stdout  # Kuper, Calltouch, SalesMan, Admitad
    for row in table:
        cells = [c.strip() for c in row.split("│") if c.strip()]
        assert int(cells[1]) > 0  # taken
        assert cells[3] == "0"  # dead
        assert cells[4] == "0"  # still open: every lead reached a final state


def test_the_demo_s_last_line_is_a_command_that_shows_a_lead_as_printed(tmp_path: Path) -> None:
    """Pasted into a shell elsewhere, with nothing set, it shows one lead of the demo's ledger."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADRELAY_")}
    env["LEADRELAY_BROKER_URL"] = "redis://127.0.0.1:1/0"
    demo_dir = tmp_path / "demo"
    demo_dir.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "producers", "demo", "--leads", "8"],
        cwd=demo_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    command = result.stdout.splitlines()[-1].strip()
    assert command.startswith(f"LEADRELAY_DATABASE_URL=sqlite:///{demo_dir / 'leadrelay-demo.db'} ")
    assert " status " in command

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # a shell, as the user pastes it: the point of the test
    shown = subprocess.run(  # noqa: S602
        command,
        shell=True,
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    lead_id = command.rsplit(" ", 1)[-1]
    assert shown.stdout.startswith(f"{lead_id} → ")
    assert "delivered" in shown.stdout or "approved" in shown.stdout
