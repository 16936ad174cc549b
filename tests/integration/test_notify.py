"""
Settlement events on a real PostgreSQL and on SQLite, and through a real Redis:
one event per settlement into a final state, written in the settlement's own
transaction and only for rows it really changed; no personal data in it; the
flusher marks what it published; a wiped broker gets every kept event again.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from producers.client import Producer
from sandbox import kuper as kuper_sandbox
from sandbox import serve
from tests.factories import kuper_lead, kuper_table
from worker import ledger
from worker.delivery import context, notify
from worker.delivery import loop as delivery
from worker.delivery.context import WorkerContext
from worker.leads import POLL_STATES, Delivery, LeadState
from worker.ledger import outbox
from worker.ledger.db import make_engine, make_sessionmaker
from worker.ledger.store import NewLead
from worker.ledger.tables import DeliveryRow, OutboxRow
from worker.outcomes import Settlement
from worker.runtime import tasks
from worker.runtime.app import use_settings

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
SECRET = "s3cr3t-platform-token"
NOTIFY = ledger.Notify("k", "app.lead_settled", "app.events", secrets=(SECRET,))
PHONE = "+7 (916) 555-12-34"


@pytest.fixture
def sessions(ledger_sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """The ledger (PostgreSQL or SQLite), its outbox empty."""
    with ledger_sessions.begin() as s:
        s.execute(delete(OutboxRow))
    return ledger_sessions


def claimed(
    sessions: sessionmaker[Session], n: int, *, owner: str = "w1", now: datetime = NOW
) -> list[Delivery]:
    """`n` fresh leads (keys order-0 …), each with the phone in its payload, claimed by `owner`."""
    leads = [
        NewLead(
            id=f"lead{i:028d}",
            destination="k",
            payload={"phone": PHONE},
            source="test",
            idempotency_key=f"order-{i}",
        )
        for i in range(n)
    ]
    with sessions.begin() as s:
        ledger.insert_leads(s, leads, now)
    with sessions.begin() as s:
        return ledger.claim_due(s, "k", limit=n, now=now, lease=LEASE, owner=owner)


def settled(d: Delivery, state: LeadState, **more: Any) -> Settlement:
    return Settlement(delivery_id=d.id, state=state, attempts=d.attempt, due_at=None, **more)


def events(sessions: sessionmaker[Session]) -> list[dict[str, Any]]:
    """Every event in the outbox, oldest first, with its row's own columns."""
    with sessions() as s:
        rows = s.scalars(select(OutboxRow).order_by(OutboxRow.id)).all()
        return [
            {
                "lead_id": r.lead_id,
                "task": r.task,
                "queue": r.queue,
                "payload": r.payload,
                "sent_at": r.sent_at,
                "sent_epoch": r.sent_epoch,
            }
            for r in rows
        ]


def state_of(sessions: sessionmaker[Session], d: Delivery) -> str:
    with sessions() as s:
        return str(s.scalar(select(DeliveryRow.state).where(DeliveryRow.id == d.id)))


# --- written with the settlement ----------------------------------------------------


def test_each_settlement_into_a_final_state_writes_one_event_with_exactly_its_keys(
    sessions: sessionmaker[Session],
) -> None:
    a, b, c = claimed(sessions, 3)
    with sessions.begin() as s:
        changed = ledger.settle(
            s,
            "w1",
            [
                settled(a, LeadState.DELIVERED, external_id="kuper-uuid-1"),
                settled(b, LeadState.REJECTED, detail="vacancy closed"),
                Settlement(c.id, LeadState.RETRY_WAIT, 1, NOW + LEASE, "HTTP 502"),
            ],
            NOW,
            NOTIFY,
        )
    assert changed == 3
    found = events(sessions)
    assert [e["payload"] for e in found] == [
        {
            "lead_id": a.lead_id,
            "destination": "k",
            "idempotency_key": "order-0",
            "state": "delivered",
            "external_id": "kuper-uuid-1",
            "detail": "",
            "settled_at": "2026-12-01T09:00:00+00:00",
        },
        {
            "lead_id": b.lead_id,
            "destination": "k",
            "idempotency_key": "order-1",
            "state": "rejected",
            "external_id": None,
            "detail": "vacancy closed",
            "settled_at": "2026-12-01T09:00:00+00:00",
        },
    ]
    assert all(set(e["payload"]) == set(outbox.EVENT_KEYS) for e in found)
    assert {(e["task"], e["queue"], e["sent_at"]) for e in found} == {
        ("app.lead_settled", "app.events", None)
    }


def test_every_final_state_gives_its_event(sessions: sessionmaker[Session]) -> None:
    final = sorted(
        {
            LeadState.DELIVERED,
            LeadState.REJECTED,
            LeadState.DEAD,
            LeadState.UNMATCHED,
            LeadState.APPROVED,
            LeadState.DECLINED,
            LeadState.ERROR,
            LeadState.EXPIRED,
        }
    )
    batch = claimed(sessions, len(final))
    with sessions.begin() as s:
        ledger.settle(
            s, "w1", [settled(d, st) for d, st in zip(batch, final, strict=True)], NOW, NOTIFY
        )
    assert [e["payload"]["state"] for e in events(sessions)] == [str(st) for st in final]


def test_a_settlement_rolled_back_leaves_no_event(sessions: sessionmaker[Session]) -> None:
    """The event is the settlement's own: neither outlives the other's rollback."""
    (d,) = claimed(sessions, 1)

    def settle_then_fail() -> None:
        with sessions.begin() as s:
            ledger.settle(s, "w1", [settled(d, LeadState.DELIVERED)], NOW, NOTIFY)
            assert len(s.scalars(select(OutboxRow)).all()) == 1  # there, inside the transaction
            raise RuntimeError("the commit never comes")

    with pytest.raises(RuntimeError):
        settle_then_fail()
    assert events(sessions) == []
    assert state_of(sessions, d) == "sending"


def test_no_event_for_a_row_whose_lease_was_lost(sessions: sessionmaker[Session]) -> None:
    """The sweeper took the lease back, another worker claimed it: the old owner changes nothing."""
    (d,) = claimed(sessions, 1, owner="w1")
    later = NOW + LEASE * 2
    with sessions.begin() as s:
        ledger.sweep_expired_leases(s, "k", now=later, max_attempts=5, notify=NOTIFY)
    with sessions.begin() as s:
        assert ledger.claim_due(s, "k", limit=1, now=later, lease=LEASE, owner="w2")
    with sessions.begin() as s:
        changed = ledger.settle(s, "w1", [settled(d, LeadState.DELIVERED)], later, NOTIFY)
    assert changed == 0
    assert events(sessions) == []
    assert state_of(sessions, d) == "sending"


def test_no_event_for_a_destination_that_tells_nobody(sessions: sessionmaker[Session]) -> None:
    batch = claimed(sessions, 2)
    with sessions.begin() as s:
        ledger.settle(s, "w1", [settled(d, LeadState.DELIVERED) for d in batch], NOW)
        ledger.sweep_expired_leases(s, "k", now=NOW + LEASE * 2, max_attempts=1)
    assert events(sessions) == []


def test_the_detail_carries_no_phone_email_or_secret_and_is_cut_short(
    sessions: sessionmaker[Session],
) -> None:
    (d,) = claimed(sessions, 1)
    words = f"Кандидат {PHONE} (ivan.petrov@example.com) уже есть; token {SECRET}. " + "x" * 3000
    with sessions.begin() as s:
        ledger.settle(s, "w1", [settled(d, LeadState.REJECTED, detail=words)], NOW, NOTIFY)
    (event,) = events(sessions)
    detail = event["payload"]["detail"]
    assert detail.startswith("Кандидат *** (***) уже есть; token ***.")
    assert len(detail) == outbox.DETAIL_MAX
    message = json.dumps(event["payload"])
    assert "5551234" not in re.sub(r"\D", "", message)
    assert "@" not in message and SECRET not in message
    with sessions() as s:  # the ledger keeps the platform's whole words
        assert s.scalar(select(DeliveryRow.detail)) == words[:2000]


def test_a_lead_settled_twice_gives_two_events_and_a_look_that_changes_nothing_none(
    sessions: sessionmaker[Session],
) -> None:
    """Delivered, then looked at (still delivered: no event), then approved: two events."""
    (d,) = claimed(sessions, 1)
    look = NOW + timedelta(minutes=1)
    with sessions.begin() as s:
        ledger.settle(
            s,
            "w1",
            [Settlement(d.id, LeadState.DELIVERED, 1, look, external_id="x-1")],
            NOW,
            NOTIFY,
        )
    for state, owner in ((LeadState.DELIVERED, "p1"), (LeadState.APPROVED, "p2")):
        with sessions.begin() as s:
            (polled,) = ledger.claim_due(
                s,
                "k",
                limit=1,
                now=look,
                lease=LEASE,
                owner=owner,
                states=POLL_STATES,
                keep_state=True,
            )
        due = look if state == LeadState.DELIVERED else None
        with sessions.begin() as s:
            ledger.settle(
                s, owner, [Settlement(d.id, state, 1, due, external_id="x-1")], look, NOTIFY
            )
    assert [e["payload"]["state"] for e in events(sessions)] == ["delivered", "approved"]
    assert {e["payload"]["external_id"] for e in events(sessions)} == {"x-1"}
    assert polled.state == LeadState.DELIVERED


def test_a_lease_swept_into_dead_gives_an_event_and_one_swept_back_to_due_none(
    sessions: sessionmaker[Session],
) -> None:
    claimed(sessions, 1)
    with sessions.begin() as s:
        ledger.sweep_expired_leases(s, "k", now=NOW + LEASE * 2, max_attempts=5, notify=NOTIFY)
    assert events(sessions) == []
    later = NOW + LEASE * 3
    with sessions.begin() as s:
        ledger.claim_due(s, "k", limit=1, now=later, lease=LEASE, owner="w2")
    with sessions.begin() as s:
        swept = ledger.sweep_expired_leases(
            s, "k", now=later + LEASE * 2, max_attempts=2, notify=NOTIFY
        )
    assert swept == 1
    (event,) = events(sessions)
    assert event["payload"]["state"] == "dead"
    assert event["payload"]["detail"].startswith("the worker holding this lead stopped")


# --- the flusher -----------------------------------------------------------------------


class Recorder:
    """A `publish` that keeps what it was given, and fails on the `fail_at`-th call."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.fail_at = fail_at

    def __call__(self, task: str, queue: str, payload: Any) -> None:
        if self.fail_at is not None and len(self.sent) + 1 == self.fail_at:
            raise ConnectionError("the broker went away")
        self.sent.append((task, queue, dict(payload)))


def settle_all(sessions: sessionmaker[Session], n: int) -> list[Delivery]:
    batch = claimed(sessions, n)
    with sessions.begin() as s:
        ledger.settle(s, "w1", [settled(d, LeadState.DELIVERED) for d in batch], NOW, NOTIFY)
    return batch


def test_a_flush_publishes_oldest_first_and_marks_them_sent_under_the_epoch(
    sessions: sessionmaker[Session],
) -> None:
    batch = settle_all(sessions, 5)
    publish = Recorder()
    report = notify.flush(sessions, publish, "epoch-a", clock=lambda: NOW, batch=2)
    assert (report.sent, report.resent, report.failed) == (5, 0, None)
    assert [p["lead_id"] for _, _, p in publish.sent] == [d.lead_id for d in batch]
    assert {(t, q) for t, q, _ in publish.sent} == {("app.lead_settled", "app.events")}
    assert {(e["sent_at"], e["sent_epoch"]) for e in events(sessions)} == {(NOW, "epoch-a")}
    again = Recorder()
    assert notify.flush(sessions, again, "epoch-a", clock=lambda: NOW).sent == 0
    assert again.sent == []


def test_a_failed_publish_keeps_the_published_marked_and_the_rest_for_the_next_flush(
    sessions: sessionmaker[Session],
) -> None:
    settle_all(sessions, 4)
    report = notify.flush(sessions, Recorder(fail_at=3), "epoch-a", clock=lambda: NOW)
    assert (report.sent, report.failed) == (2, "ConnectionError")
    assert [e["sent_at"] is not None for e in events(sessions)] == [True, True, False, False]
    rest = Recorder()
    assert notify.flush(sessions, rest, "epoch-a", clock=lambda: NOW).sent == 2
    assert len(rest.sent) == 2


def test_events_sent_under_another_epoch_go_again_and_old_ones_are_deleted(
    sessions: sessionmaker[Session],
) -> None:
    settle_all(sessions, 3)
    notify.flush(sessions, Recorder(), "epoch-a", clock=lambda: NOW)
    wiped = Recorder()
    report = notify.flush(sessions, wiped, "epoch-b", clock=lambda: NOW + timedelta(hours=1))
    assert (report.resent, report.sent) == (3, 3)
    assert {e["sent_epoch"] for e in events(sessions)} == {"epoch-b"}
    day_later = NOW + notify.KEEP_SENT + timedelta(hours=2)
    kept = notify.flush(sessions, Recorder(), "epoch-b", clock=lambda: day_later)
    assert (kept.sent, kept.deleted) == (0, 3)
    assert events(sessions) == []


def test_a_server_changed_under_the_epoch_sends_the_last_hours_events_again(
    sessions: sessionmaker[Session],
) -> None:
    """A failover or a restart from disk keeps the epoch and may lose the last messages."""
    settle_all(sessions, 5)
    notify.flush(sessions, Recorder(), "epoch-a", clock=lambda: NOW - timedelta(hours=2))
    with sessions.begin() as s:  # three of them sent ten minutes ago instead
        recent = select(OutboxRow.id).order_by(OutboxRow.id.desc()).limit(3).scalar_subquery()
        s.execute(
            update(OutboxRow)
            .where(OutboxRow.id.in_(recent))
            .values(sent_at=NOW - timedelta(minutes=10))
        )

    again = Recorder()
    report = notify.flush(sessions, again, "epoch-a", clock=lambda: NOW, moved=True)
    assert (report.resent, report.sent) == (3, 3)  # the last hour's; not the two before it
    sent_at = sorted(e["sent_at"] for e in events(sessions))
    assert sent_at == [NOW - timedelta(hours=2)] * 2 + [NOW] * 3
    assert notify.flush(sessions, Recorder(), "epoch-a", clock=lambda: NOW).resent == 0


def test_flushers_at_once_take_disjoint_batches(ledger_url: str) -> None:
    """FOR UPDATE SKIP LOCKED: a flusher holding a batch is passed over, not waited for."""
    sessions = make_sessionmaker(make_engine(ledger_url))
    with sessions.begin() as s:
        s.execute(delete(OutboxRow))
    settle_all(sessions, 4)
    held = threading.Event()
    done = threading.Event()
    first: list[int] = []

    def slow_flusher() -> None:
        with sessions.begin() as s:
            first.extend(e.id for e in outbox.unsent(s, 2))
            held.set()
            done.wait(10)

    thread = threading.Thread(target=slow_flusher)
    thread.start()
    held.wait(10)
    with sessions.begin() as s:
        second = [e.id for e in outbox.unsent(s, 4)]
    done.set()
    thread.join()
    assert len(first) == 2 and len(second) == 2 and not set(first) & set(second)


def test_the_unsent_and_the_other_epochs_are_found_by_index(ledger_url: str) -> None:
    """Each flush asks both: each must be an index scan, however many sent events are kept."""
    sessions = make_sessionmaker(make_engine(ledger_url))
    with sessions.begin() as s:
        s.execute(text("SET LOCAL enable_seqscan = off"))
        unsent = s.execute(
            text("EXPLAIN SELECT id FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT 200")
        ).scalars()
        assert "ix_outbox_unsent" in "\n".join(unsent)
        others = s.execute(
            text(
                "EXPLAIN SELECT id FROM outbox WHERE sent_at IS NOT NULL"
                " AND (sent_epoch < 'e' OR sent_epoch > 'e')"
            )
        ).scalars()
        assert "ix_outbox_sent" in "\n".join(others)


# --- through a real Redis and Celery's own publishing --------------------------------------


def queued(client: redis.Redis[bytes], queue: str) -> list[dict[str, Any]]:
    """The messages waiting on `queue` (kombu's Redis list), in the order a consumer takes them."""
    out = []
    for raw in reversed(client.lrange(queue, 0, -1)):  # kombu pushes left, consumers pop right
        message = json.loads(raw)
        assert message["content-type"] == "application/json"
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        out.append({"task": message["headers"]["task"], "args": args, "kwargs": kwargs})
    return out


@pytest.fixture
def notifying_ctx(make_ctx: Callable[..., WorkerContext]) -> Iterator[WorkerContext]:
    """A worker context whose destination tells app.lead_settled on app.events; Celery on it."""
    ctx = make_ctx(
        {
            "k": {
                **kuper_table("http://127.0.0.1:9"),
                "notify_task": "app.lead_settled",
                "notify_queue": "app.events",
            }
        }
    )
    with ctx.sessions.begin() as s:
        s.execute(delete(OutboxRow))
    use_settings(ctx.settings)
    context.install(ctx)
    yield ctx
    context.install(None)


def test_a_wiped_broker_loses_no_event_the_next_flush_sends_every_kept_one_again(
    notifying_ctx: WorkerContext, redis_url: str
) -> None:
    ctx = notifying_ctx
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    batch = settle_all(ctx.sessions, 3)

    assert tasks.flush_events() == {"sent": 3, "resent": 0, "deleted": 0}
    first = queued(client, "app.events")
    assert [m["task"] for m in first] == ["app.lead_settled"] * 3
    assert [m["args"][0]["lead_id"] for m in first] == [d.lead_id for d in batch]
    assert all(len(m["args"]) == 1 and m["kwargs"] == {} for m in first)
    epoch = client.get(notify.EPOCH_KEY)

    assert tasks.flush_events() == {"sent": 0, "resent": 0, "deleted": 0}  # nothing twice
    client.flushdb()  # the broker's database wiped (FLUSHALL would wipe others')
    assert tasks.flush_events() == {"sent": 3, "resent": 3, "deleted": 0}
    assert queued(client, "app.events") == first
    assert client.get(notify.EPOCH_KEY) not in (None, epoch)
    client.close()


def test_a_flush_that_published_before_a_wipe_but_committed_after_is_caught_next_time(
    notifying_ctx: WorkerContext, redis_url: str
) -> None:
    """Its events carry the old epoch, the key the new one: the next flush sends them again."""
    ctx = notifying_ctx
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    settle_all(ctx.sessions, 2)
    old = notify.broker_epoch(client)
    client.flushdb()  # the broker's database wiped (FLUSHALL would wipe others')
    new = notify.broker_epoch(client)  # another flusher found the key gone
    assert new != old
    notify.flush(ctx.sessions, Recorder(), old, clock=lambda: NOW)  # the late commit
    assert tasks.flush_events()["resent"] == 2
    assert len(queued(client, "app.events")) == 2
    client.close()


def test_a_promoted_replica_holding_the_old_servers_id_gets_the_recent_events_again(
    notifying_ctx: WorkerContext, redis_url: str
) -> None:
    """
    After a Sentinel failover the new master holds the epoch and SERVER_KEY as the old
    master last wrote them, and runs under its own run_id: what this test writes.
    """
    ctx = notifying_ctx
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    settle_all(ctx.sessions, 3)
    assert tasks.flush_events() == {"sent": 3, "resent": 0, "deleted": 0}
    run_id = client.info("server")["run_id"]
    assert client.get(notify.SERVER_KEY) == run_id.encode()

    client.set(notify.SERVER_KEY, "the-old-master-run-id")
    client.delete("app.events")  # what the replica never received
    assert tasks.flush_events() == {"sent": 3, "resent": 3, "deleted": 0}
    assert len(queued(client, "app.events")) == 3
    assert client.get(notify.SERVER_KEY) == run_id.encode()
    assert tasks.flush_events() == {"sent": 0, "resent": 0, "deleted": 0}  # once, not each flush
    client.close()


# --- the delivery loop, end to end ----------------------------------------------------------


@pytest.fixture(scope="module")
def kuper_dedup_url() -> Iterator[str]:
    app = kuper_sandbox.create_app(username="partner", password="kuper-secret-pw", deduplicate=True)
    with serve(app) as url:
        yield url


def test_the_loop_writes_an_event_per_lead_it_settles_and_none_names_a_phone(
    make_ctx: Callable[..., WorkerContext], kuper_dedup_url: str
) -> None:
    httpx.post(f"{kuper_dedup_url}/__sandbox__/reset")
    table = kuper_table(kuper_dedup_url, deduplicate=True)
    ctx = make_ctx(
        {
            "kuper": {**table, "notify_task": "app.lead_settled", "notify_queue": "app.events"},
            "quiet": table,
        }
    )
    with ctx.sessions.begin() as s:
        s.execute(delete(OutboxRow))
    lead = kuper_lead()
    producer = Producer(ctx, waker=None)
    first = producer.submit("kuper", lead, "order-1")
    delivery.drain(ctx, "kuper")
    second = producer.submit("kuper", lead, "order-2")  # the same phone: Kuper skips it
    delivery.drain(ctx, "kuper")
    producer.submit("quiet", kuper_lead())
    delivery.drain(ctx, "quiet")

    found = events(ctx.sessions)
    assert [(e["lead_id"], e["payload"]["state"]) for e in found] == [
        (first, "delivered"),
        (second, "rejected"),
    ]
    assert [e["payload"]["idempotency_key"] for e in found] == ["order-1", "order-2"]
    digits = re.sub(r"\D", "", lead["phone"])[1:]
    assert all(digits not in re.sub(r"\D", "", json.dumps(e["payload"])) for e in found)
