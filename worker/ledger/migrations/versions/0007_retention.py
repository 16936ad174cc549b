"""Retention deletes exchanges no delivery refers to: attempt results found by their exchange.

`worker.ledger.retention` asks, per exchange, whether any attempt result still refers
to it, and deleting an exchange makes PostgreSQL look for its results (ON DELETE
CASCADE): without an index on `attempt_results.attempt_id` each of those reads the
whole table. Built CONCURRENTLY on PostgreSQL, as 0005's are, for the same reasons.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 04:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

NAME = "ix_attempt_results_attempt_id"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(NAME, "attempt_results", if_exists=True, postgresql_concurrently=True)
        op.create_index(
            NAME, "attempt_results", ["attempt_id"], unique=False, postgresql_concurrently=True
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(NAME, "attempt_results", postgresql_concurrently=True)
