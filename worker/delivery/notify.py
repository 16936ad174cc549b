"""
Telling upstream apps their leads settled: the outbox's flusher.

A destination with `notify_task` and `notify_queue` has an event written to the
ledger's outbox in the transaction of each settlement (`worker.ledger.outbox`).
`flush` publishes them, oldest first, a batch per transaction: the batch is
taken with FOR UPDATE SKIP LOCKED (flushers running at once take disjoint
batches), each event is handed to `publish`, and the published ones are marked
sent before the transaction commits. A crash between a publish and the commit
publishes the event again: delivery is at least once, and a consumer
deduplicates by (lead_id, state).

A published event lives in the broker (Redis) until the upstream app takes it,
so a wiped broker (FLUSHALL, a restart without persistence, a new server) loses
it. The broker's epoch guards against that: a random id kept in a key of the
broker itself (`broker_epoch`; a broker without one is given a new one). Each
event is marked with the epoch it was sent under, and every flush first makes
every kept event sent under another epoch unsent again. Asked on every flush,
not only when the key is found missing: a flush that published before a wipe
may commit after the next flush set the new epoch, and the flush after that
still catches its events. Sent events are kept KEEP_SENT, then deleted a batch
per flush: an event the upstream app has not taken from Redis within that time
is not sent again after a wipe.

A broker can also lose its last messages and keep the epoch: a Sentinel failover
promotes a replica that had not yet received them (replication is asynchronous,
and the key went over long before), and a restart from an RDB snapshot comes back
without what arrived after the snapshot. Either way the server is another one: its
`run_id` (INFO server) differs from the one the flushers last saw, kept in the
broker too (SERVER_KEY). The flush that notices sends the events of the last
RECENT again before it publishes the rest.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from sqlalchemy.orm import Session, sessionmaker

from worker import keys, ledger
from worker.config import DestinationConfig
from worker.delivery.context import utcnow
from worker.ledger import outbox

log = logging.getLogger("leadrelay.notify")

#: publish(task, queue, payload): one message to the upstream app's task on its queue
Publish = Callable[[str, str, Mapping[str, Any]], None]

#: the broker's epoch; lives in the broker, so a wipe of the broker takes it too
EPOCH_KEY = f"{keys.PREFIX}:broker-epoch"
#: how long a sent event is kept, to be sent again should the broker be wiped
KEEP_SENT = timedelta(days=1)
#: the run_id of the broker's server as the flushers last saw it; replicated and saved
#: with the epoch, so a promoted replica or a restarted server holds the old one
SERVER_KEY = f"{keys.PREFIX}:broker-server"
#: how far back events go again when the server changed under the epoch: well past a
#: replica's lag, and Redis' default snapshot schedule (`save 3600 1`) at its longest
RECENT = timedelta(hours=1)
#: events published per transaction
BATCH = 200
#: the most seconds one flush publishes for; beat starts the next one a second later
BUDGET_S = 2.0
#: the most kept events one flush deletes
DELETE_BATCH = 1000


def target(dest: DestinationConfig, secrets: Iterable[str] = ()) -> ledger.Notify | None:
    """Where `dest`'s settlement events go; None when it tells nobody."""
    if dest.notify_task is None or dest.notify_queue is None:
        return None
    return ledger.Notify(dest.name, dest.notify_task, dest.notify_queue, tuple(secrets))


def broker_epoch(client: redis.Redis[bytes]) -> str:
    """
    The broker's epoch: the id in its EPOCH_KEY. A broker without one (wiped,
    or new) is given one; SET NX, so flushers racing to give it agree on the first.
    """
    while True:
        found = client.get(EPOCH_KEY)
        if found is not None:
            return found.decode()
        client.set(EPOCH_KEY, uuid.uuid4().hex, nx=True)


def broker_moved(client: redis.Redis[bytes]) -> str | None:
    """
    The broker's server's run_id when it is not the server the flushers last saw
    (a failover, a restart); None when it is, or when none was seen yet. Tell
    `server_seen` once its events went again.
    """
    run_id = str(client.info("server")["run_id"])
    seen = client.get(SERVER_KEY)
    if seen is None:
        client.set(SERVER_KEY, run_id)
        return None
    return None if seen.decode() == run_id else run_id


def server_seen(client: redis.Redis[bytes], run_id: str) -> None:
    """The events sent before the server changed went again: the next flush sends none."""
    client.set(SERVER_KEY, run_id)


@dataclass
class Flush:
    """What one flush did."""

    #: events published and marked sent
    sent: int = 0
    #: kept events made unsent again: they went to a broker since wiped
    resent: int = 0
    #: kept events deleted, sent longer than KEEP_SENT ago
    deleted: int = 0
    #: why publishing stopped early (the exception's class), if it did
    failed: str | None = None


def flush(
    sessions: sessionmaker[Session],
    publish: Publish,
    epoch: str,
    *,
    clock: Callable[[], datetime] = utcnow,
    batch: int = BATCH,
    budget_s: float = BUDGET_S,
    moved: bool = False,
) -> Flush:
    """
    Publish unsent events under the broker epoch `epoch`, a batch per
    transaction, until none is left, `budget_s` has passed, or `publish` fails.
    `moved`: the broker's server changed under the epoch (`broker_moved`), so the
    events it took in the last RECENT go again first.
    """
    report = Flush()
    with sessions.begin() as session:
        report.resent = outbox.send_again(session, epoch)
        if moved:
            report.resent += outbox.send_again_since(session, epoch, clock() - RECENT)
    if report.resent:  # logged now: a flush killed before its end would leave no trace
        log.warning(
            "settlement events sent again: the broker was wiped, or its server changed,"
            " since they were sent",
            extra={
                "event": "notify.resent",
                "resent": report.resent,
                "epoch": epoch,
                "server_changed": moved,
            },
        )
    deadline = time.monotonic() + budget_s
    while True:
        sent, report.failed = _publish_batch(sessions, publish, epoch, clock, batch)
        report.sent += sent
        if report.failed or sent < batch or time.monotonic() >= deadline:
            break
    with sessions.begin() as session:
        report.deleted = outbox.delete_sent(session, epoch, clock() - KEEP_SENT, DELETE_BATCH)
    if report.sent or report.resent or report.failed:
        log.info(
            "settlement events published",
            extra={
                "event": "notify.flushed",
                "sent": report.sent,
                "resent": report.resent,
                "deleted": report.deleted,
                "failed": report.failed,
            },
        )
    return report


def _publish_batch(
    sessions: sessionmaker[Session],
    publish: Publish,
    epoch: str,
    clock: Callable[[], datetime],
    limit: int,
) -> tuple[int, str | None]:
    """
    One transaction: take up to `limit` unsent events, publish them in order,
    mark the published ones sent. A failed publish stops the batch; the events
    before it stay marked, the rest wait for the next flush.
    """
    failed: str | None = None
    with sessions.begin() as session:
        events = outbox.unsent(session, limit)
        published: list[int] = []
        for event in events:
            try:
                publish(event.task, event.queue, event.payload)
            except Exception as exc:  # the broker is away: the next flush goes on from here
                failed = type(exc).__name__
                break
            published.append(event.id)
        outbox.mark_sent(session, published, epoch, clock())
    return len(published), failed
