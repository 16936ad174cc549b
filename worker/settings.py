"""
Configuration, read once: environment (`LEADRELAY_*`) plus the destinations file.

Twelve-factor style, with pydantic-settings: the servers come from the
environment; the destinations come from the TOML file `LEADRELAY_CONFIG`
(default `./leadrelay.toml`), one table per destination:

    [destinations.kuper-main]
    platform = "kuper"
    base_url = "https://api.kuper.ru"
    username = "partner"
    password = "${KUPER_PASSWORD}"     # any value may name an environment variable
    rate = 5

A missing or wrong setting raises ConfigError naming the key
(`destinations.kuper-main.password`), at start-up, never mid-delivery. One
exception, so that a producer needs no platform's secret: a secret setting
that names an environment variable this process lacks is kept as
`UnsetSecret`; sending with it is the error, and a worker checks the secrets
of the destinations it serves as it starts.
"""

from __future__ import annotations

import functools
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker import redis_urls
from worker.config import CONTROL_GROUP, GROUP_PATTERN, DestinationConfig, UnsetSecret
from worker.errors import ConfigError, UnknownDestination
from worker.platforms import REGISTRY

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: what a secret whose variable is unset is validated as, before UnsetSecret replaces it
_PLACEHOLDER = "unset"


class Settings(BaseSettings):
    """Every LEADRELAY_* setting, with its default. `deploy/env.example` lists them."""

    # hide_input_in_errors: a URL in a validation error may carry a password
    model_config = SettingsConfigDict(
        env_prefix="LEADRELAY_", extra="ignore", hide_input_in_errors=True
    )

    #: the ledger; the default is an embedded SQLite file for a first run
    database_url: str = "sqlite:///leadrelay.db"
    #: how PostgreSQL is reached: "none" (directly), "session" or "transaction" (a PgBouncer
    #: pool_mode); "transaction" turns prepared statements off (worker.ledger.db.Pooler)
    database_pooler: Literal["none", "session", "transaction"] = "none"
    #: Celery's broker
    broker_url: str = "redis://127.0.0.1:6379/0"
    #: the shared limiter, cooldowns and tokens; None: the broker's server
    redis_url: str | None = None
    #: the master the Sentinels watch, for a `sentinel://` broker or Redis URL
    redis_master_name: str | None = Field(default=None, validate_default=True)
    #: the destinations file
    config: Path = Path("leadrelay.toml")
    #: how long one deliver task drains before it hands over to a fresh message, seconds
    drain_budget: float = 20.0
    #: the longest a task sleeps in-process for a limiter token; longer waits re-enqueue
    max_inline_wait: float = 2.0
    #: how often beat sweeps due deliveries and expired leases, seconds
    sweep_every: float = 5.0
    #: log level of the service's own loggers: DEBUG, INFO, WARNING, ERROR or CRITICAL
    log_level: str = "INFO"
    #: log format: "json" (one event per line) or "text" (for a terminal)
    log_format: Literal["json", "text"] = "json"
    #: keep delivered leads' personal data this long, days (`leadrelay purge`)
    retention_days: int = 90

    #: the worker group this process serves ("control", or a destination's
    #: `worker_group`); None: every queue (one worker for everything)
    worker_group: str | None = Field(default=None, pattern=GROUP_PATTERN)

    destinations: dict[str, DestinationConfig] = Field(default_factory=dict)

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"one of {', '.join(LOG_LEVELS)}")
        return level

    @field_validator("broker_url", "redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        """A `sentinel://` URL is read at start, not at its first connection (`redis_urls`)."""
        if value and redis_urls.is_sentinel(value):
            redis_urls.parse_sentinel(value)
        return value

    @field_validator("redis_master_name")
    @classmethod
    def _master_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value:
            for key in ("broker_url", "redis_url"):
                url = info.data.get(key)
                if url and redis_urls.is_sentinel(url):
                    raise ValueError(
                        f"required: LEADRELAY_{key.upper()} is a sentinel:// URL;"
                        " name the master its Sentinels watch"
                    )
        return value or None

    @property
    def limiter_url(self) -> str:
        return self.redis_url or self.broker_url

    def destination(self, name: str) -> DestinationConfig:
        try:
            return self.destinations[name]
        except KeyError:
            raise UnknownDestination(name, list(self.destinations)) from None

    @property
    def lease(self) -> timedelta:
        return max((d.lease for d in self.destinations.values()), default=timedelta(minutes=1))


def interpolate(value: Any, where: str) -> Any:
    """Replace `${VAR}` in every string with the environment's value; a missing one is an error."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(where, f"names ${{{name}}}, which is not set in the environment")
            return os.environ[name]

        return _ENV_REF.sub(sub, value)
    if isinstance(value, Mapping):
        return {k: interpolate(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def parse_destinations(tables: Mapping[str, Any]) -> dict[str, DestinationConfig]:
    """The `[destinations.*]` tables as typed configs, or ConfigError naming the first bad key."""
    out: dict[str, DestinationConfig] = {}
    for name, table in tables.items():
        where = f"destinations.{name}"
        if not isinstance(table, Mapping):
            raise ConfigError(where, "must be a table")
        platform = interpolate(table.get("platform"), f"{where}.platform")
        model = destination_model(platform, f"{where}.platform")
        values, unset = _resolve(model, table, where)
        try:
            dest = model.model_validate({**values, "name": name})
        except ValidationError as exc:
            err = exc.errors(include_input=False, include_url=False)[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{where}.{loc}" if loc else where, err["msg"]) from None
        out[name] = dest.model_copy(update=unset) if unset else dest
    return out


def _resolve(
    model: type[DestinationConfig], table: Mapping[str, Any], where: str
) -> tuple[dict[str, Any], dict[str, UnsetSecret]]:
    """The table with `${VAR}` replaced; a secret whose variable is unset is set aside."""
    secrets = _secret_fields(model)
    values: dict[str, Any] = {}
    unset: dict[str, UnsetSecret] = {}
    for key, raw in table.items():
        at = f"{where}.{key}"
        missing = _unset_variable(raw) if key in secrets else None
        if missing is not None:
            unset[key] = UnsetSecret(at, missing)
            values[key] = _PLACEHOLDER
        else:
            values[key] = interpolate(raw, at)
    return values, unset


def _secret_fields(model: type[DestinationConfig]) -> set[str]:
    """The fields typed SecretStr (or SecretStr | None)."""
    out = set()
    for name, info in model.model_fields.items():
        kinds = typing.get_args(info.annotation) or (info.annotation,)
        if any(isinstance(k, type) and issubclass(k, SecretStr) for k in kinds):
            out.add(name)
    return out


def _unset_variable(value: Any) -> str | None:
    """The first `${VAR}` in `value` that the environment lacks, if any."""
    if isinstance(value, str):
        for match in _ENV_REF.finditer(value):
            if match.group(1) not in os.environ:
                return match.group(1)
    return None


def destination_model(platform: Any, where: str) -> type[DestinationConfig]:
    """The destination model of a registered platform, or ConfigError at `where` naming them."""
    known = ", ".join(REGISTRY)
    if platform is None:
        raise ConfigError(where, f"required: one of {known}")
    if not isinstance(platform, str) or platform not in REGISTRY:
        raise ConfigError(where, f"not a platform; one of {known}")
    return REGISTRY[platform].config_model


def load_file(path: Path, *, named: bool = False) -> dict[str, DestinationConfig]:
    """
    Read the destinations file. The default file may be missing (no destinations
    yet); a file named by LEADRELAY_CONFIG must exist.
    """
    if not path.exists():
        if named:
            raise ConfigError("LEADRELAY_CONFIG", f"names {path}, which does not exist")
        return {}
    if not path.is_file():
        raise ConfigError("LEADRELAY_CONFIG", f"names {path}, which is not a file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"is not valid TOML ({exc})") from None
    unknown = set(data) - {"destinations"}
    if unknown:
        raise ConfigError(f"{path}: {sorted(unknown)[0]}", "unknown key (only [destinations.*])")
    return parse_destinations(data.get("destinations", {}))


def load(**overrides: Any) -> Settings:
    """Settings from the environment and the destinations file, with `overrides` on top."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors(include_input=False, include_url=False)[0]
        key = "LEADRELAY_" + "_".join(str(p) for p in err["loc"]).upper()
        raise ConfigError(key, err["msg"].removeprefix("Value error, ")) from None
    if "destinations" not in overrides:
        named = "config" in settings.model_fields_set
        settings.destinations = load_file(settings.config, named=named)
    check_group(settings)
    return settings


def check_group(settings: Settings) -> None:
    """A worker group that no destination names would consume nothing: an error at start."""
    group = settings.worker_group
    if group is None or group == CONTROL_GROUP:
        return
    groups = {d.worker_group for d in settings.destinations.values()}
    if group not in groups:
        known = ", ".join(sorted(groups | {CONTROL_GROUP}))
        raise ConfigError(
            "LEADRELAY_WORKER_GROUP",
            f"no destination has worker_group = {group!r} (groups: {known})",
        )


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read once. Only app, context and the CLI call this."""
    return load()


def secret_values(settings: Settings) -> list[str]:
    """Every configured secret, for the redaction filters (never printed)."""
    out = []
    for dest in settings.destinations.values():
        for name in type(dest).model_fields:
            value = getattr(dest, name)
            if isinstance(value, SecretStr) and not isinstance(value, UnsetSecret):
                out.append(value.get_secret_value())
    return [s for s in out if s]
