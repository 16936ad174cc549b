"""Deliveries counted by destination and state as they change: `stats` and /metrics read counts.

`leadrelay stats` and every /metrics scrape counted deliveries by (destination, state)
with a GROUP BY over the whole table: at ten million settled leads a full scan each
time. Now triggers keep the count as rows come, change state and go, and readers add
up a handful of rows.

On PostgreSQL a statement-level trigger (with transition tables) appends one change
row per (destination, state) a statement moved: an insert, never an update of a shared
row, so concurrent settlements never wait on each other for a counter. The sweeper
folds the changes into `delivery_counts` every second (`store.fold_delivery_counts`).
On SQLite, one writer at a time, row triggers add to `delivery_counts` directly.

The upgrade counts the rows there are while its own trigger holds off writers (CREATE
TRIGGER takes a lock that conflicts with every write), so no change is counted twice
or missed; on a large ledger writes wait for that count (about a second per few
million rows).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 03:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

PG_FUNCTIONS = (
    """
    CREATE FUNCTION leadrelay_count_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO delivery_count_changes (destination, state, n)
            SELECT destination, state, count(*) FROM new_rows GROUP BY destination, state;
        ELSIF TG_OP = 'UPDATE' THEN
            INSERT INTO delivery_count_changes (destination, state, n)
            SELECT destination, state, sum(n) FROM (
                SELECT destination, state, 1 AS n FROM new_rows
                UNION ALL
                SELECT destination, state, -1 AS n FROM old_rows
            ) AS moved
            GROUP BY destination, state
            HAVING sum(n) <> 0;
        ELSE
            INSERT INTO delivery_count_changes (destination, state, n)
            SELECT destination, state, -count(*) FROM old_rows GROUP BY destination, state;
        END IF;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE FUNCTION leadrelay_count_deliveries_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM delivery_count_changes;
        DELETE FROM delivery_counts;
        RETURN NULL;
    END
    $$
    """,
)

PG_TRIGGERS = (
    "CREATE TRIGGER deliveries_count_insert AFTER INSERT ON deliveries"
    " REFERENCING NEW TABLE AS new_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION leadrelay_count_deliveries()",
    "CREATE TRIGGER deliveries_count_update AFTER UPDATE ON deliveries"
    " REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION leadrelay_count_deliveries()",
    "CREATE TRIGGER deliveries_count_delete AFTER DELETE ON deliveries"
    " REFERENCING OLD TABLE AS old_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION leadrelay_count_deliveries()",
    "CREATE TRIGGER deliveries_count_truncate AFTER TRUNCATE ON deliveries"
    " FOR EACH STATEMENT EXECUTE FUNCTION leadrelay_count_deliveries_truncated()",
)


#: SQLite: one writer at a time, so a row trigger adds to the count itself
ADD = (
    "INSERT INTO delivery_counts (destination, state, n) VALUES ({row}.destination, {row}.state, 1)"
    " ON CONFLICT (destination, state) DO UPDATE SET n = n + 1;"
)
TAKE = (
    "INSERT INTO delivery_counts (destination, state, n) VALUES ({row}.destination, {row}.state, -1)"
    " ON CONFLICT (destination, state) DO UPDATE SET n = n - 1;"
)
SQLITE_TRIGGERS = (
    f"CREATE TRIGGER deliveries_count_insert AFTER INSERT ON deliveries"
    f" BEGIN {ADD.format(row='new')} END",
    f"CREATE TRIGGER deliveries_count_update AFTER UPDATE OF destination, state ON deliveries"
    f" WHEN old.state IS NOT new.state OR old.destination IS NOT new.destination"
    f" BEGIN {TAKE.format(row='old')} {ADD.format(row='new')} END",
    f"CREATE TRIGGER deliveries_count_delete AFTER DELETE ON deliveries"
    f" BEGIN {TAKE.format(row='old')} END",
)

BACKFILL = (
    "INSERT INTO delivery_counts (destination, state, n)"
    " SELECT destination, state, count(*) FROM deliveries GROUP BY destination, state"
)


def upgrade() -> None:
    op.create_table(
        "delivery_counts",
        sa.Column("destination", sa.String(length=63), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("destination", "state"),
    )
    op.create_table(
        "delivery_count_changes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("destination", sa.String(length=63), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    if op.get_context().dialect.name == "postgresql":
        for statement in PG_FUNCTIONS + PG_TRIGGERS:
            op.execute(statement)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)
    op.execute(BACKFILL)


def downgrade() -> None:
    for name in ("insert", "update", "delete", "truncate"):
        if name == "truncate" and op.get_context().dialect.name != "postgresql":
            continue
        on = " ON deliveries" if op.get_context().dialect.name == "postgresql" else ""
        op.execute(f"DROP TRIGGER IF EXISTS deliveries_count_{name}{on}")
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS leadrelay_count_deliveries()")
        op.execute("DROP FUNCTION IF EXISTS leadrelay_count_deliveries_truncated()")
    op.drop_table("delivery_count_changes")
    op.drop_table("delivery_counts")
