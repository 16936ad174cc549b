"""`leadrelay metrics`: one /metrics: the workers' counters and the ledger's backlog."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from worker.delivery.context import WorkerContext
from worker.ledger import reports


class BacklogCollector(Collector):
    """Deliveries by destination and state, and the oldest due one's age, read at each scrape."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        backlog = GaugeMetricFamily(
            "leadrelay_backlog",
            "Deliveries by destination and state.",
            labels=["destination", "state"],
        )
        oldest = GaugeMetricFamily(
            "leadrelay_oldest_due_seconds",
            "Age of the oldest due delivery.",
            labels=["destination"],
        )
        with self.ctx.sessions() as session:
            stats = reports.stats(session, self.ctx.clock())
        for name, s in stats.items():
            for state, n in s.states.items():
                backlog.add_metric([name, state], n)
            oldest.add_metric([name], s.oldest_due_s or 0.0)
        yield backlog
        yield oldest


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
