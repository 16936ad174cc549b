"""Claims read their rows in due order, and settling rates their last hour: two partial indexes.

On PostgreSQL both are built CONCURRENTLY, outside a transaction: a plain CREATE INDEX
holds off every write to `deliveries` (intake, claims, settlements) while it reads the
whole table, and a ledger in use holds millions of rows. A build cut short leaves an
invalid index under its name, so each is dropped first if it is there, and running the
upgrade again finishes the job.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 00:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

#: name, columns, WHERE on PostgreSQL, WHERE on SQLite
INDEXES = (
    (
        "ix_deliveries_claim",
        ["destination", "due_at", "id"],
        "state IN ('queued', 'retry_wait') AND NOT in_doubt",
        "state IN ('queued', 'retry_wait') AND in_doubt = 0",
    ),
    (
        "ix_deliveries_settled",
        ["destination", "settled_at"],
        "settled_at IS NOT NULL",
        "settled_at IS NOT NULL",
    ),
)


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for name, columns, on_postgresql, on_sqlite in INDEXES:
            op.drop_index(name, "deliveries", if_exists=True, postgresql_concurrently=True)
            op.create_index(
                name,
                "deliveries",
                columns,
                unique=False,
                postgresql_where=sa.text(on_postgresql),
                sqlite_where=sa.text(on_sqlite),
                postgresql_concurrently=True,
            )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, *_ in INDEXES:
            op.drop_index(name, "deliveries", postgresql_concurrently=True)
