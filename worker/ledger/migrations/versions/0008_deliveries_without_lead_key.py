"""Deliveries name their lead without a foreign key on PostgreSQL: intake writes one row less.

Each delivery inserted under the foreign key made PostgreSQL look its lead up and lock
it (`SELECT … FOR KEY SHARE`), which writes the lead's row once more and a WAL record
for the lock: about a quarter of the database's work at intake (measured with
`tests/benchmarks/bench_intake.py`). What the key guarded is held by the only two ways
rows come and go:

* intake writes a lead's deliveries from the lead rows it wrote, in the same
  transaction (`store.insert_leads`), and nothing else creates a delivery;
* retention and `leadrelay purge` delete a lead's attempt results and deliveries
  before the lead, in one transaction (`worker.ledger.retention`).

`tests/integration/test_lead_integrity.py` holds both against the ledger.

SQLite keeps the key: one writer at a time, no lock to write, and dropping a key
there rebuilds the table and its triggers. `migrations/env.py` leaves that one key
out of the models' comparison on SQLite.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 07:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: the name PostgreSQL gave 0001's unnamed key
NAME = "deliveries_lead_id_fkey"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_constraint(NAME, "deliveries", type_="foreignkey")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # NOT VALID, then VALIDATE: the rows there are are checked without blocking writes
    op.execute(
        f"ALTER TABLE deliveries ADD CONSTRAINT {NAME} FOREIGN KEY (lead_id)"
        " REFERENCES leads (id) ON DELETE CASCADE NOT VALID"
    )
    op.execute(f"ALTER TABLE deliveries VALIDATE CONSTRAINT {NAME}")
