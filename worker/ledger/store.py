"""
Every query the service runs, by name. Nothing outside `worker.ledger` writes SQL.

Each query is written once for PostgreSQL and SQLite; where the two need different
SQL (the conflict clause, COPY, `= ANY`, row locks, RETURNING across a join), the
query calls a helper in `db.py` that writes it. What comes back is values
(`Delivery`, `Pause`, ids, counts), never ORM rows.

Writes that matter for "never lose a lead" are single statements:
* intake is INSERT … ON CONFLICT DO NOTHING on (destination, idempotency_key), then
  a read of what already existed: two producers racing with one key get one lead;
* a claim is UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING, so
  workers take disjoint batches without waiting on each other (SQLite has one
  writer at a time, so there the locking clause is left out);
* settling a batch only touches rows still leased to the claimant (`lease_owner`),
  so a worker that lost its lease to the sweeper cannot overwrite a newer claim;
* a settlement at a destination that notifies its upstream app writes the
  events of the rows it really changed in the same transaction (`outbox`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    ScalarSelect,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from worker.leads import DUE_STATES, FINAL_STATES, POLL_STATES, Delivery, LeadState
from worker.ledger import db, outbox
from worker.ledger.outbox import Notify, Settled
from worker.ledger.tables import (
    DUE_STATES_SQL,
    AttemptResultRow,
    AttemptRow,
    DeliveryRow,
    LeadRow,
    PauseRow,
    RefusalRow,
)
from worker.outcomes import AttemptRecord, Settlement

#: rows per INSERT statement at intake
CHUNK = 1000


@dataclass(frozen=True, slots=True)
class NewLead:
    """A validated lead on its way into the ledger."""

    id: str
    destination: str
    payload: Mapping[str, Any]
    source: str
    idempotency_key: str | None = None
    #: deliveries to create: 1, or one per stage of a staged application
    stages: int = 1
    #: how long after acceptance the first delivery is due (Admitad: stage 1's pause)
    delay: timedelta = timedelta(0)
    #: `payload` as JSON text, when intake encoded it already: copied as it is (PostgreSQL)
    payload_json: str | None = None


#: the most due deliveries `due_counts` counts per destination, given its destinations
DUE_COUNT_CAP = 10_000

# ---------------------------------------------------------------- intake


def insert_leads(
    session: Session, leads: Sequence[NewLead], now: datetime
) -> list[tuple[str, bool]]:
    """
    Store leads and their deliveries; returns (lead id, created) in input order.

    A lead whose (destination, idempotency_key) exists already is not stored
    again: its existing id comes back with created=False.
    """
    if any(lead.idempotency_key is not None for lead in leads):
        db.plan_each_time(session)
    out: list[tuple[str, bool]] = []
    for start in range(0, len(leads), CHUNK):
        out += _insert_chunk(session, leads[start : start + CHUNK], now)
    return out


def _insert_chunk(
    session: Session, leads: Sequence[NewLead], now: datetime
) -> list[tuple[str, bool]]:
    keyed = [lead for lead in leads if lead.idempotency_key is not None]
    existing = _existing_ids(session, keyed)
    fresh: list[NewLead] = []
    seen: dict[tuple[str, str], str] = {}
    for lead in leads:
        pair = (lead.destination, lead.idempotency_key or "")
        if lead.idempotency_key is not None and (pair in existing or pair in seen):
            continue
        if lead.idempotency_key is not None:
            seen[pair] = lead.id
        fresh.append(lead)
    inserted = _insert_new(session, fresh, now)
    if len(inserted) != len(fresh):  # lost a race with another producer on some keys
        existing.update(_existing_ids(session, [x for x in fresh if x.id not in inserted]))
    _insert_deliveries(session, [x for x in fresh if x.id in inserted], now)
    result = []
    for lead in leads:
        if lead.id in inserted:
            result.append((lead.id, True))
        else:
            pair = (lead.destination, lead.idempotency_key or "")
            result.append((existing.get(pair) or seen[pair], False))
    return result


def _existing_ids(session: Session, leads: Sequence[NewLead]) -> dict[tuple[str, str], str]:
    if not leads:
        return {}
    rows = session.execute(
        select(LeadRow.destination, LeadRow.idempotency_key, LeadRow.id).where(
            or_(
                *(
                    and_(LeadRow.destination == dest, LeadRow.idempotency_key.in_(keys))
                    for dest, keys in _keys_by_destination(leads).items()
                )
            )
        )
    )
    return {(d, k or ""): i for d, k, i in rows}


def _keys_by_destination(leads: Iterable[NewLead]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for lead in leads:
        if lead.idempotency_key is not None:
            out.setdefault(lead.destination, []).append(lead.idempotency_key)
    return out


def _insert_new(session: Session, leads: Sequence[NewLead], now: datetime) -> set[str]:
    if not leads:
        return set()
    if all(lead.idempotency_key is None for lead in leads):
        if all(lead.payload_json is not None for lead in leads) and db.copies(session):
            # the payload as intake encoded it, and no dict per row: a bulk import's path
            copied = [_lead_values(lead, now, lead.payload_json) for lead in leads]
            db.copy_rows(session, LeadRow, _LEAD_COLUMNS, copied)
        else:
            db.bulk_insert(session, LeadRow, [_lead_row(lead, now) for lead in leads])
        return {lead.id for lead in leads}
    rows = [_lead_row(lead, now) for lead in leads]
    stmt = db.insert_ignoring(
        session,
        LeadRow,
        index_elements=["destination", "idempotency_key"],
        index_where=LeadRow.idempotency_key.is_not(None),
    )
    found = session.scalars(stmt.returning(LeadRow.id), rows).all()
    return set(found)


_LEAD_COLUMNS = ("id", "destination", "idempotency_key", "payload", "source", "created_at")


def _lead_values(lead: NewLead, now: datetime, payload: Any) -> tuple[Any, ...]:
    """A lead's row in `_LEAD_COLUMNS` order, its payload as given (a dict, or JSON text)."""
    return (lead.id, lead.destination, lead.idempotency_key, payload, lead.source, now)


def _lead_row(lead: NewLead, now: datetime) -> dict[str, Any]:
    return dict(zip(_LEAD_COLUMNS, _lead_values(lead, now, dict(lead.payload)), strict=True))


#: PostgreSQL: the first delivery of each lead just written, from the ids and
#: destinations as two arrays (`_insert_deliveries`): no read of the leads back
_QUEUE_NEW = text(
    """
    INSERT INTO deliveries (lead_id, destination, stage, state, attempts, due_at, in_doubt,
        detail, data, created_at, updated_at)
    SELECT u.id, u.destination, 0, :queued, 0, :now, false, '', '{}', :now, :now
    FROM unnest(CAST(:ids AS varchar[]), CAST(:destinations AS varchar[]))
        AS u(id, destination)
    """
)


def _insert_deliveries(session: Session, leads: Sequence[NewLead], now: datetime) -> None:
    first = [lead for lead in leads if lead.stages <= 1 and not lead.delay]
    single = [lead.id for lead in first]
    if single and db.on_postgresql(session):
        params = {
            "ids": single,
            "destinations": [lead.destination for lead in first],
            "queued": str(LeadState.QUEUED),
            "now": now,
        }
        session.execute(_QUEUE_NEW, params)
    elif single:
        # SQLite: one statement from the rows just written, no per-row parameters to send
        session.execute(
            insert(DeliveryRow).from_select(
                [
                    "lead_id",
                    "destination",
                    "stage",
                    "state",
                    "attempts",
                    "due_at",
                    "in_doubt",
                    "detail",
                    "data",
                    "created_at",
                    "updated_at",
                ],
                select(
                    LeadRow.id,
                    LeadRow.destination,
                    literal(0),
                    literal(str(LeadState.QUEUED)),
                    literal(0),
                    LeadRow.created_at,
                    literal(False),
                    literal(""),
                    literal({}, type_=DeliveryRow.__table__.c.data.type),
                    LeadRow.created_at,
                    LeadRow.created_at,
                ).where(LeadRow.id.in_(single)),
            )
        )
    # staged leads, and a single delivery due later (its first stage's pause): one row each
    staged: list[dict[str, Any]] = [
        {
            "lead_id": lead.id,
            "destination": lead.destination,
            "stage": stage,
            "state": LeadState.QUEUED if stage <= 1 else LeadState.HELD,
            "attempts": 0,
            "due_at": now + lead.delay if stage <= 1 else None,
            "in_doubt": False,
            "detail": "",
            "data": {},
            "created_at": now,
            "updated_at": now,
        }
        for lead in leads
        if lead.stages > 1 or lead.delay
        for stage in (range(1, lead.stages + 1) if lead.stages > 1 else [0])
    ]
    if staged:
        db.bulk_insert(session, DeliveryRow, staged)


def record_refusal(
    session: Session,
    *,
    now: datetime,
    source: str,
    destination: str | None,
    idempotency_key: str | None,
    errors: Sequence[Mapping[str, str]],
) -> int:
    """Keep a refused intake's reasons (field and rule, never values); returns its id."""
    row = RefusalRow(
        at=now,
        source=source,
        destination=destination,
        idempotency_key=idempotency_key,
        errors={"errors": [dict(e) for e in errors]},
    )
    session.add(row)
    session.flush()
    return row.id


# ---------------------------------------------------------------- delivery


_DELIVERY_COLUMNS = (
    DeliveryRow.id,
    DeliveryRow.lead_id,
    DeliveryRow.attempts,
    DeliveryRow.stage,
    DeliveryRow.external_id,
    DeliveryRow.in_doubt,
    DeliveryRow.data,
    DeliveryRow.state,
)


def claim_due(
    session: Session,
    destination: str,
    *,
    limit: int,
    now: datetime,
    lease: timedelta,
    owner: str,
    states: Iterable[LeadState] = DUE_STATES,
    keep_state: bool = False,
) -> list[Delivery]:
    """
    Lease up to `limit` due deliveries of one destination to `owner`: in-doubt
    ones first, then the oldest due (in doubt first, then due_at, id).

    An in-doubt delivery's next step is a lookup at a platform without
    deduplication, and the longer it waits behind fresh leads, the deeper newer
    leads bury it in the platform's list, until the lookup cannot reach it. Two
    passes, each an index walk that stops at its limit: the in-doubt rows by
    their partial index (ix_deliveries_in_doubt_due), then the others of a send
    claim by ix_deliveries_claim, which holds them in (due_at, id) order; one
    ORDER BY in_doubt over both, or the second pass over ix_deliveries_due
    (no due order across two states), would sort the whole due backlog on every
    claim. A poll claim's states have no such index: it reads the due ranges of
    ix_deliveries_due and sorts what is due for a look.
    A send claim moves them to `sending`; a poll claim (`keep_state`) leaves
    their state and only takes the lease.
    """
    states = frozenset(states)
    if not keep_state and states == DUE_STATES and db.on_postgresql(session):
        return _claim_to_send(session, destination, limit, now, lease, owner)
    claimed: list[Delivery] = []
    for doubt in (db.flag_is(DeliveryRow.in_doubt, True), db.flag_is(DeliveryRow.in_doubt, False)):
        if len(claimed) < limit:
            due = _due(destination, states, now, doubt, limit - len(claimed))
            claimed += _lease(session, due, now, lease, owner, keep_state)
    return claimed


#: PostgreSQL: a send claim's two passes (`claim_due`) in one statement. Each pass
#: is the index walk it was (the WHERE terms are its partial index's own), locked
#: as it is read; the second is read only for what the first leaves of `limit`.
_CLAIM_TO_SEND = text(
    f"""
    WITH doubtful AS (
        SELECT id FROM deliveries
        WHERE in_doubt AND destination = :destination AND {DUE_STATES_SQL}
            AND due_at <= :now AND (lease_until IS NULL OR lease_until < :now)
        ORDER BY due_at, id LIMIT :limit FOR UPDATE SKIP LOCKED
    ), fresh AS (
        SELECT id FROM deliveries
        WHERE destination = :destination AND {DUE_STATES_SQL} AND NOT in_doubt
            AND due_at <= :now AND (lease_until IS NULL OR lease_until < :now)
        ORDER BY due_at, id LIMIT :limit FOR UPDATE SKIP LOCKED
    ), picked AS (
        (SELECT id FROM doubtful) UNION ALL (SELECT id FROM fresh) LIMIT :limit
    )
    UPDATE deliveries AS d
    SET state = :sending, lease_until = :until, lease_owner = :owner, updated_at = :now
    FROM leads AS l
    WHERE d.id IN (SELECT id FROM picked) AND l.id = d.lead_id
    RETURNING d.id, d.lead_id, d.attempts, d.stage, d.external_id, d.in_doubt, d.data,
        d.state, l.payload, l.created_at AS lead_created_at
    """  # noqa: S608 - DUE_STATES_SQL is the partial index's own constant, no input
).columns(
    data=DeliveryRow.data.type,
    payload=LeadRow.payload.type,
    lead_created_at=LeadRow.created_at.type,
)


def _claim_to_send(
    session: Session, destination: str, limit: int, now: datetime, lease: timedelta, owner: str
) -> list[Delivery]:
    """A send claim on PostgreSQL: in-doubt deliveries first, then by id, as `claim_due`."""
    rows = session.execute(
        _CLAIM_TO_SEND,
        {
            "destination": destination,
            "now": now,
            "limit": limit,
            "sending": str(LeadState.SENDING),
            "until": now + lease,
            "owner": owner,
        },
    ).mappings()
    found = [_delivery(dict(r), r["payload"], r["lead_created_at"]) for r in rows]
    return sorted(found, key=lambda d: (not d.in_doubt, d.id))


def _due(
    destination: str, states: Iterable[LeadState], now: datetime, doubt: Any, limit: int
) -> Any:
    """The ids of up to `limit` due, unleased deliveries matching `doubt`, oldest due first."""
    query = (
        select(DeliveryRow.id)
        .where(
            doubt,
            DeliveryRow.destination == destination,
            # literals, sorted, as ix_deliveries_claim's WHERE writes them (DUE_STATES_SQL):
            # SQLite matches a partial index to the same terms only, and PostgreSQL
            # proves nothing from parameters once it plans a prepared claim generically
            DeliveryRow.state.in_(
                bindparam(
                    "claim_states",
                    sorted(str(s) for s in states),
                    expanding=True,
                    literal_execute=True,
                )
            ),
            DeliveryRow.due_at <= now,
            or_(DeliveryRow.lease_until.is_(None), DeliveryRow.lease_until < now),
        )
        .order_by(DeliveryRow.due_at, DeliveryRow.id)
        .limit(limit)
    )
    return db.skip_locked(query)


def _lease(
    session: Session, due: Any, now: datetime, lease: timedelta, owner: str, keep_state: bool
) -> list[Delivery]:
    """Lease the rows `due` selects; the deliveries with their leads' payloads, by id."""
    rows = db.update_returning_joined(
        session,
        update(DeliveryRow)
        .where(DeliveryRow.id.in_(due.scalar_subquery()))
        .values(
            state=DeliveryRow.state if keep_state else LeadState.SENDING,
            lease_until=now + lease,
            lease_owner=owner,
            updated_at=now,
        )
        .execution_options(synchronize_session=False),
        _DELIVERY_COLUMNS,
        join=(DeliveryRow.lead_id, LeadRow.id),
        joined=(LeadRow.payload, LeadRow.created_at.label("lead_created_at")),
    )
    return sorted(
        (_delivery(r, r["payload"], r["lead_created_at"]) for r in rows), key=lambda d: d.id
    )


def _delivery(row: Mapping[str, Any], payload: dict[str, Any], created_at: datetime) -> Delivery:
    """The value a claim hands out, from `_DELIVERY_COLUMNS` and its lead's payload."""
    return Delivery(
        id=row["id"],
        lead_id=row["lead_id"],
        payload=payload,
        attempt=row["attempts"] + 1,
        created_at=created_at,
        stage=row["stage"],
        external_id=row["external_id"],
        in_doubt=row["in_doubt"],
        data=row["data"] or {},
        state=LeadState(row["state"]),
    )


def settle(
    session: Session,
    owner: str,
    settlements: Sequence[Settlement],
    now: datetime,
    notify: Notify | None = None,
) -> int:
    """
    Write each delivery's new state; only rows still leased to `owner` change.
    With `notify` (the destination tells its upstream app), each row that moves
    into a final state gets its event, in this transaction: the rows are read and
    held first, so the events are those of the rows this update changes.
    """
    if not settlements:
        return 0
    final = [s for s in settlements if s.state in FINAL_STATES] if notify else []
    before = outbox.still_leased(session, owner, [s.delivery_id for s in final])
    rows = [
        (
            s.delivery_id,
            str(s.state),
            s.attempts,
            s.due_at,
            s.detail[:2000],
            s.external_id,
            dict(s.data),
            s.in_doubt,
            s.state in DUE_STATES,
            now if s.state in FINAL_STATES or s.state == LeadState.DELIVERED else None,
        )
        for s in settlements
    ]
    if db.on_postgresql(session):
        changed = _settle_in_one(session, owner, rows, now)
    else:
        changed = _settle_each(session, owner, rows, now)
    if notify is not None:
        outbox.record(session, notify, _moved(final, before), now)
    return changed


#: a settlement as `settle` lists it, and the parameters of `_SETTLE_EACH`, in that order
_SETTLED = (
    "id",
    "state",
    "attempts",
    "due",
    "detail",
    "external",
    "data",
    "doubt",
    "due_again",
    "settled",
)

#: PostgreSQL: a batch's settlements in one UPDATE, each column one array parameter.
#: in_doubt: due again, exactly the new doubt (look up before resending or not); past
#: the send, a doubt once raised stays on the row, the record that a platform without
#: deduplication may hold this lead twice
_SETTLE_ALL = text(
    """
    UPDATE deliveries AS d SET
        state = s.state,
        attempts = s.attempts,
        due_at = s.due_at,
        detail = s.detail,
        external_id = s.external_id,
        data = s.data::jsonb,
        in_doubt = CASE WHEN s.due_again THEN s.doubt ELSE d.in_doubt OR s.doubt END,
        lease_until = NULL,
        lease_owner = NULL,
        updated_at = :now,
        settled_at = s.settled_at
    FROM unnest(
        CAST(:ids AS bigint[]), CAST(:states AS text[]), CAST(:attempts AS integer[]),
        CAST(:due AS timestamptz[]), CAST(:details AS text[]), CAST(:external AS text[]),
        CAST(:data AS text[]), CAST(:doubt AS boolean[]), CAST(:due_again AS boolean[]),
        CAST(:settled AS timestamptz[])
    ) AS s(id, state, attempts, due_at, detail, external_id, data, doubt, due_again, settled_at)
    WHERE d.id = s.id AND d.lease_owner = :owner
    """
)


def _settle_in_one(
    session: Session, owner: str, rows: Sequence[tuple[Any, ...]], now: datetime
) -> int:
    """
    PostgreSQL: the batch in one UPDATE … FROM unnest(arrays). One statement, not
    one per row: the server runs it (and the deliveries' statement trigger that
    keeps their counts) once per batch; and one fixed text with ten parameters
    however long the batch, so it is compiled once and prepared once.
    """
    ids, states, attempts, due, details, external, data, doubt, due_again, settled = zip(
        *rows, strict=True
    )
    params = {
        "ids": list(ids),
        "states": list(states),
        "attempts": list(attempts),
        "due": list(due),
        "details": list(details),
        "external": list(external),
        "data": [db.json_text(d) for d in data],
        "doubt": list(doubt),
        "due_again": list(due_again),
        "settled": list(settled),
        "now": now,
        "owner": owner,
    }
    return int(session.execute(_SETTLE_ALL, params).rowcount or 0)  # type: ignore[attr-defined]


def _settle_each(
    session: Session, owner: str, rows: Sequence[tuple[Any, ...]], now: datetime
) -> int:
    """SQLite: one UPDATE per row, executed as many (its row triggers keep the counts)."""
    p: dict[str, Any] = {name: bindparam(f"b_{name}") for name in _SETTLED}
    stmt = (
        update(DeliveryRow)
        .where(DeliveryRow.id == p["id"], DeliveryRow.lease_owner == owner)
        .values(
            state=p["state"],
            attempts=p["attempts"],
            due_at=p["due"],
            detail=p["detail"],
            external_id=p["external"],
            data=p["data"],
            in_doubt=case(
                (bindparam("b_due_again", type_=Boolean), bindparam("b_doubt", type_=Boolean)),
                else_=or_(DeliveryRow.in_doubt, bindparam("b_doubt_kept", type_=Boolean)),
            ),
            lease_until=None,
            lease_owner=None,
            updated_at=now,
            settled_at=p["settled"],
        )
        .execution_options(synchronize_session=False)
    )
    params = [
        {f"b_{n}": v for n, v in zip(_SETTLED, row, strict=True)} | {"b_doubt_kept": row[7]}
        for row in rows
    ]
    result = session.connection().execute(stmt, params)
    return int(result.rowcount or 0)


def _moved(final: Sequence[Settlement], before: Mapping[int, tuple[str, str]]) -> list[Settled]:
    """The settlements into a final state of rows held (`before`) in another state."""
    return [
        Settled(
            lead_id=before[s.delivery_id][0],
            state=s.state,
            external_id=s.external_id,
            detail=s.detail,
        )
        for s in final
        if s.delivery_id in before and before[s.delivery_id][1] != s.state
    ]


def release(
    session: Session, owner: str, ids: Sequence[int], due_at: datetime, now: datetime
) -> int:
    """Give claimed deliveries back untouched (a cooldown or pause hit): due again at `due_at`."""
    if not ids:
        return 0
    result = session.execute(
        update(DeliveryRow)
        .where(DeliveryRow.id.in_(ids), DeliveryRow.lease_owner == owner)
        .values(
            state=case((DeliveryRow.attempts > 0, LeadState.RETRY_WAIT), else_=LeadState.QUEUED),
            due_at=due_at,
            lease_until=None,
            lease_owner=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def record_attempt(
    session: Session, attempt: AttemptRecord, results: Sequence[tuple[int, str, str]]
) -> int:
    """Log one exchange and, per delivery it carried, (delivery id, outcome, detail)."""
    row = {
        "destination": attempt.destination,
        "kind": attempt.kind,
        "at": attempt.at,
        "request": dict(attempt.request),
        "status_code": attempt.status_code,
        "answer": attempt.answer,
        "error": attempt.error,
        "elapsed_ms": attempt.elapsed_ms,
    }
    if db.on_postgresql(session):
        return _record_in_one(session, row, results)
    # a Core INSERT … RETURNING: one statement, without the ORM's unit of work around it
    attempt_id: int = session.execute(insert(AttemptRow).returning(AttemptRow.id), row).scalar_one()
    if results:
        db.bulk_insert(
            session,
            AttemptResultRow,
            [
                {"attempt_id": attempt_id, "delivery_id": d, "outcome": o, "detail": t[:2000]}
                for d, o, t in results
            ],
        )
    return attempt_id


#: PostgreSQL: an exchange and what it meant for each delivery, in one statement
_RECORD_ALL = text(
    """
    WITH attempt AS (
        INSERT INTO attempts (destination, kind, at, request, status_code, answer, error,
                              elapsed_ms)
        VALUES (:destination, :kind, :at, CAST(:request AS jsonb), :status_code, :answer,
                :error, :elapsed_ms)
        RETURNING id
    ), results AS (
        INSERT INTO attempt_results (attempt_id, delivery_id, outcome, detail)
        SELECT attempt.id, r.delivery_id, r.outcome, r.detail
        FROM attempt, unnest(
            CAST(:ids AS bigint[]), CAST(:outcomes AS text[]), CAST(:details AS text[])
        ) AS r(delivery_id, outcome, detail)
    )
    SELECT id FROM attempt
    """
)


def _record_in_one(
    session: Session, row: Mapping[str, Any], results: Sequence[tuple[int, str, str]]
) -> int:
    """
    PostgreSQL: the attempt and its results in one INSERT … RETURNING with a
    data-modifying CTE, one round trip where a row, its id and a COPY took several.
    """
    params = {
        **row,
        "request": db.json_text(row["request"]),
        "ids": [d for d, _, _ in results],
        "outcomes": [o for _, o, _ in results],
        "details": [t[:2000] for _, _, t in results],
    }
    return int(session.execute(_RECORD_ALL, params).scalar_one())


def sweep_expired_leases(
    session: Session,
    destination: str,
    *,
    now: datetime,
    max_attempts: int,
    notify: Notify | None = None,
) -> int:
    """
    Deliveries whose worker died mid-request: due again now, flagged in doubt.

    The lost try counts as an attempt, so a lead that kills its worker every
    time ends dead instead of looping; with `notify`, each one that ends dead
    gets its event in this transaction.
    """
    expired = and_(
        DeliveryRow.destination == destination,
        DeliveryRow.state == LeadState.SENDING,
        DeliveryRow.lease_until < now,
    )
    stmt = (
        update(DeliveryRow)
        .where(expired)
        .values(
            state=case(
                (DeliveryRow.attempts + 1 >= max_attempts, LeadState.DEAD),
                else_=LeadState.RETRY_WAIT,
            ),
            attempts=DeliveryRow.attempts + 1,
            in_doubt=True,
            # due_at stays: due since before its claim, it goes back to the head of the
            # line, so its lookup comes before many newer leads bury it at the platform
            detail="the worker holding this lead stopped mid-request; the send is in doubt",
            lease_until=None,
            lease_owner=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if notify is None:
        return int(session.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]
    swept = session.execute(
        stmt.returning(
            DeliveryRow.lead_id, DeliveryRow.state, DeliveryRow.external_id, DeliveryRow.detail
        )
    ).all()
    dead = [
        Settled(lead_id=r.lead_id, state=LeadState.DEAD, external_id=r.external_id, detail=r.detail)
        for r in swept
        if r.state == LeadState.DEAD
    ]
    outbox.record(session, notify, dead, now)
    return len(swept)


def due_counts(
    session: Session,
    now: datetime,
    destinations: Iterable[str] | None = None,
    cap: int = DUE_COUNT_CAP,
) -> dict[str, int]:
    """
    How many deliveries are due now, per destination (for the sweeper's wake-ups).

    Given `destinations`, each count stops at `cap`: one statement of ranges of
    ix_deliveries_due that read at most `cap` entries per state, however many wait. The
    sweeper asks every second, and a full count grows with the backlog (246 ms at
    1,000,000 due). Without `destinations`, every destination in the ledger, counted
    in full.
    """
    states = [str(s) for s in DUE_STATES]
    if destinations is None:
        rows = session.execute(
            select(DeliveryRow.destination, func.count())
            .where(DeliveryRow.state.in_(states), DeliveryRow.due_at <= now)
            .group_by(DeliveryRow.destination)
        )
        return {d: int(n) for d, n in rows}
    pairs = [(name, state) for name in sorted(destinations) for state in sorted(states)]
    if not pairs:
        return {}
    counted = session.execute(select(*(_due_at_most(n, s, now, cap) for n, s in pairs))).one()
    out: dict[str, int] = {}
    for (name, _), n in zip(pairs, counted, strict=True):
        if n:
            out[name] = min(cap, out.get(name, 0) + int(n))
    return out


def _due_at_most(destination: str, state: str, now: datetime, cap: int) -> ScalarSelect[int]:
    """
    Due deliveries of one destination in one state, counted up to `cap`: a walk of
    ix_deliveries_due in its own order. (A LIMIT alone may be planned as a sequential
    scan that stops early, which reads the whole table when the due rows are few.)
    """
    return (
        select(func.count())
        .select_from(
            select(DeliveryRow.due_at)
            .where(
                DeliveryRow.destination == destination,
                DeliveryRow.state == state,
                DeliveryRow.due_at <= now,
            )
            .order_by(DeliveryRow.due_at)
            .limit(cap)
            .subquery()
        )
        .scalar_subquery()
    )


def poll_due_counts(session: Session, now: datetime) -> dict[str, int]:
    """How many deliveries are due a status look, per destination."""
    rows = session.execute(
        select(DeliveryRow.destination, func.count())
        .where(
            DeliveryRow.state.in_([str(s) for s in POLL_STATES]),
            DeliveryRow.due_at <= now,
            or_(DeliveryRow.lease_until.is_(None), DeliveryRow.lease_until < now),
        )
        .group_by(DeliveryRow.destination)
    )
    return {d: int(n) for d, n in rows}


def release_next_stage(
    session: Session, lead_id: str, stage: int, due_at: datetime, now: datetime
) -> bool:
    """A staged lead's stage `stage` was decided: make stage + 1 due at `due_at`."""
    result = session.execute(
        update(DeliveryRow)
        .where(
            DeliveryRow.lead_id == lead_id,
            DeliveryRow.stage == stage + 1,
            DeliveryRow.state == LeadState.HELD,
        )
        .values(state=LeadState.QUEUED, due_at=due_at, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- pauses


def set_pause(
    session: Session,
    destination: str,
    *,
    kind: str,
    reason: str,
    now: datetime,
    until: datetime | None,
) -> None:
    """Pause a destination (replacing any pause it had)."""
    session.execute(delete(PauseRow).where(PauseRow.destination == destination))
    session.add(PauseRow(destination=destination, kind=kind, reason=reason, since=now, until=until))
    session.flush()


def clear_pause(session: Session, destination: str) -> bool:
    result = session.execute(delete(PauseRow).where(PauseRow.destination == destination))
    return bool(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Pause:
    """A destination's pause in force: a value, so no ORM row leaves the ledger."""

    destination: str
    kind: str
    reason: str
    since: datetime
    #: None: until ops resume it (or, for an auth pause, its configured `auth_pause`)
    until: datetime | None


def _pause(row: PauseRow) -> Pause:
    return Pause(
        destination=row.destination,
        kind=row.kind,
        reason=row.reason,
        since=row.since,
        until=row.until,
    )


def active_pause(session: Session, destination: str, now: datetime) -> Pause | None:
    """The destination's pause if it is still in force."""
    row = session.get(PauseRow, destination)
    if row is None or (row.until is not None and row.until <= now):
        return None
    return _pause(row)


def pauses(session: Session, now: datetime) -> dict[str, Pause]:
    """Every pause still in force, by destination."""
    rows = session.scalars(select(PauseRow)).all()
    return {r.destination: _pause(r) for r in rows if r.until is None or r.until > now}


# ---------------------------------------------------------------- ops


@dataclass(frozen=True, slots=True)
class RequeueFilter:
    """Which settled deliveries `leadrelay retry` puts back."""

    states: tuple[LeadState, ...] = (LeadState.DEAD,)
    destination: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    reason: str | None = None  #: a substring of the delivery's last detail
    lead_id: str | None = None


def _requeue_where(f: RequeueFilter) -> list[Any]:
    where: list[Any] = [DeliveryRow.state.in_([str(s) for s in f.states])]
    if f.destination:
        where.append(DeliveryRow.destination == f.destination)
    if f.since:
        where.append(DeliveryRow.updated_at >= f.since)
    if f.until:
        where.append(DeliveryRow.updated_at < f.until)
    if f.reason:
        where.append(DeliveryRow.detail.contains(f.reason, autoescape=True))
    if f.lead_id:
        where.append(DeliveryRow.lead_id == f.lead_id)
    return where


def count_requeue(session: Session, f: RequeueFilter) -> int:
    return int(session.scalar(select(func.count()).where(*_requeue_where(f))) or 0)


def requeue(session: Session, f: RequeueFilter, now: datetime) -> dict[str, int]:
    """Put matching deliveries back to due now with fresh attempts; counts by destination."""
    rows = session.execute(
        update(DeliveryRow)
        .where(*_requeue_where(f))
        .values(
            state=LeadState.QUEUED,
            attempts=0,
            due_at=now,
            settled_at=None,
            updated_at=now,
            detail="put back by ops",
        )
        .returning(DeliveryRow.destination)
        .execution_options(synchronize_session=False)
    ).all()
    out: dict[str, int] = {}
    for (dest,) in rows:
        out[dest] = out.get(dest, 0) + 1
    return out


def purge_personal_data(session: Session, *, before: datetime, now: datetime) -> int:
    """
    Empty the payload of leads accepted before `before` whose every delivery is
    final: the lead's own data goes, its ids, states and (redacted) attempts stay.
    """
    open_states = [str(s) for s in LeadState if s not in FINAL_STATES]
    still_open = select(DeliveryRow.lead_id).where(DeliveryRow.state.in_(open_states))
    result = session.execute(
        update(LeadRow)
        .where(
            LeadRow.created_at < before,
            LeadRow.purged_at.is_(None),
            LeadRow.id.not_in(still_open),
        )
        .values(payload={}, purged_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def lease_waiting(
    session: Session,
    external_id: str,
    *,
    states: Iterable[LeadState],
    owner: str,
    now: datetime,
    lease: timedelta,
) -> tuple[str, Delivery, datetime | None] | None:
    """
    Lease the delivery in one of `states` that the platform knows as
    `external_id`, keeping its state: (destination, it, its due time).
    """
    row = session.execute(
        update(DeliveryRow)
        .where(
            DeliveryRow.external_id == external_id,
            DeliveryRow.state.in_([str(s) for s in states]),
            or_(DeliveryRow.lease_until.is_(None), DeliveryRow.lease_until < now),
        )
        .values(lease_until=now + lease, lease_owner=owner, updated_at=now)
        .returning(*_DELIVERY_COLUMNS, DeliveryRow.destination, DeliveryRow.due_at)
        .execution_options(synchronize_session=False)
    ).first()
    if row is None:
        return None
    lead = session.get(LeadRow, row.lead_id)
    assert lead is not None  # noqa: S101 - a delivery is written with its lead, deleted before it
    return row.destination, _delivery(dict(row._mapping), lead.payload, lead.created_at), row.due_at


def unlease(session: Session, owner: str, ids: Sequence[int], now: datetime) -> int:
    """Give leased deliveries back exactly as they were (state and due time untouched)."""
    if not ids:
        return 0
    result = session.execute(
        update(DeliveryRow)
        .where(DeliveryRow.id.in_(ids), DeliveryRow.lease_owner == owner)
        .values(lease_until=None, lease_owner=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def extend_lease(
    session: Session, owner: str, ids: Sequence[int], *, until: datetime, now: datetime
) -> bool:
    """
    Hold `owner`'s claim on `ids` until `until`; False (nothing changed) unless
    every one of them is still leased to `owner` and not yet expired: a row the
    sweeper may already have taken back is never sent under an old claim.
    """
    if not ids:
        return True
    still = and_(
        DeliveryRow.id.in_(ids),
        DeliveryRow.lease_owner == owner,
        DeliveryRow.lease_until > now,
    )
    held = session.scalar(select(func.count()).select_from(DeliveryRow).where(still))
    if held != len(ids):
        return False
    session.execute(
        update(DeliveryRow)
        .where(still)
        .values(lease_until=until, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return True
