"""Claims take in-doubt deliveries first: a partial index on the in-doubt ones.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_deliveries_in_doubt_due",
            ["destination", "state", "due_at"],
            unique=False,
            postgresql_where=sa.text("in_doubt"),
            sqlite_where=sa.text("in_doubt = 1"),
        )


def downgrade() -> None:

    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_deliveries_in_doubt_due",
            postgresql_where=sa.text("in_doubt"),
            sqlite_where=sa.text("in_doubt = 1"),
        )
