"""
Engine and sessions, and every query-time difference between the ledger's two databases.

PostgreSQL, in production, goes through psycopg 3 (`postgresql://` URLs are read as
`postgresql+psycopg://`); SQLite, the embedded default, gets WAL and a busy timeout
so the demo's worker thread and its producer can share the file.

`store.py` and `reports.py` write each query once. Where the two databases need
different SQL, the query calls a helper here, named after what it does:

* `insert_ignoring`          INSERT … ON CONFLICT DO NOTHING, in each database's own construct
* `bulk_insert`              COPY on PostgreSQL; a plain multi-row INSERT on SQLite
* `any_of`                   `= ANY(array)` on PostgreSQL (one parameter); `IN (…)` on SQLite
* `skip_locked`              FOR UPDATE SKIP LOCKED on PostgreSQL; nothing on SQLite
* `flag_is`                  a boolean column in the form its partial index's WHERE is written
* `update_returning_joined`  UPDATE … FROM … RETURNING on PostgreSQL; two statements on SQLite

The schema's own differences (column type variants, each partial index's WHERE per
database) are declared in `tables.py` and the migrations.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVarTuple

import psycopg
from psycopg import sql
from sqlalchemy import (
    JSON,
    ColumnElement,
    Engine,
    Select,
    String,
    Update,
    create_engine,
    event,
    func,
    insert,
    literal,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import QueryableAttribute, Session, sessionmaker
from sqlalchemy.sql.base import Executable

from worker.ledger.tables import Base

_Ts = TypeVarTuple("_Ts")
#: a column as a query names it: `DeliveryRow.state`, or an expression such as a label
ColumnLike = ColumnElement[Any] | QueryableAttribute[Any]


def normalise_url(url: str) -> str:
    """`postgresql://` and `postgres://` mean psycopg 3 here."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, **kwargs: Any) -> Engine:
    """
    An engine for the ledger at `url`.

    No error it raises shows a statement's parameters (`hide_parameters`): they
    hold leads' phones and e-mails, and an error's text reaches tracebacks and
    logs. For the same reason a PostgreSQL error keeps its primary message only:
    the server's DETAIL and CONTEXT quote values ("Failing row contains (…)",
    "parameter $3 = '…'"); code that needs them reads `exc.orig.diag`, which keeps them.
    """
    url = normalise_url(url)
    kwargs = {**kwargs, "hide_parameters": True}
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    if "poolclass" not in kwargs:
        kwargs = {"pool_size": 5, "max_overflow": 5, **kwargs}
    engine = create_engine(url, pool_pre_ping=True, **kwargs)
    keep_primary_message(engine)
    return engine


def keep_primary_message(engine: Engine) -> None:
    """
    A PostgreSQL error raised through `engine` keeps its primary message only
    (see `make_engine`); the async engine's sync core gets the same hook.
    """
    from sqlalchemy.engine import ExceptionContext

    @event.listens_for(engine, "handle_error")
    def _primary_message_only(context: ExceptionContext) -> None:
        orig = context.original_exception
        wrapped = context.sqlalchemy_exception
        if not isinstance(orig, psycopg.Error) or wrapped is None:
            return
        primary = primary_message(orig)
        if primary is None:
            return
        # both texts are built before this hook runs: replace them where they are kept
        kind = type(orig)
        wrapped.args = (f"({kind.__module__}.{kind.__name__}) {primary}",)


def primary_message(exc: psycopg.Error) -> str | None:
    """Cut a server error to its primary message, in place; returns it (None: none to cut to)."""
    primary = exc.diag.message_primary
    if primary:
        exc.args = (primary,)
    return primary or None


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions on the ledger; a commit does not expire what a session has loaded."""
    return sessionmaker(engine, expire_on_commit=False)


def _on_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def insert_ignoring(
    session: Session,
    model: type[Base],
    *,
    index_elements: Sequence[str],
    index_where: ColumnElement[bool],
) -> postgresql.Insert | sqlite.Insert:
    """
    INSERT into `model` that skips a row colliding on the partial unique index
    (`index_elements` WHERE `index_where`): ON CONFLICT … DO NOTHING, which both
    databases spell alike but SQLAlchemy builds with each one's own `insert`.
    """
    ins = postgresql.insert(model) if _on_postgresql(session) else sqlite.insert(model)
    return ins.on_conflict_do_nothing(index_elements=index_elements, index_where=index_where)


def bulk_insert(session: Session, model: type[Base], rows: Sequence[dict[str, Any]]) -> None:
    """
    Insert many rows with no conflict to handle. On PostgreSQL this is COPY
    (about ten times the rows per second of a pipelined INSERT), on the
    session's own connection and so in its transaction.
    """
    raw = session.connection().connection.dbapi_connection if _on_postgresql(session) else None
    if not isinstance(raw, psycopg.Connection):
        session.execute(insert(model), rows)
        return
    columns = list(rows[0])
    json_columns = {c.name for c in model.__table__.columns if isinstance(c.type, JSON)}
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(model.__tablename__),
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
    )
    try:
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(
                    [
                        json.dumps(row[c], ensure_ascii=False) if c in json_columns else row[c]
                        for c in columns
                    ]
                )
    except psycopg.Error as exc:
        # COPY runs past SQLAlchemy and its hook: its CONTEXT quotes the failing row
        primary_message(exc)
        raise


def any_of(
    session: Session, column: QueryableAttribute[str], values: Sequence[str]
) -> ColumnElement[bool]:
    """`column IN values`; on PostgreSQL one array parameter (= ANY) instead of one per value."""
    if _on_postgresql(session):
        return column == func.any(literal(list(values), type_=postgresql.ARRAY(String)))
    return column.in_(values)


def skip_locked(query: Select[*_Ts]) -> Select[*_Ts]:
    """
    Lock the rows `query` selects, passing over rows another transaction holds:
    FOR UPDATE SKIP LOCKED on PostgreSQL. SQLAlchemy leaves the clause out on
    SQLite, which has one writer at a time and so nothing to skip.
    """
    return query.with_for_update(skip_locked=True)


def flag_is(column: QueryableAttribute[bool], value: bool) -> ColumnElement[bool]:
    """
    `column` is `value`, rendered `in_doubt` / `NOT in_doubt` on PostgreSQL and
    `in_doubt = 1` / `in_doubt = 0` on SQLite: the forms in which tables.py writes
    a partial index's WHERE on a flag (ix_deliveries_in_doubt_due). Written as
    `column.is_(True)` (`IS true`, `IS 1`), neither planner matches it to that index.
    """
    return column.expression if value else ~column


def update_returning_joined(
    session: Session,
    stmt: Update,
    returning: Sequence[ColumnLike],
    *,
    join: tuple[QueryableAttribute[Any], QueryableAttribute[Any]],
    joined: Sequence[ColumnLike],
) -> list[dict[str, Any]]:
    """
    Run the UPDATE `stmt`; per row it changed, its `returning` columns and the
    `joined` columns of the row it refers to (`join`: its foreign key, the key it names).

    PostgreSQL returns both from one statement (UPDATE … FROM … RETURNING), in one
    round trip. SQLite's RETURNING sees only the updated table, so there the joined
    columns are a second read by key.
    """
    foreign_key, key = join
    if _on_postgresql(session):
        rows = session.execute(stmt.where(foreign_key == key).returning(*returning, *joined))
        return [dict(r._mapping) for r in rows]
    own = [dict(r._mapping) for r in session.execute(stmt.returning(*returning))]
    ref = foreign_key.key
    others = {
        r[0]: dict(zip(r._fields[1:], r[1:], strict=True))
        for r in session.execute(select(key, *joined).where(key.in_({o[ref] for o in own})))
    }
    return [{**o, **others[o[ref]]} for o in own]


def plan_each_time(session: Session) -> None:
    """
    Plan the rest of this transaction's statements for their own parameters and the
    tables as they are now (PostgreSQL; SQLite plans each statement anyway).

    psycopg prepares a statement from its fifth run, and PostgreSQL then keeps a
    generic plan, costed against the table as it was then. A file import into a
    new ledger prepares its key lookup while `leads` is nearly empty: the plan is a
    sequential scan, and it stays one as the table grows (until an ANALYZE, which a
    ledger without autovacuum never gets), so each lookup reads the whole table. A
    custom plan costs a millisecond of planning and sees the table's real size.
    `SET LOCAL` ends with the transaction, so a transaction pooler is safe with it.
    """
    if _on_postgresql(session):
        session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


def run_on_postgresql(session: Session, statement: Executable) -> int:
    """Run `statement` on PostgreSQL (its row count), nothing on SQLite (0)."""
    if not _on_postgresql(session):
        return 0
    return int(session.execute(statement).rowcount or 0)  # type: ignore[attr-defined]
