"""Alembic's environment: the ledger's metadata, the URL given by `leadrelay db upgrade`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import pool

from worker.ledger.db import make_engine
from worker.ledger.tables import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is None:
        engine = make_engine(
            config.get_main_option("sqlalchemy.url") or "", poolclass=pool.NullPool
        )
        with engine.connect() as connection:
            _run(connection)
        engine.dispose()
    else:
        _run(connectable)


def _compared(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """
    What `alembic check` compares: all of it, but the key from deliveries to leads
    that SQLite keeps (revision 0008 drops it on PostgreSQL only) and the models lack.
    """
    if type_ != "foreign_key_constraint" or not reflected or compare_to is not None:
        return True
    table = getattr(obj, "table", None)
    columns = [c.name for c in getattr(obj, "columns", ())]
    return not (getattr(table, "name", None) == "deliveries" and columns == ["lead_id"])


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
        include_object=_compared,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
