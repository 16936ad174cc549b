"""
Validation at the door and the ledger insert: the one way a lead gets in.

Every way in (the Python API, the CLI import, a raw Celery message) comes
through `accept`, so every lead meets the same rules. A lead is accepted only
once it is committed; a refused one is never stored as a lead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import pydantic_core
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from worker import ledger
from worker.errors import FieldError, LeadInvalid, UnknownDestination
from worker.ledger.db import json_text, make_engine, make_sessionmaker
from worker.platforms import adapter_for
from worker.settings import Settings

#: the longest idempotency key we keep
MAX_KEY = 200
#: leads validated while the previous chunk is being written
PIPELINE_CHUNK = 1000

#: what the writer thread answers for a chunk: (lead id, created) per good lead
Stored = Future[list[tuple[str, bool]]]


@dataclass(frozen=True, slots=True)
class Accepted:
    """What became of one submitted lead."""

    lead_id: str | None  #: our id; None when refused
    created: bool = False  #: False for a refusal or an idempotency key seen before
    errors: tuple[FieldError, ...] = ()
    refusal_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.lead_id is not None


@dataclass(frozen=True, slots=True)
class Submission:
    """One lead as a producer hands it over."""

    lead: Any
    idempotency_key: str | None = None


class Ledgered(Protocol):
    """What taking leads in needs: settings, the ledger and a clock (a worker context has more)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def sessions(self) -> sessionmaker[Session]: ...
    @property
    def clock(self) -> Callable[[], datetime]: ...


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class IntakeContext:
    """
    A producer's resources: the ledger only. No HTTP client, no limiter, no Redis
    client: a process that takes leads in never talks to a platform.
    """

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Callable[[], datetime] = utcnow

    @classmethod
    def open(cls, settings: Settings) -> IntakeContext:
        engine = make_engine(settings.database_url, pooler=settings.database_pooler)
        return cls(settings, engine, make_sessionmaker(engine))

    def close(self) -> None:
        self.engine.dispose()


def new_lead_id() -> str:
    """A random (version 4) UUID as 32 hex digits."""
    return new_lead_ids(1)[0]


def new_lead_ids(n: int) -> list[str]:
    """
    `n` of `new_lead_id`, from one read of the system's randomness: `os.urandom`
    lets go of the GIL for its system call, and one call per lead handed the GIL
    to the ledger's writer thread and waited for it back, once per lead. What
    `uuid.uuid4().hex` gives, without the UUID object between.
    """
    raw = bytearray(os.urandom(16 * n))
    out = []
    for at in range(0, 16 * n, 16):
        raw[at + 6] = raw[at + 6] & 0x0F | 0x40  # version 4
        raw[at + 8] = raw[at + 8] & 0x3F | 0x80  # the RFC 4122 variant
        out.append(raw[at : at + 16].hex())
    return out


def prepare(
    settings: Settings,
    destination: str,
    sub: Submission,
    source: str,
    lead_id: str | None = None,
) -> ledger.NewLead:
    """
    Validate and normalise one submission, or raise LeadInvalid / UnknownDestination.
    `lead_id`: the id it gets if accepted (one of `new_lead_ids`); a new one if None.
    """
    dest = settings.destination(destination)
    key = sub.idempotency_key
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= MAX_KEY):
        raise LeadInvalid.one("idempotency_key", f"a string of 1 to {MAX_KEY} characters")
    if key is not None and ("\x00" in key or not _is_utf8(key)):
        raise LeadInvalid.one("idempotency_key", "text without NUL or lone surrogates")
    if not isinstance(sub.lead, Mapping):
        raise LeadInvalid.one("lead", "must be a JSON object")
    adapter = adapter_for(dest)
    payload = adapter.validate_for(sub.lead, dest)
    encoded = _storable_json(payload)
    if encoded is None:
        raise LeadInvalid(list(_unstorable_text(payload)))
    return ledger.NewLead(
        id=lead_id or new_lead_id(),
        destination=dest.name,
        payload=payload,
        source=source,
        idempotency_key=key,
        stages=adapter.stages(payload, dest),
        delay=adapter.first_delay(payload, dest),
        payload_json=encoded,
    )


def _storable_json(payload: dict[str, Any]) -> str | None:
    """
    The payload as the JSON text the ledger stores, or None when some text in it
    cannot be stored. One encoding answers for the whole lead: pydantic-core's
    encoder (a quarter of the standard library's time) escapes a NUL as `\\u0000`
    and refuses a lone surrogate, so the walk that names the fields
    (`_unstorable_text`) runs only for a suspect lead.
    """
    try:
        encoded: str | None = pydantic_core.to_json(payload).decode()
    except pydantic_core.PydanticSerializationError:
        encoded = None  # a lone surrogate, or what JSON cannot carry: the walk tells
    # `\\u0000` may also be a backslash the lead wrote itself: the walk tells them apart
    if (encoded is None or "\\u0000" in encoded) and any(True for _ in _unstorable_text(payload)):
        return None
    # nothing the walk refuses: the standard library's encoder raises what pydantic-core did
    return encoded if encoded is not None else json_text(payload)


def _unstorable_text(value: Any, path: str = "") -> Iterator[FieldError]:
    """
    Text the ledger cannot store: PostgreSQL's jsonb refuses `\\u0000` and a
    lone surrogate, and one such lead would fail the whole batch's transaction.
    """
    if isinstance(value, str):
        if "\x00" in value:
            yield FieldError(path or "lead", "must not contain a NUL character (\\u0000)")
        elif not _is_utf8(value):
            yield FieldError(path or "lead", "must be valid Unicode text (no lone surrogate)")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            name = str(key)
            if "\x00" in name or not _is_utf8(name):
                yield FieldError(path or "lead", "a field name holds a NUL or a lone surrogate")
                continue
            yield from _unstorable_text(item, f"{path}.{name}" if path else name)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _unstorable_text(item, f"{path}[{index}]")


def _storable_key(key: Any) -> bool:
    """A key the refusals table can keep: a refused key may be what was wrong."""
    return isinstance(key, str) and 0 < len(key) <= MAX_KEY and "\x00" not in key and _is_utf8(key)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def accept(
    ctx: Ledgered,
    destination: str,
    submissions: Sequence[Submission],
    *,
    source: str,
    record_refusals: bool = False,
) -> list[Accepted]:
    """Validate every submission, store the good ones in one transaction; results in input order."""
    return accept_into(
        ctx.settings,
        ctx.sessions,
        ctx.clock,
        destination,
        submissions,
        source=source,
        record_refusals=record_refusals,
    )


def accept_into(
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: Any,
    destination: str,
    submissions: Sequence[Submission],
    *,
    source: str,
    record_refusals: bool = False,
) -> list[Accepted]:
    settings.destination(destination)  # an unknown destination refuses the whole call
    now = clock()
    results: list[Accepted] = []
    writing: list[tuple[Sequence[Submission], list[ledger.NewLead | LeadInvalid], Stored]] = []
    with sessions.begin() as session, ThreadPoolExecutor(1, "ledger-writer") as writer:
        # Validation (Python) and the ledger's writes (the database) overlap: while
        # the writer thread, which waits on the socket without the GIL, stores one
        # chunk, this thread validates the next and answers for the one before.
        # One transaction all the same.
        for start in range(0, len(submissions), PIPELINE_CHUNK):
            subs = submissions[start : start + PIPELINE_CHUNK]
            chunk = [
                _prepare_or_refusal(settings, destination, sub, source, lead_id)
                for sub, lead_id in zip(subs, new_lead_ids(len(subs)), strict=True)
            ]
            good = [p for p in chunk if isinstance(p, ledger.NewLead)]
            writing.append((subs, chunk, writer.submit(ledger.insert_leads, session, good, now)))
            if len(writing) > 1 and not record_refusals:
                subs_before, chunk_before, stored = writing.pop(0)
                answered = iter(stored.result())
                results += _results(
                    session, subs_before, chunk_before, answered, now, source, destination, False
                )
        # a refusal is recorded in the session: only once the writer is done with it
        done = [(subs, chunk, stored.result()) for subs, chunk, stored in writing]
        for subs, chunk, stored_ids in done:
            results += _results(
                session, subs, chunk, iter(stored_ids), now, source, destination, record_refusals
            )
        return results


def _prepare_or_refusal(
    settings: Settings, destination: str, sub: Submission, source: str, lead_id: str
) -> ledger.NewLead | LeadInvalid:
    try:
        return prepare(settings, destination, sub, source, lead_id)
    except LeadInvalid as exc:
        return exc


def _results(
    session: Session,
    submissions: Sequence[Submission],
    prepared: Sequence[ledger.NewLead | LeadInvalid],
    stored: Iterator[tuple[str, bool]],
    now: datetime,
    source: str,
    destination: str,
    record_refusals: bool,
) -> list[Accepted]:
    """Each submission's result, in order; refusals recorded when asked."""
    out: list[Accepted] = []
    for sub, item in zip(submissions, prepared, strict=True):
        if isinstance(item, ledger.NewLead):
            lead_id, created = next(stored)
            out.append(Accepted(lead_id, created))
            continue
        refusal = None
        if record_refusals:
            key = sub.idempotency_key if _storable_key(sub.idempotency_key) else None
            refusal = ledger.record_refusal(
                session,
                now=now,
                source=source,
                destination=destination,
                idempotency_key=key,
                errors=[{"field": e.field, "rule": e.rule} for e in item.errors],
            )
        out.append(Accepted(None, False, item.errors, refusal))
    return out


def accept_one(
    ctx: Ledgered,
    destination: Any,
    lead: Any,
    *,
    idempotency_key: Any = None,
    source: str,
) -> Accepted:
    """One raw lead (a Celery message); a refusal, an unknown destination included, is recorded."""
    if not isinstance(destination, str):
        return refuse_message(ctx, "destination", "a configured destination's name", source=source)
    try:
        return accept(
            ctx,
            destination,
            [Submission(lead, idempotency_key)],
            source=source,
            record_refusals=True,
        )[0]
    except UnknownDestination as exc:  # the name is echoed: cut, it may be anything
        return refuse_message(ctx, "destination", str(exc)[:300], source=source)


def refuse_message(ctx: Ledgered, field: str, rule: str, *, source: str) -> Accepted:
    """Record a message refused before any destination's rules could judge it."""
    with ctx.sessions.begin() as session:
        refusal = ledger.record_refusal(
            session,
            now=ctx.clock(),
            source=source,
            destination=None,
            idempotency_key=None,
            errors=[{"field": field, "rule": rule}],
        )
    return Accepted(None, False, (FieldError(field, rule),), refusal)
