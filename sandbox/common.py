"""
What every emulator shares: a record of what it received, faults a test can
order over HTTP, and a sliding-window rate limit like the platforms'.

Control endpoints (same on every emulator; tests in other processes use them):

* `POST /__sandbox__/faults` `{"status": 429, "retry_after": "2", "count": 3}`:
  the next `count` requests get that answer instead of being handled. Other
  keys: `body` (text), `content_type`, `delay` (seconds before answering),
  `cut` (true: read the request, then drop the connection mid-answer),
  `handle` (true: after `delay`, answer as the platform would: a slow platform;
  with `cut`, the platform does the work and the answer is lost on the way back).
* `DELETE /__sandbox__/faults`: forget the faults.
* `GET /__sandbox__/log`: every request the emulator handled, in order, with
  its monotonic time, path, status, and the leads it accepted.
* `POST /__sandbox__/reset`: forget faults, log and stored leads.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTROL = "/__sandbox__"


@dataclass
class Fault:
    """One answer a test ordered in advance."""

    status: int = 500
    retry_after: str | None = None
    body: str = ""
    content_type: str = "application/json"
    delay: float = 0.0
    cut: bool = False
    handle: bool = False
    count: int = 1


@dataclass
class SandboxState:
    """The emulator's memory: faults to play, what it handled, what it stored."""

    faults: deque[Fault] = field(default_factory=deque)
    log: list[dict[str, Any]] = field(default_factory=list)
    store: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_fault(self) -> Fault | None:
        with self.lock:
            if not self.faults:
                return None
            fault = self.faults[0]
            fault.count -= 1
            if fault.count <= 0:
                self.faults.popleft()
            return fault

    def record(self, path: str, status: int, **extra: Any) -> None:
        with self.lock:
            self.log.append({"t": time.monotonic(), "path": path, "status": status, **extra})

    def reset(self) -> None:
        """Forget faults and the log, and empty every stored collection (keeping its type)."""
        with self.lock:
            self.faults.clear()
            self.log.clear()
            for key, value in list(self.store.items()):
                if hasattr(value, "clear"):
                    value.clear()
                else:
                    del self.store[key]


class SlidingWindow:
    """At most `limit` requests in any `window` seconds, per key (the platforms' own rule)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and now - hits[0] >= self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            return True


async def _play(fault: Fault, scope: Scope, receive: Receive, send: Send) -> None:
    if fault.delay:
        await asyncio.sleep(fault.delay)
    if fault.cut:
        # Start an answer promising more than we send, then return: the server
        # drops the connection and the client sees it cut mid-answer.
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", b"1000"),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b'{"partial', "more_body": True})
        return
    headers = {"content-type": fault.content_type}
    if fault.retry_after is not None:
        headers["retry-after"] = fault.retry_after
    response = Response(fault.body, status_code=fault.status, headers=headers)
    await response(scope, receive, send)


class FaultMiddleware:
    """Plays ordered faults before the emulator sees the request, and logs them."""

    def __init__(self, app: ASGIApp, state: SandboxState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(CONTROL):
            await self.app(scope, receive, send)
            return
        fault = self.state.next_fault()
        if fault is None:
            await self.app(scope, receive, send)
            return
        if fault.handle:
            await asyncio.sleep(fault.delay)
            if not fault.cut:
                await self.app(scope, receive, send)
                return

            async def swallow(message: Message) -> None:
                """The platform did the work; its answer never leaves."""

            await self.app(scope, receive, swallow)
            self.state.record(path, 0, fault=True)
            await _play(Fault(cut=True), scope, receive, send)
            return
        body = b""
        more = True
        while more:  # read the whole request first: a fault comes after the platform got it
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.state.record(path, 0 if fault.cut else fault.status, fault=True)
        await _play(fault, scope, receive, send)


def control_routes(state: SandboxState) -> list[Route]:
    """The `/__sandbox__/...` routes of one emulator."""

    async def add_faults(request: Request) -> Response:
        spec = await request.json()
        specs = spec if isinstance(spec, list) else [spec]
        with state.lock:
            for one in specs:
                state.faults.append(Fault(**one))
        return JSONResponse({"queued": len(state.faults)})

    async def clear_faults(request: Request) -> Response:
        with state.lock:
            state.faults.clear()
        return JSONResponse({"queued": 0})

    async def log(request: Request) -> Response:
        with state.lock:
            return JSONResponse(list(state.log))

    async def reset(request: Request) -> Response:
        state.reset()
        return PlainTextResponse("reset")

    return [
        Route(f"{CONTROL}/faults", add_faults, methods=["POST"]),
        Route(f"{CONTROL}/faults", clear_faults, methods=["DELETE"]),
        Route(f"{CONTROL}/log", log, methods=["GET"]),
        Route(f"{CONTROL}/reset", reset, methods=["POST"]),
    ]


Handler = Callable[[Request], Awaitable[Response]]


def build_app(routes: list[Route], state: SandboxState) -> ASGIApp:
    """A Starlette app with the emulator's routes, the control routes and faults in front."""
    app = Starlette(routes=[*routes, *control_routes(state)])
    app.state.sandbox = state
    return FaultMiddleware(app, state)
