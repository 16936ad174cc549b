"""
Platform adapters: one module per platform, all pure.

`REGISTRY` maps a platform to its adapter instance; `destination_models()`
lists each platform's destination table model, for the settings loader.
"""

from __future__ import annotations

from typing import Any

from worker.config import DestinationConfig
from worker.leads import Platform
from worker.platforms.admitad import AdmitadAdapter
from worker.platforms.base import Adapter
from worker.platforms.calltouch import CalltouchAdapter
from worker.platforms.kuper import KuperAdapter
from worker.platforms.salesman import SalesmanAdapter

REGISTRY: dict[Platform, Adapter[Any]] = {
    Platform.KUPER: KuperAdapter(),
    Platform.CALLTOUCH: CalltouchAdapter(),
    Platform.SALESMAN: SalesmanAdapter(),
    Platform.ADMITAD: AdmitadAdapter(),
}


def adapter_for(dest: DestinationConfig) -> Adapter[Any]:
    """The adapter of a destination's platform."""
    return REGISTRY[dest.platform]


def destination_models() -> list[type[DestinationConfig]]:
    """Each platform's destination model; the settings loader picks one by `platform`."""
    return [type(adapter).config_model for adapter in REGISTRY.values()]
