"""The heartbeat file and the liveness probe's reading of it; a broken pool stops the beat."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from worker.runtime import heartbeat, probe


def test_the_probe_is_green_on_a_fresh_heartbeat_and_red_on_a_stale_or_missing_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "beat"
    monkeypatch.setenv(heartbeat.FILE_VAR, str(path))
    monkeypatch.setenv(heartbeat.EVERY_VAR, "2")
    assert probe.live() == (False, f"no heartbeat at {path}")
    heartbeat.write(path, now=time.time() - 5.9)
    assert probe.live()[0] is True
    heartbeat.write(path, now=time.time() - 6.2)
    assert probe.live() == (False, "heartbeat 6s old (stale after 6s)")
    path.write_text("{half", encoding="utf-8")
    assert probe.live()[0] is False
    assert probe.main(["live"]) == 1 and probe.main(["nonsense"]) == 2


def test_a_bad_interval_falls_back_to_the_default() -> None:
    assert heartbeat.every_from_env({heartbeat.EVERY_VAR: "often"}) == heartbeat.DEFAULT_EVERY
    assert heartbeat.every_from_env({heartbeat.EVERY_VAR: "-1"}) == heartbeat.DEFAULT_EVERY
    assert heartbeat.every_from_env({heartbeat.EVERY_VAR: "0.5"}) == 0.5


class Child:
    def __init__(self, alive: bool) -> None:
        self.alive = alive

    def is_alive(self) -> bool:
        return self.alive


@pytest.mark.parametrize(
    ("pool", "alive"),
    [
        (None, True),  # not started yet
        (SimpleNamespace(_pool=None), True),  # solo or threads: no children to look at
        (SimpleNamespace(_pool=SimpleNamespace(_state=0, _pool=[Child(False), Child(True)])), True),
        (SimpleNamespace(_pool=SimpleNamespace(_state=0, _pool=[Child(False)])), False),
        (SimpleNamespace(_pool=SimpleNamespace(_state=2, _pool=[Child(True)])), False),
    ],
)
def test_a_broken_pool_is_not_alive(pool: object, alive: bool) -> None:
    assert heartbeat.pool_alive(pool) is alive


def test_the_thread_writes_while_healthy_and_removes_the_file_when_stopped(
    tmp_path: Path,
) -> None:
    path = tmp_path / "beat"
    controller = SimpleNamespace(pool=None)
    beat = heartbeat.Heartbeat(path, 0.05, controller)
    beat.start()
    deadline = time.monotonic() + 5
    while heartbeat.age(path) is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    controller.pool = SimpleNamespace(_pool=SimpleNamespace(_state=1, _pool=[]))  # closing
    time.sleep(0.3)
    age = heartbeat.age(path)
    assert age is not None and age >= 0.2  # no beat since the pool broke
    beat.stop()
    assert not path.exists()
