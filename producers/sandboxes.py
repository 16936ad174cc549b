"""
How the producers side reaches the platforms' emulators, and `leadrelay sandbox`.

The emulator of platform `x` is the module `sandbox.x`, whose `create_app()`
builds it with its documented default credentials: the list of emulators is
the worker's registry of platforms (`worker.platforms.REGISTRY`), read by
that convention. The `sandbox` package runs on the libraries of the
`sandbox` extra; without them, `SandboxNotInstalled` says how to install it.
"""

from __future__ import annotations

import importlib
import threading
from contextlib import ExitStack
from types import ModuleType

from rich.console import Console

from worker.errors import LeadRelayError
from worker.platforms import REGISTRY

INSTALL = "pip install 'leadrelay[sandbox]'"


class SandboxNotInstalled(LeadRelayError):
    """The `sandbox` extra is not installed; `missing` is the module that was not found."""

    def __init__(self, missing: str) -> None:
        super().__init__(
            f"the platform emulators need the `sandbox` extra (no module {missing!r}): {INSTALL}"
        )
        self.missing = missing


def require() -> None:
    """SandboxNotInstalled unless the `sandbox` package and the libraries it runs on import."""
    try:
        importlib.import_module("sandbox.common")  # uvicorn (in sandbox/__init__), starlette
    except ModuleNotFoundError as exc:
        raise SandboxNotInstalled((exc.name or "sandbox").partition(".")[0]) from None


def emulator(platform: str) -> ModuleType | None:
    """The emulator module `sandbox.<platform>`; None when the platform has none."""
    require()
    try:
        return importlib.import_module(f"sandbox.{platform}")
    except ModuleNotFoundError as exc:
        if exc.name != f"sandbox.{platform}":
            raise
        return None


def serve_all(host: str, first_port: int, console: Console) -> None:
    """Serve every registered platform's emulator, each on the next port, until interrupted."""
    require()
    from sandbox import serve

    with ExitStack() as stack:
        for offset, platform in enumerate(REGISTRY):
            module = emulator(platform)
            if module is None:
                console.print(f"{platform:10} no emulator (sandbox/{platform}.py)")
                continue
            url = stack.enter_context(serve(module.create_app(), host, first_port + offset))
            console.print(f"{platform:10} {url}")
        console.print("serving; Ctrl-C stops")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            console.print("stopped")
