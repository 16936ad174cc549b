"""
The beat schedule: one idempotent sweep, often, and where a destination tells
its upstream app of settlements, the outbox's flush every second. Everything
long waits in the ledger.

Exactly one beat must run: two send every sweep twice (harmless, the ledger
decides, but twice the load), none sends nothing. Celery has no way to ask how
many run, so our scheduler says it is alive: each beat refreshes a key of its
own (`keys.beat_key`, host and pid, a short ttl) in the relay's Redis as it
ticks, and `leadrelay doctor` counts them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from datetime import timedelta
from typing import Any

import redis
from celery.beat import PersistentScheduler

from worker import keys, redis_urls

log = logging.getLogger("leadrelay.beat")

#: seconds between flushes of the settlement events' outbox
NOTIFY_EVERY = 1.0
#: seconds between retention runs (destinations with `keep_days`)
RETENTION_EVERY = 3600.0
#: seconds a beat's presence key outlives its last refresh
PRESENCE_TTL_S = 30
#: the least seconds between two refreshes of it
PRESENCE_EVERY_S = 5.0


def schedule(settings: Any) -> dict[str, dict[str, Any]]:
    """Celery's beat_schedule for these settings."""
    out: dict[str, dict[str, Any]] = {
        "sweep": {
            "task": "leadrelay.sweep",
            "schedule": timedelta(seconds=settings.sweep_every),
            "options": {"queue": "leadrelay", "expires": settings.sweep_every * 2},
        },
    }
    if any(dest.notify_task for dest in settings.destinations.values()):
        out["notify"] = {
            "task": "leadrelay.notify",
            "schedule": timedelta(seconds=NOTIFY_EVERY),
            "options": {"queue": "leadrelay", "expires": NOTIFY_EVERY * 2},
        }
    if any(dest.keep_days for dest in settings.destinations.values()):
        out["retention"] = {
            "task": "leadrelay.retention",
            "schedule": timedelta(seconds=RETENTION_EVERY),
            "options": {"queue": "leadrelay", "expires": RETENTION_EVERY},
        }
    return out


class Scheduler(PersistentScheduler):
    """
    Celery's own scheduler (schedule kept in its file), announcing this beat as
    it ticks. (`_store` is the scheduler's own shelve: ours is `_presence`.)
    """

    def setup_schedule(self) -> None:
        super().setup_schedule()
        self._instance = f"{socket.gethostname()}:{os.getpid()}"
        self._since = int(time.time())
        self._announced = -PRESENCE_EVERY_S
        self._presence: redis.Redis[bytes] | None = None

    def tick(self, *args: Any, **kwargs: Any) -> float:
        self._announce()
        return float(super().tick(*args, **kwargs))

    def close(self) -> None:
        presence = getattr(self, "_presence", None)
        if presence is not None:
            with contextlib.suppress(redis.RedisError):  # else the key expires by itself
                presence.delete(keys.beat_key(self._instance))
            presence.close()
        super().close()

    def _announce(self) -> None:
        now = time.monotonic()
        if now - self._announced < PRESENCE_EVERY_S:
            return
        try:
            if self._presence is None:
                from worker.settings import get_settings

                settings = get_settings()
                self._presence = redis_urls.client(
                    settings.limiter_url,
                    settings.redis_master_name,
                    socket_timeout=2,
                    socket_connect_timeout=2,
                )
            body = json.dumps({"instance": self._instance, "since": self._since})
            self._presence.set(keys.beat_key(self._instance), body, ex=PRESENCE_TTL_S)
            self._announced = now
        except redis.RedisError as exc:  # Redis is away: beat goes on; the doctor will say so
            log.debug("beat presence not written", extra={"error": type(exc).__name__})
