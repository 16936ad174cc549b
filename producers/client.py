"""
The producer side: validate, commit to the ledger, wake the destination's queue.

A lead is accepted once it is committed; the wake-up after it is a courtesy
(beat's sweeper finds due leads whose message was lost), so a broker that is
down does not refuse leads that are already safe.

A producer opens only the ledger. It reads no platform's secret (those are
resolved by the worker that sends), opens no HTTP client and no limiter, and
builds the Celery app only when it first publishes a wake-up; kombu's own
Redis transport is left as it is (our reconnect fix is installed only in
`celery worker`).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from worker import intake
from worker.errors import LeadInvalid
from worker.intake import Accepted, IntakeContext, Ledgered, Submission
from worker.settings import Settings, get_settings

if TYPE_CHECKING:
    from worker.delivery.context import WorkerContext

log = logging.getLogger("leadrelay.producers")

Waker = Callable[[str, int], None]


def celery_waker(destination: str, count: int) -> None:
    """Wake enough drains of `destination` to use its concurrency for `count` new leads."""
    from worker.runtime.wakeups import wake

    try:
        for _ in range(count):
            wake(destination)
    except Exception:  # the lead is committed; the sweeper re-wakes the queue
        log.warning(
            "wake-up not sent",
            extra={"event": "intake.wake_failed", "destination": destination},
        )


class Producer:
    """Submits leads to destinations. One per process is enough; it is thread-safe."""

    def __init__(self, ctx: Ledgered, waker: Waker | None = celery_waker) -> None:
        self.ctx = ctx
        self.waker = waker
        self._configured = waker is not celery_waker
        self._lock = threading.Lock()
        self._sender: WorkerContext | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, waker: Waker | None = celery_waker
    ) -> Producer:
        return cls(IntakeContext.open(settings or get_settings()), waker)

    def submit(
        self,
        destination: str,
        lead: Mapping[str, Any],
        idempotency_key: str | None = None,
    ) -> str:
        """Accept one lead; returns its id, or raises LeadInvalid naming every broken field."""
        result = self.submit_many(destination, [Submission(lead, idempotency_key)])[0]
        if result.lead_id is None:
            raise LeadInvalid(result.errors)
        return result.lead_id

    def submit_many(
        self,
        destination: str,
        leads: Iterable[Submission | Mapping[str, Any]],
        *,
        source: str = "api",
    ) -> list[Accepted]:
        """Accept many leads in one transaction; a refused lead does not stop the good ones."""
        subs = [x if isinstance(x, Submission) else Submission(x) for x in leads]
        results = intake.accept(self.ctx, destination, subs, source=source)
        self.wake(destination, results)
        return results

    def wake(self, destination: str, results: Sequence[Accepted]) -> None:
        """Wake the destination's drains for the leads `results` created (none: nothing sent)."""
        created = sum(1 for r in results if r.created)
        if not created or self.waker is None:
            return
        if not self._configured:
            with self._lock:
                if not self._configured:
                    from worker.runtime.app import use_settings

                    use_settings(self.ctx.settings)  # the app publishes to this ledger's broker
                    self._configured = True
        dest = self.ctx.settings.destination(destination)
        self.waker(destination, min(dest.concurrency, math.ceil(created / dest.batch_size)))

    def confirm_sms(self, application_id: str, code: str) -> str:
        """Send the user's SMS code for an Admitad bank application; returns its new state."""
        from worker.delivery import confirm as sms

        return sms.confirm(self._sending_context(), application_id, code).state

    def _sending_context(self) -> WorkerContext:
        """The one call a producer makes to a platform (an SMS code) needs a worker's context."""
        from worker.delivery.context import WorkerContext, build

        if isinstance(self.ctx, WorkerContext):
            return self.ctx
        with self._lock:
            if self._sender is None:
                self._sender = build(self.ctx.settings)
            return self._sender

    def close(self) -> None:
        closer = getattr(self.ctx, "close", None)
        if callable(closer):
            closer()
        if self._sender is not None:
            self._sender.close()


_default: Producer | None = None
_default_lock = threading.Lock()


def default() -> Producer:
    """The process's producer, built from the environment on first use."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Producer.from_settings()
    return _default


def submit(destination: str, lead: Mapping[str, Any], *, idempotency_key: str | None = None) -> str:
    """Accept one lead for `destination`; returns its id, or raises LeadInvalid."""
    return default().submit(destination, lead, idempotency_key)


def submit_many(
    destination: str, leads: Iterable[Submission | Mapping[str, Any]]
) -> list[Accepted]:
    """Accept many leads; each result holds the id, or the field errors of a refused lead."""
    return default().submit_many(destination, leads)


def confirm_sms(application_id: str, code: str) -> str:
    """Send the user's SMS code for an application waiting for it (Admitad's banks)."""
    return default().confirm_sms(application_id, code)
