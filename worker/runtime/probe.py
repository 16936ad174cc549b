"""
Kubernetes probes of a worker, as commands:

    python -m worker.runtime.probe live    # liveness: the process's own heartbeat
    python -m worker.runtime.probe ready   # readiness and startup: the broker and the ledger

`live` reads the heartbeat file (`worker.runtime.heartbeat`) and nothing else:
no Celery import, no broker, no database; it runs in about the time of a bare
interpreter's start. It fails when the heartbeat is missing or older than
STALE_AFTER intervals. `ready` asks the broker (PING) and the ledger (SELECT 1),
each with a short timeout: a worker whose broker is away is not ready, but it
stays alive and reconnects by itself.

Exit 0: healthy; 1: not; the one line printed says why.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

from worker.runtime import heartbeat

#: seconds a readiness check waits for the broker or the ledger
READY_TIMEOUT_S = 3


def live() -> tuple[bool, str]:
    path = heartbeat.path_from_env()
    limit = heartbeat.STALE_AFTER * heartbeat.every_from_env()
    age = heartbeat.age(path)
    if age is None:
        return False, f"no heartbeat at {path}"
    if age > limit:
        return False, f"heartbeat {age:.0f}s old (stale after {limit:.0f}s)"
    return True, f"heartbeat {age:.1f}s old"


def ready() -> tuple[bool, str]:
    """
    The broker and the ledger answer. Light on purpose (about 0.3 s, against
    1.6 s through the settings and SQLAlchemy): it runs every few seconds in
    every pod. The URLs come from the variables a deployment sets; only when
    one is unset are the settings loaded for its default.
    """
    import psycopg
    import redis

    from worker import redis_urls
    from worker.errors import ConfigError

    broker_url = _setting("broker_url")
    try:
        client = redis_urls.client(
            broker_url,
            os.environ.get("LEADRELAY_REDIS_MASTER_NAME"),
            socket_timeout=READY_TIMEOUT_S,
            socket_connect_timeout=READY_TIMEOUT_S,
        )
        client.ping()
        client.close()
    except redis.RedisError as exc:
        return False, f"broker unreachable: {type(exc).__name__}"
    except ConfigError as exc:
        return False, f"broker: {exc}"
    database_url = _setting("database_url")
    try:
        if database_url.startswith("sqlite"):
            _sqlite_answers(database_url)
        else:
            conninfo = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
            with psycopg.connect(conninfo, connect_timeout=READY_TIMEOUT_S) as conn:
                conn.execute("SELECT 1")
    except Exception as exc:  # any failure to reach the ledger is "not ready"
        from worker.ledger.migrate import shown_url

        return False, f"ledger at {shown_url(database_url)} unreachable: {type(exc).__name__}"
    return True, "broker and ledger reachable"


def _setting(field: str) -> str:
    value = os.environ.get(f"LEADRELAY_{field.upper()}")
    if value:
        return value
    from worker.settings import Settings

    return str(Settings.model_fields[field].default)


def _sqlite_answers(url: str) -> None:
    import sqlite3

    path = url.split(":///", 1)[1] if ":///" in url else ""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as conn:
        conn.execute("SELECT 1")


CHECKS = {"live": live, "ready": ready}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] not in CHECKS:
        sys.stderr.write("usage: python -m worker.runtime.probe live|ready\n")
        return 2
    ok, why = CHECKS[args[0]]()
    sys.stdout.write(f"{args[0]}: {'ok' if ok else 'failing'}: {why}\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
