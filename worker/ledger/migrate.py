"""
Schema migrations with Alembic, shipped inside the package so an installed
wheel and `leadrelay db upgrade` find them (no alembic.ini needed).
"""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config

from worker.ledger.db import normalise_url


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
