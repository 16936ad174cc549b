"""
A host app with its own Celery app imports `producers`, submits, and still
publishes through kombu's own Redis transport: importing our producer API
changes nothing in the host process, and keeps the worker's internals, the
sandbox and the metrics server out of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from tests.factories import kuper_lead, kuper_table
from tests.system.conftest import write_config

HOST_APP = """
import json, sys
import kombu.transport
from celery import Celery
from kombu.transport import redis as kombu_redis

host = Celery("host", broker=sys.argv[1])
host.conf.task_default_queue = "host.jobs"
aliases_before = dict(kombu.transport.TRANSPORT_ALIASES)

import producers
after_import = set(sys.modules)
lead_id = producers.submit("kuper-host", json.loads(sys.argv[2]), idempotency_key="host-1")

host.send_task("host.job", args=[lead_id])
with host.connection_for_write() as conn:
    host_transport = type(conn.transport)
print(json.dumps({
    "lead_id": lead_id,
    "host_transport_is_kombus": host_transport is kombu_redis.Transport,
    "aliases_unchanged": dict(kombu.transport.TRANSPORT_ALIASES) == aliases_before,
    "loaded_at_import": sorted(m for m in after_import if m.split(".")[0] in
        ("worker", "sandbox", "starlette", "uvicorn", "prometheus_client", "sqlalchemy", "httpx")),
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] in
        ("sandbox", "starlette", "uvicorn", "prometheus_client")
        or m in ("producers.metrics_server", "producers.cli", "producers.demo",
                 "worker.runtime.tasks", "worker.delivery.loop", "worker.delivery.context")),
}))
"""


def test_a_host_app_keeps_kombus_transport_and_gets_its_wake_up_sent(
    ledger_url: str, redis_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "leadrelay.toml", {"kuper-host": kuper_table("http://x.test")})
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADRELAY_")}
    env.update(
        LEADRELAY_DATABASE_URL=ledger_url,
        LEADRELAY_BROKER_URL=redis_url,
        LEADRELAY_CONFIG=str(config),
    )
    run = subprocess.run(
        [sys.executable, "-c", HOST_APP, redis_url, json.dumps(kuper_lead())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["lead_id"]
    assert seen["host_transport_is_kombus"] is True
    assert seen["aliases_unchanged"] is True
    assert seen["loaded_at_import"] == [], "import producers loads nothing until first use"
    assert seen["loaded"] == []
    client = redis.Redis.from_url(redis_url)
    assert client.llen("deliver.kuper-host") == 1  # our wake-up, through our app
    assert client.llen("host.jobs") == 1  # the host's own message, through its app
    client.close()
