"""
Platform adapters: one module per platform, all pure, and the one list of them.

`ADAPTERS` is the only place that names the platforms. Everything else
derives from it: `REGISTRY` (name → adapter) for intake and the delivery
loop; `destination_models()` and the registry's names for the settings
loader; and, by the convention that a platform's name is also a module's,
the emulator `sandbox.<name>` that `leadrelay sandbox` serves and the demo
scenario `producers.demo_platforms.<name>` that `leadrelay demo` runs.

Adding a platform: its adapter module here (a `DestinationConfig` subclass
with `platform: Literal["<name>"]` and an `Adapter` with `platform =
"<name>"`), one entry in `ADAPTERS`, and its emulator `sandbox/<name>.py`
with `create_app()`.
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args, get_origin

from worker.config import DestinationConfig
from worker.platforms.admitad import AdmitadAdapter
from worker.platforms.base import Adapter
from worker.platforms.calltouch import CalltouchAdapter
from worker.platforms.kuper import KuperAdapter
from worker.platforms.salesman import SalesmanAdapter

#: every platform the relay delivers to, in the order listings show them
ADAPTERS: tuple[Adapter[Any], ...] = (
    KuperAdapter(),
    CalltouchAdapter(),
    SalesmanAdapter(),
    AdmitadAdapter(),
)

#: platform name → its adapter: `ADAPTERS`, plus whatever `register` adds
REGISTRY: dict[str, Adapter[Any]] = {}

#: a platform's name is also a module's (`sandbox.<name>`): a lower-case identifier
_NAME = re.compile(r"[a-z][a-z0-9_]*")


def register(adapter: Adapter[Any]) -> None:
    """
    Add `adapter`'s platform to `REGISTRY` under `adapter.platform`.

    ValueError when the name is not a lower-case identifier (it names the
    modules `sandbox.<name>` and `producers.demo_platforms.<name>`), when a
    platform of that name is registered already, or when the adapter's
    `config_model` does not declare `platform: Literal["<name>"]`. `ADAPTERS`
    are registered on import; a test adds a platform of its own the same
    way and removes it after with `unregister`.
    """
    name = adapter.platform
    if not _NAME.fullmatch(name):
        raise ValueError(f"platform {name!r}: a name is a lower-case identifier (a-z, 0-9, _)")
    if name in REGISTRY:
        raise ValueError(f"platform {name!r} is registered already")
    field = type(adapter).config_model.model_fields.get("platform")
    annotation = field.annotation if field is not None else None
    if get_origin(annotation) is not Literal or get_args(annotation) != (name,):
        raise ValueError(
            f"platform {name!r}: {type(adapter).config_model.__name__}.platform must be"
            f' Literal["{name}"]'
        )
    REGISTRY[name] = adapter


def unregister(name: str) -> None:
    """Remove the platform `name` from `REGISTRY` (KeyError when it is not there)."""
    del REGISTRY[name]


def adapter_for(dest: DestinationConfig) -> Adapter[Any]:
    """The adapter of a destination's platform."""
    return REGISTRY[dest.platform]


def destination_models() -> list[type[DestinationConfig]]:
    """Each registered platform's destination model, in registry order."""
    return [type(adapter).config_model for adapter in REGISTRY.values()]


for _adapter in ADAPTERS:
    register(_adapter)
