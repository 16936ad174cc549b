"""
Schema migrations with Alembic, shipped inside the package so an installed
wheel and `leadrelay db upgrade` find them (no alembic.ini needed).

`require_current` is the check every `leadrelay` command makes before it
touches the ledger: one read of alembic's version table, compared with the
migrations this code ships. A ledger without a schema, or behind (or ahead of)
this code, is refused with a message saying what to run, instead of the first
query failing on a missing table.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from worker.errors import ConfigError, LeadRelayError, LedgerUnavailable
from worker.ledger.db import make_engine, normalise_url

#: what to run when the schema is missing or behind
UPGRADE_HINT = "run leadrelay db upgrade"


class SchemaNotCurrent(LeadRelayError):
    """The ledger has no schema, or not the one this code's migrations end at."""


def alembic_config(url: str) -> Config:
    """Alembic's config for the ledger at `url`."""
    config = Config()
    config.set_main_option("script_location", str(resources.files("worker.ledger") / "migrations"))
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the ledger at `url` up to `revision`."""
    command.upgrade(alembic_config(url), revision)


def check(url: str) -> None:
    """Raise when the models and the migrations disagree (alembic check)."""
    command.check(alembic_config(url))


def shown_url(url: str) -> str:
    """`url` as a message may show it: the password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "LEADRELAY_DATABASE_URL"  # not a URL: echo nothing a password could hide in


@dataclass(frozen=True, slots=True)
class SchemaState:
    """Where a ledger's schema stands against the migrations this code ships."""

    #: the revisions in the ledger's version table; empty: no schema
    current: tuple[str, ...]
    #: where this code's migrations end
    heads: tuple[str, ...]
    #: of `current`, the revisions this code does not know (a newer leadrelay migrated it)
    unknown: tuple[str, ...] = ()

    def problem(self, url: str) -> str | None:
        """What is wrong, as a message naming the ledger (password hidden); None: current."""
        at = f"the ledger at {shown_url(url)}"
        if not self.current:
            return f"{at} has no schema: {UPGRADE_HINT}"
        if self.unknown:
            return (
                f"{at} is at revision {', '.join(self.unknown)}, which this leadrelay does not"
                f" know (it ends at {', '.join(self.heads)}): a newer leadrelay migrated it;"
                " upgrade leadrelay"
            )
        if set(self.current) != set(self.heads):
            return (
                f"{at} is at revision {', '.join(self.current)}, behind this leadrelay's"
                f" {', '.join(self.heads)}: {UPGRADE_HINT}"
            )
        return None


#: what LEADRELAY_DATABASE_URL may name
SUPPORTED = "SQLite (sqlite:///leadrelay.db) or PostgreSQL (postgresql://user@host/db)"


def sqlite_file_missing(url: str) -> bool:
    """
    A SQLite URL naming a file that does not exist (connecting would create it
    empty); ConfigError for a URL that is neither SQLite's nor PostgreSQL's, or
    a file in a directory that does not exist (no upgrade could create it).
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError("LEADRELAY_DATABASE_URL", f"not a URL of {SUPPORTED}") from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql", "postgres"):
        raise ConfigError("LEADRELAY_DATABASE_URL", f"names {backend}: the ledger is {SUPPORTED}")
    database = parsed.database or ""
    if backend != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        return False
    path = Path(database)
    if not path.absolute().parent.is_dir():
        raise ConfigError(
            "LEADRELAY_DATABASE_URL", f"names {path}, in a directory that does not exist"
        )
    return not path.exists()


def schema_state(url: str, engine: Engine | None = None) -> SchemaState:
    """
    Read the ledger's version table (one query) and compare it with the shipped
    migrations. A SQLite file that does not exist has no schema, and is not
    created by asking. LedgerUnavailable when the database cannot be reached;
    ConfigError when the URL names no database the ledger can live in.
    """
    script = ScriptDirectory.from_config(alembic_config(url))
    heads = tuple(script.get_heads())
    if sqlite_file_missing(url):
        return SchemaState((), heads)
    own = engine is None
    try:
        bind = engine if engine is not None else make_engine(url)
    except ArgumentError:  # NoSuchModuleError too: a scheme SQLAlchemy has no dialect for
        raise ConfigError(
            "LEADRELAY_DATABASE_URL",
            "not a ledger URL (sqlite:///leadrelay.db, or postgresql://user@host/db)",
        ) from None
    try:
        with bind.connect() as connection:
            current = tuple(MigrationContext.configure(connection).get_current_heads())
    except DBAPIError as exc:
        reason = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
        raise LedgerUnavailable(
            f"the ledger at {shown_url(url)} cannot be reached: {reason}"
        ) from None
    finally:
        if own:
            bind.dispose()
    unknown = []
    for revision in current:
        try:
            script.get_revision(revision)
        except CommandError:
            unknown.append(revision)
    return SchemaState(current, heads, tuple(unknown))


def require_current(url: str, engine: Engine | None = None) -> None:
    """SchemaNotCurrent unless the ledger at `url` is at this code's head revision."""
    problem = schema_state(url, engine).problem(url)
    if problem is not None:
        raise SchemaNotCurrent(problem)
