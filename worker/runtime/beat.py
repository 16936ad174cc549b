"""The beat schedule: one idempotent sweep, often. Everything long waits in the ledger."""

from __future__ import annotations

from datetime import timedelta
from typing import Any


def schedule(settings: Any) -> dict[str, dict[str, Any]]:
    """Celery's beat_schedule for these settings."""
    return {
        "sweep": {
            "task": "leadrelay.sweep",
            "schedule": timedelta(seconds=settings.sweep_every),
            "options": {"queue": "leadrelay", "expires": settings.sweep_every * 2},
        },
    }
