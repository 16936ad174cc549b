"""`leadrelay metrics`: one /metrics: the workers' counters and the ledger's backlog."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from worker import ledger
from worker.delivery.context import WorkerContext
from worker.ledger import outbox, reports
from worker.ops import metrics


class BacklogCollector(Collector):
    """The ledger's gauges (`metrics.ledger_families`), read at each scrape."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        now = self.ctx.clock()
        with self.ctx.sessions() as session:
            stats = reports.stats(session, now)
            pauses = ledger.pauses(session, now)
            unsent = outbox.unsent_counts(session)
        readings = {}
        for name in stats.keys() | pauses.keys() | unsent.keys():
            found, pause = stats.get(name), pauses.get(name)
            readings[name] = metrics.LedgerReading(
                states=found.states if found else {},
                oldest_due_s=found.oldest_due_s if found else None,
                paused=pause.kind if pause else None,
                events_unsent=unsent.get(name, 0),
            )
        yield from metrics.ledger_families(self.ctx.settings.destinations.values(), readings)


def registry(ctx: WorkerContext) -> CollectorRegistry:
    """The workers' counters (multiprocess when PROMETHEUS_MULTIPROC_DIR is set) and the backlog."""
    reg = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(reg)  # type: ignore[no-untyped-call]
    reg.register(BacklogCollector(ctx))
    return reg


def serve(ctx: WorkerContext, host: str, port: int) -> None:
    start_http_server(port, addr=host, registry=registry(ctx))
    threading.Event().wait()
