"""
The worker's heartbeat: a file its main process rewrites every few seconds,
which the liveness probe (`python -m worker.runtime.probe live`) reads.

Liveness asks whether the process itself is alive, never whether the broker
is: a worker rides out a Redis outage by itself (`worker.runtime.broker`), and
a probe that asked Redis would restart every worker in the middle of that,
which is what the reconnect fix exists to prevent. So the heartbeat is written
by a thread of its own, not by the consumer's event loop (which waits while
the broker is away), and it stops when the process is wedged in a way a
restart cures: its main thread gone, or its pool of children broken.

This module imports nothing heavy: the probe loads it on every run.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("leadrelay.heartbeat")

#: where the heartbeat is written; the probe reads the same variable
FILE_VAR = "LEADRELAY_HEARTBEAT_FILE"
DEFAULT_FILE = Path("/tmp/leadrelay-heartbeat")  # noqa: S108  # an emptyDir of the pod, its own
#: seconds between two writes
EVERY_VAR = "LEADRELAY_HEARTBEAT_EVERY"
DEFAULT_EVERY = 10.0
#: a heartbeat older than this many intervals is stale: the probe fails
STALE_AFTER = 3
#: the environment variables this module reads, for the deployment files' checks
ENVIRONMENT = (FILE_VAR, EVERY_VAR)


def path_from_env(environ: Any = os.environ) -> Path:
    return Path(environ.get(FILE_VAR) or DEFAULT_FILE)


def every_from_env(environ: Any = os.environ) -> float:
    try:
        every = float(environ.get(EVERY_VAR) or DEFAULT_EVERY)
    except ValueError:
        return DEFAULT_EVERY
    return every if every > 0 else DEFAULT_EVERY


def write(path: Path, now: float | None = None) -> None:
    """One heartbeat: the time and this pid, replaced atomically (a reader never sees half)."""
    body = json.dumps({"pid": os.getpid(), "at": time.time() if now is None else now})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def age(path: Path, now: float | None = None) -> float | None:
    """Seconds since the last heartbeat at `path`; None when there is none to read."""
    try:
        at = float(json.loads(path.read_text(encoding="utf-8"))["at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return max(0.0, (time.time() if now is None else now) - at)


def pool_alive(pool: Any) -> bool:
    """
    False when the worker's pool is broken: Celery's prefork pool (billiard) has
    stopped running, or every child is gone. A pool not started yet, or one of
    another kind (solo, threads), counts as alive.
    """
    inner = getattr(pool, "_pool", None)
    if inner is None:
        return True
    if getattr(inner, "_state", 0) != 0:  # billiard's RUN is 0; CLOSE and TERMINATE follow
        return False
    children = getattr(inner, "_pool", None)
    return not children or any(child.is_alive() for child in children)


class Heartbeat:
    """The thread that writes the heartbeat while the worker is healthy."""

    def __init__(self, path: Path, every: float, controller: Any = None) -> None:
        self.path = path
        self.every = every
        self.controller = controller
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leadrelay-heartbeat", daemon=True)

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def stop(self) -> None:
        """The worker is shutting down: stop, and take the file away (a stale one would lie)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.every)
        self.path.unlink(missing_ok=True)

    def healthy(self) -> bool:
        if not threading.main_thread().is_alive():
            return False
        return pool_alive(getattr(self.controller, "pool", None))

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.healthy():
                try:
                    write(self.path)
                except OSError as exc:  # a full or read-only /tmp: the probe will say so
                    log.warning(
                        "heartbeat not written",
                        extra={"event": "heartbeat.failed", "error": type(exc).__name__},
                    )
            self._stop.wait(self.every)


_running: list[Heartbeat] = []


def start(controller: Any) -> Heartbeat:
    """Start this process's heartbeat (the worker's main process, once)."""
    if not _running:
        beat = Heartbeat(path_from_env(), every_from_env(), controller)
        beat.start()
        _running.append(beat)
    return _running[0]


def stop() -> None:
    while _running:
        _running.pop().stop()
