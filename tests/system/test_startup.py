"""Start-up: a wrong setting stops a worker before it takes any work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_a_wrong_setting_stops_the_worker_at_start_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "leadrelay.toml"
    bad.write_text(
        '[destinations.k]\nplatform = "kuper"\nbase_url = "https://k"\nusername = "u"\n'
        'password = "p"\nbatch_size = 900\n',
        encoding="utf-8",
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LEADRELAY_")},
        "LEADRELAY_CONFIG": str(bad),
        "LEADRELAY_BROKER_URL": "redis://127.0.0.1:6379/15",
    }
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "destinations.k.batch_size" in result.stderr
