"""
Deliveries by destination and state, read from counts the ledger keeps.

Triggers (migration 0006) keep them: on PostgreSQL each statement that inserts,
moves or deletes deliveries appends its net change per (destination, state) to
`delivery_count_changes`, and `fold` adds those up into `delivery_counts`; on
SQLite the triggers add to `delivery_counts` directly. `by_state` reads both
tables, so a count is exact at the reader's snapshot whether or not the last
changes were folded: what `leadrelay stats` and a /metrics scrape show without
counting ten million settled rows each time.
"""

from __future__ import annotations

from sqlalchemy import func, select, text, union_all
from sqlalchemy.orm import Session

from worker.ledger import db
from worker.ledger.tables import DeliveryCountChangeRow, DeliveryCountRow


def by_state(session: Session) -> dict[str, dict[str, int]]:
    """Deliveries per destination and state; a state with none is left out."""
    both = union_all(
        select(DeliveryCountRow.destination, DeliveryCountRow.state, DeliveryCountRow.n),
        select(
            DeliveryCountChangeRow.destination,
            DeliveryCountChangeRow.state,
            DeliveryCountChangeRow.n,
        ),
    ).subquery()
    total = func.sum(both.c.n)
    rows = session.execute(
        select(both.c.destination, both.c.state, total)
        .group_by(both.c.destination, both.c.state)
        .having(total != 0)
    )
    out: dict[str, dict[str, int]] = {}
    for dest, state, n in rows:
        out.setdefault(dest, {})[state] = int(n)
    return out


#: one statement: a data-modifying WITH must be the statement's top level
FOLD = text(
    """
    WITH moved AS (DELETE FROM delivery_count_changes RETURNING destination, state, n)
    INSERT INTO delivery_counts (destination, state, n)
    SELECT destination, state, sum(n) FROM moved
    GROUP BY destination, state
    ORDER BY destination, state
    ON CONFLICT (destination, state) DO UPDATE SET n = delivery_counts.n + excluded.n
    """
)


def fold(session: Session) -> int:
    """
    Add the pending changes into `delivery_counts` and delete them, in one statement;
    returns how many counts it updated (0 on SQLite, where the triggers
    write the counts themselves).

    Two folds at once are safe: each change row is deleted, so added, once; counts are
    written in (destination, state) order, so two folds never deadlock.
    """
    return db.run_on_postgresql(session, FOLD)
