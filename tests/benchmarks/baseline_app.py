"""
The baselines: plain Celery doing the same work the naive way, for side-by-side figures.

* `baseline.noop(item)`: one no-op task per item (it only appends the time it
  ran to a Redis list, one round trip as a counter would be, so the benchmark
  knows when every item ran and when the first and the last did);
* `baseline.post(lead)`, `baseline.post_calltouch(lead)`: one HTTP request per
  item with Celery's own `rate_limit="5/s"`, the limit the shared limiter replaces.

Run by `celery -A tests.benchmarks.baseline_app worker`; the broker and the
target come from BASELINE_BROKER and BASELINE_URL.
"""

from __future__ import annotations

import json
import os
import time

import httpx
import redis
from celery import Celery

from worker.platforms.base import basic_auth

app = Celery("baseline", broker=os.environ.get("BASELINE_BROKER", "redis://127.0.0.1:6379/12"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    task_default_queue="baseline",
    worker_hijack_root_logger=False,
)
_counter = redis.Redis.from_url(app.conf.broker_url)
_http = httpx.Client(timeout=10)
#: the Redis list `noop` appends its time (time.time()) to
NOOP_DONE = "baseline:noop_done_at"


@app.task(name="baseline.noop")  # type: ignore[untyped-decorator]
def noop(item: object) -> None:
    _counter.rpush(NOOP_DONE, repr(time.time()))


@app.task(name="baseline.post", rate_limit="5/s")  # type: ignore[untyped-decorator]
def post(lead: dict[str, object]) -> None:
    _http.post(
        os.environ["BASELINE_URL"] + "/partner-candidate/v2/leads/import",
        content=json.dumps([lead]),
        headers={
            "Content-Type": "application/json",
            "Authorization": basic_auth("partner", "kuper-secret-pw"),
        },
    )
    _counter.incr("baseline:done")


@app.task(name="baseline.post_calltouch", rate_limit="5/s")  # type: ignore[untyped-decorator]
def post_calltouch(lead: dict[str, object]) -> None:
    """One Calltouch custom-fields request for one lead."""
    _http.post(
        os.environ["BASELINE_URL"] + "/lead-service/v1/api/customfield/lead/add",
        json={"leads": [lead]},
        headers={"Access-Token": "calltouch-secret-token", "SiteId": "1234"},
    )
    _counter.incr("baseline:done")
