"""Starting and stopping Celery worker processes for the benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.system.conftest import write_config


def relay_env(
    database: str, broker: str, destinations: dict[str, dict[str, Any]], workdir: Path
) -> dict[str, str]:
    config = write_config(workdir / "leadrelay.toml", destinations)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADRELAY_")}
    env.update(
        {
            "LEADRELAY_DATABASE_URL": database,
            "LEADRELAY_BROKER_URL": broker,
            "LEADRELAY_CONFIG": str(config),
            "LEADRELAY_LOG_LEVEL": "WARNING",
            "LEADRELAY_SWEEP_EVERY": "1",
        }
    )
    return env


@contextmanager
def celery_worker(
    app: str,
    env: dict[str, str],
    concurrency: int = 4,
    queues: str | None = None,
    beat: bool = False,
) -> Iterator[None]:
    """`celery -A app worker -c N` (and beat) until the block ends; waits until ready."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    log_path = workdir / "worker.log"
    args = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "-c",
        str(concurrency),
        "--without-gossip",
        "--without-mingle",
        "-l",
        "INFO",
        "-n",
        f"bench{time.time_ns()}@%h",
    ]
    if queues:
        args += ["-Q", queues]
    procs = [
        subprocess.Popen(
            args,
            env=env,
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ]
    if beat:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    app,
                    "beat",
                    "-s",
                    str(workdir / "schedule"),
                    "--max-interval",
                    "1",
                ],
                env=env,
                stdout=(workdir / "beat.log").open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    try:
        deadline = time.monotonic() + 60
        while "ready" not in log_path.read_text(errors="replace"):
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise RuntimeError(log_path.read_text(errors="replace")[-2000:])
            time.sleep(0.1)
        yield
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
