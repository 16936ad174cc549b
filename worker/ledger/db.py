"""
Engine and sessions, and every query-time difference between the ledger's two databases.

PostgreSQL, in production, goes through psycopg 3 (`postgresql://` URLs are read as
`postgresql+psycopg://`); SQLite, the embedded default, gets WAL and a busy timeout
so the demo's worker thread and its producer can share the file.

Behind a transaction pooler (PgBouncer, `pool_mode = transaction`), each
transaction may run on another server connection, shared with other clients.
`LEADRELAY_DATABASE_POOLER=transaction` says so: psycopg then prepares no
statement (a prepared statement lives on one server connection), and a statement
that would leave state on the server connection for later transactions (`SET`
without LOCAL, LISTEN, a session advisory lock, a temporary table) is refused
before it is sent, naming the setting (`refuse_session_state`).

`store.py` and `reports.py` write each query once. Where the two databases need
different SQL, the query calls a helper here, named after what it does:

* `insert_ignoring`          INSERT … ON CONFLICT DO NOTHING, in each database's own construct
* `bulk_insert`              COPY on PostgreSQL; a plain multi-row INSERT on SQLite
* `copies`, `copy_rows`      COPY of rows given as sequences, where the session can COPY
* `json_text`                a JSON value as the text COPY and `CAST(… AS jsonb)` take
* `skip_locked`              FOR UPDATE SKIP LOCKED on PostgreSQL; nothing on SQLite
* `flag_is`                  a boolean column in the form its partial index's WHERE is written
* `update_returning_joined`  UPDATE … FROM … RETURNING on PostgreSQL; two statements on SQLite

The schema's own differences (column type variants, each partial index's WHERE per
database) are declared in `tables.py` and the migrations.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVarTuple, get_args

import psycopg
from psycopg import sql
from sqlalchemy import (
    JSON,
    ColumnElement,
    Engine,
    Select,
    Update,
    create_engine,
    event,
    insert,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import QueryableAttribute, Session, sessionmaker
from sqlalchemy.sql.base import Executable

from worker.errors import ConfigError
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


#: how the ledger's PostgreSQL is reached: directly or through a session pooler ("none",
#: "session": one server connection per client connection), or a transaction pooler
Pooler = Literal["none", "session", "transaction"]
#: the setting that says which (Settings.database_pooler)
POOLER_VAR = "LEADRELAY_DATABASE_POOLER"


def pooler_setting(environ: Mapping[str, str] = os.environ) -> Pooler:
    """
    LEADRELAY_DATABASE_POOLER as the environment sets it ("none" when unset).

    Read here, not passed down from Settings, so that every engine of the process
    agrees on it: the workers', the producers', and the one alembic's env.py makes.
    """
    value = environ.get(POOLER_VAR, "").strip() or "none"
    for pooler in get_args(Pooler):
        if value == pooler:
            return pooler  # type: ignore[no-any-return]
    raise ConfigError(POOLER_VAR, f"{value!r} is not one of {', '.join(get_args(Pooler))}")


def connect_args(pooler: Pooler, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """
    psycopg's connect arguments behind `pooler`: behind a transaction pooler,
    `prepare_threshold=None` (psycopg prepares no statement). By default psycopg
    prepares a query on its fifth run on a connection, under a name (`_pg3_0`)
    that exists on that server connection only: through PgBouncer in transaction
    mode the next transaction runs it on another one ("prepared statement
    "_pg3_0" does not exist"), or a second client prepares its own under the same
    name on a shared one ("… already exists").
    """
    args = dict(given or {})
    if pooler == "transaction":
        args["prepare_threshold"] = None
    return args


def make_engine(url: str, *, pooler: Pooler | None = None, **kwargs: Any) -> Engine:
    """
    An engine for the ledger at `url`; `pooler`: how it is reached (None: as
    LEADRELAY_DATABASE_POOLER says, `pooler_setting`).

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
    pooler = pooler_setting() if pooler is None else pooler
    if "poolclass" not in kwargs:
        kwargs = {"pool_size": 5, "max_overflow": 5, **kwargs}
    kwargs["connect_args"] = connect_args(pooler, kwargs.get("connect_args"))
    engine = create_engine(url, pool_pre_ping=True, **kwargs)
    keep_primary_message(engine)
    if pooler == "transaction":
        refuse_session_state(engine)
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
        wrapped.args = (f"({kind.__module__}.{kind.__name__}) {primary}{_pooler_hint(orig)}",)


#: psycopg's names for the statements it prepares
_PSYCOPG_PREPARED = re.compile(r'prepared statement "_pg3_')


def _pooler_hint(exc: psycopg.Error) -> str:
    """
    What to set when psycopg's own prepared statement is missing or taken on
    the server connection: the sign of a transaction pooler nobody told us of.
    """
    kinds = (psycopg.errors.InvalidSqlStatementName, psycopg.errors.DuplicatePreparedStatement)
    if isinstance(exc, kinds) and _PSYCOPG_PREPARED.search(str(exc)):
        return (
            f" (the ledger is behind a transaction pooler, PgBouncer pool_mode = transaction?"
            f" set {POOLER_VAR}=transaction)"
        )
    return ""


#: statements whose effect outlives their transaction, on the server connection
_SESSION_STATE = re.compile(
    r"""
    ^\s*(?P<statement>
        SET\s+(?!LOCAL\b|TRANSACTION\b|CONSTRAINTS\b)\S+   # SET x = … (SESSION too)
      | RESET\s+\S+ | (?:UN)?LISTEN\b | PREPARE\b | DISCARD\b | LOAD\b
      | CREATE\s+(?:(?:GLOBAL|LOCAL)\s+)?TEMP(?:ORARY)?\b
      | DECLARE\b.*?\bWITH\s+HOLD\b
    )
    | (?P<call>\bpg_(?:try_)?advisory_lock(?:_shared)?)\s*\(
    """,
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)


def refuse_session_state(engine: Engine) -> None:
    """
    Behind a transaction pooler, refuse a statement whose effect would outlive
    its transaction: the pooler hands the server connection to another client
    when the transaction ends, which inherits the state (a `SET statement_timeout`,
    a session advisory lock, a LISTEN), while this client's next transaction runs
    without it. Refused before it is sent, with ConfigError naming the setting
    and the transaction-scoped form to write instead.
    """

    @event.listens_for(engine, "before_cursor_execute")
    def _transaction_scoped_only(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        found = _SESSION_STATE.search(statement)
        if found is None:
            return
        what = " ".join((found.group("statement") or found.group("call")).split()[:2])
        raise ConfigError(
            POOLER_VAR,
            f"is transaction: `{what}` would outlive its transaction on a server connection"
            " the pooler shares; write it transaction-scoped (SET LOCAL,"
            " pg_advisory_xact_lock) or run it on a direct connection",
        )


def primary_message(exc: psycopg.Error) -> str | None:
    """Cut a server error to its primary message, in place; returns it (None: none to cut to)."""
    primary = exc.diag.message_primary
    if primary:
        exc.args = (primary,)
    return primary or None


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions on the ledger; a commit does not expire what a session has loaded."""
    return sessionmaker(engine, expire_on_commit=False)


def on_postgresql(session: Session) -> bool:
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
    ins = postgresql.insert(model) if on_postgresql(session) else sqlite.insert(model)
    return ins.on_conflict_do_nothing(index_elements=index_elements, index_where=index_where)


def bulk_insert(session: Session, model: type[Base], rows: Sequence[dict[str, Any]]) -> None:
    """
    Insert many rows with no conflict to handle. On PostgreSQL this is COPY
    (about ten times the rows per second of a pipelined INSERT), on the
    session's own connection and so in its transaction.
    """
    if not copies(session):
        session.execute(insert(model), rows)
        return
    columns = list(rows[0])
    json_columns = {c.name for c in model.__table__.columns if isinstance(c.type, JSON)}
    copy_rows(
        session,
        model,
        columns,
        ([json_text(row[c]) if c in json_columns else row[c] for c in columns] for row in rows),
    )


def json_text(value: Any) -> str:
    """A JSON column's value as the text a COPY or a cast to jsonb takes (UTF-8, not escaped)."""
    return json.dumps(value, ensure_ascii=False)


def copies(session: Session) -> bool:
    """Whether `copy_rows` can run on the session (`_copying`)."""
    return _copying(session) is not None


def _copying(session: Session) -> psycopg.Connection[Any] | None:
    """
    The session's psycopg sync connection, which COPY runs on; None on SQLite, and
    for an asyncio session's (under `run_sync`), which has no COPY to lend.
    """
    if not on_postgresql(session):
        return None
    raw = session.connection().connection.dbapi_connection
    return raw if isinstance(raw, psycopg.Connection) else None


def copy_rows(
    session: Session, model: type[Base], columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """
    COPY `rows` into `model`'s table on PostgreSQL, in the session's transaction:
    each row a sequence in `columns`' order, a JSON column's value as JSON text.
    `bulk_insert` without its per-row dict, for a caller that has the values ready.
    """
    raw = _copying(session)
    if raw is None:
        raise TypeError("copy_rows needs a session on psycopg's sync connection (`copies`)")
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(model.__tablename__),
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
    )
    try:
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    except psycopg.Error as exc:
        # COPY runs past SQLAlchemy and its hook: its CONTEXT quotes the failing row
        primary_message(exc)
        raise


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
    if on_postgresql(session):
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
    if on_postgresql(session):
        session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


def run_on_postgresql(session: Session, statement: Executable) -> int:
    """Run `statement` on PostgreSQL (its row count), nothing on SQLite (0)."""
    if not on_postgresql(session):
        return 0
    return int(session.execute(statement).rowcount or 0)  # type: ignore[attr-defined]
