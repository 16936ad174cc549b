"""`leadrelay sandbox`: every platform emulator on its own loopback port, until interrupted."""

from __future__ import annotations

import importlib
import threading
from contextlib import ExitStack

from rich.console import Console

from worker.sandbox import serve

#: platform → the emulator module; each has create_app() with documented default credentials
EMULATORS = {
    "kuper": "worker.sandbox.kuper",
    "calltouch": "worker.sandbox.calltouch",
    "salesman": "worker.sandbox.salesman",
    "admitad": "worker.sandbox.admitad",
}


def serve_all(host: str, first_port: int, console: Console) -> None:
    with ExitStack() as stack:
        for offset, (platform, module_name) in enumerate(EMULATORS.items()):
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            url = stack.enter_context(serve(module.create_app(), host, first_port + offset))
            console.print(f"{platform:10} {url}")
        console.print("serving; Ctrl-C stops")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            console.print("stopped")
