"""
Real worker and beat processes (`celery -A worker worker|beat` in subprocesses)
against the real PostgreSQL and Redis and the emulators served over sockets.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from worker.settings import parse_destinations


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, destinations: dict[str, dict[str, Any]]) -> Path:
    parse_destinations(destinations)  # fail here, not in a subprocess
    lines = []
    for name, table in destinations.items():
        lines.append(f"[destinations.{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@dataclass
class Relay:
    """A running relay: worker and beat processes, their environment and logs."""

    env: dict[str, str]
    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start_worker(
        self,
        name: str = "w1",
        concurrency: int = 4,
        queues: str | None = None,
        events: bool = False,
    ) -> None:
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker",
            "worker",
            "-c",
            str(concurrency),
            "-n",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "INFO",
        ]
        if queues:
            args += ["-Q", queues]
        if events:
            args.append("-E")  # task events, for Flower
        self._start(name, args)
        self.wait_for_log(name, "ready", 60)

    def start_beat(self) -> None:
        self._start(
            "beat",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker",
                "beat",
                "-l",
                "INFO",
                "-s",
                str(self.workdir / "beat-schedule"),
                "--max-interval",
                "1",
            ],
        )

    def _start(self, name: str, args: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            args,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def wait_for_log(self, name: str, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.log(name):
            proc = self.procs[name]
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited {proc.returncode}:\n{self.log(name)[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{name} not {needle!r} in {timeout}s:\n{self.log(name)[-3000:]}"
                )
            time.sleep(0.1)

    def children(self, name: str) -> list[psutil.Process]:
        return psutil.Process(self.procs[name].pid).children(recursive=True)

    def kill(self, name: str) -> None:
        """SIGKILL a process and its children: no shutdown, no acks, no cleanup."""
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for name in list(self.procs):
            proc = self.procs.pop(name)
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@pytest.fixture
def relay_factory(
    ledger_url: str, redis_url: str, tmp_path: Path
) -> Iterator[Callable[..., Relay]]:
    made: list[Relay] = []

    def factory(destinations: dict[str, dict[str, Any]], **settings: str) -> Relay:
        config = write_config(tmp_path / "leadrelay.toml", destinations)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEADRELAY_")}
        env.update(
            {
                "LEADRELAY_DATABASE_URL": ledger_url,
                "LEADRELAY_BROKER_URL": redis_url,
                "LEADRELAY_CONFIG": str(config),
                "LEADRELAY_SWEEP_EVERY": "1",
                "LEADRELAY_DRAIN_BUDGET": "5",
                **{f"LEADRELAY_{k.upper()}": v for k, v in settings.items()},
            }
        )
        relay = Relay(env, tmp_path)
        made.append(relay)
        return relay

    yield factory
    for relay in made:
        relay.stop()
