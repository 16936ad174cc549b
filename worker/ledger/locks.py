"""
Reads a write in the same transaction must be able to trust: the rows read do
not change until the transaction ends.

PostgreSQL locks the rows themselves (SELECT … FOR UPDATE OF the table): a row
another transaction is changing is read once that one commits, as it is then.
SQLite has no row locks (SQLAlchemy leaves FOR UPDATE out there) and one writer
at a time: the transaction takes the database's write lock first, with an
UPDATE that matches no row, and nothing it reads afterwards can change before
it commits.

Written apart from `db.py`, whose helpers serve the claims; this one serves
the settlement events (`worker.ledger.outbox`).
"""

from __future__ import annotations

from typing import TypeVarTuple

from sqlalchemy import Select, Update, false, inspect, update
from sqlalchemy.orm import Session

from worker.ledger.tables import Base

_Ts = TypeVarTuple("_Ts")


def for_update(session: Session, query: Select[*_Ts], table: type[Base]) -> Select[*_Ts]:
    """`query`, holding the rows of `table` it reads until the transaction ends."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(_takes_the_write_lock(table))
        return query
    return query.with_for_update(of=table)


def _takes_the_write_lock(table: type[Base]) -> Update:
    """An UPDATE of no row: SQLite starts a write transaction for it all the same."""
    key = inspect(table).primary_key[0]
    return (
        update(table)
        .where(false())
        .values({key.name: key})
        .execution_options(synchronize_session=False)
    )
