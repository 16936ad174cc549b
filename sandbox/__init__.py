"""
Strict emulators of the platforms, served over real sockets on 127.0.0.1.

Each emulator is an ASGI app (`sandbox.kuper.create_app()` …) that
checks requests as strictly as the platform's documentation: auth, types,
limits, error bodies, 429s. Tests and `leadrelay demo` talk to them exactly
as they would talk to the platform; they are never wired in unless asked.

The emulator of platform `x` is the module `sandbox.x`, found by that name
(`leadrelay sandbox` serves one for each platform the relay has), and its
`create_app()` defaults are the emulator's own documented credentials.

`serve(app)` runs one in a background thread (uvicorn) on a free port and
yields its base URL, the way httpx's own tests serve uvicorn.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:
        """Leave signals to the host process: this server runs in a thread."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` in a thread for the life of the block; yields `http://host:port`."""
    port = port or free_port(host)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
    )
    server = _Server(config)
    thread = threading.Thread(target=server.run, name=f"sandbox:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"sandbox on {host}:{port} did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
