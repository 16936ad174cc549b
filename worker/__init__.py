"""
lead relay: delivers leads to lead platforms through per-destination Celery queues.

Importing this package, or any module of it, builds nothing and opens nothing.
The Celery application object is built the first time `worker.app` is asked
for (`celery -A worker worker`, `celery -A worker beat`), from
`worker.runtime.app`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

    app: Celery

__all__ = ["__version__", "app"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # PEP 562: `celery -A worker` asks for `worker.app`; building it here on demand keeps
    # Celery out of every process that imports only the ledger, the adapters or the intake.
    if name == "app":
        from worker.runtime.app import app

        return app
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
