"""Serve an ASGI app (usually a fake upstream) with uvicorn on 127.0.0.1, for tests and benchmarks.

- ``with serve_in_thread(app) as base_url:`` runs uvicorn in a background thread with its own
  event loop, so sync and async tests, other threads and other loops can all talk to it.
- ``async with serve(app) as base_url:`` does the same from async code without blocking the
  loop while starting and stopping; ``serve(app, in_thread=False)`` runs it as a task instead.

Both bind port 0 and yield the base URL: the origin plus the app's ``base_path`` if it has one
(``http://127.0.0.1:PORT/client/v4`` for the Workers AI fake), i.e. exactly the value of the
gateway's ``*_BASE_URL`` setting. `RunningServer` exposes `origin` and `port` too.

Uvicorn logs an "Exception in ASGI application" traceback when a fake deliberately cuts a
connection (`fakes.wire.ConnectionCut`); `install_cut_log_filter` drops exactly those records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import uvicorn
from starlette.types import ASGIApp

from fakes.wire import ConnectionCut

__all__ = [
    "RunningServer",
    "bind_socket",
    "install_cut_log_filter",
    "serve",
    "serve_in_thread",
    "uvicorn_config",
]

_STOP_GRACE = 0.5  # seconds to let open streams end before forcing the server down


class _CutFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionCut)


_cut_filter = _CutFilter()


def install_cut_log_filter() -> None:
    """Silence uvicorn's error log for deliberate connection cuts (idempotent)."""
    logger = logging.getLogger("uvicorn.error")
    if _cut_filter not in logger.filters:
        logger.addFilter(_cut_filter)


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket; with port 0 the OS picks a free port (read it back from the socket)."""
    # IPPROTO_TCP explicitly: asyncio enables TCP_NODELAY on accepted connections only for
    # sockets whose proto is TCP; without it every small response waits ~40 ms (Nagle + delayed ACK).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # Listening before uvicorn starts means clients that connect early queue instead of failing.
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(
    app: ASGIApp, *, log_level: str = "warning", own_logging: bool = False
) -> uvicorn.Config:
    """The uvicorn settings the fakes use: quiet, no lifespan, no ``server: uvicorn`` header.

    In-process servers leave the host's logging configuration alone (uvicorn's records propagate
    to the root logger, where pytest captures them); the CLI sets up uvicorn's own handlers.
    """
    return uvicorn.Config(
        app,
        log_config=uvicorn.config.LOGGING_CONFIG if own_logging else None,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        server_header=False,
        timeout_graceful_shutdown=1,
        backlog=2048,
    )


class RunningServer:
    """A uvicorn server on a pre-bound socket, started in a thread or as a task."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        install_cut_log_filter()
        self.app = app
        self.socket = bind_socket(host, port)
        self.host, self.port = self.socket.getsockname()[:2]
        self.server = uvicorn.Server(uvicorn_config(app))
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        base_path = getattr(self.app, "base_path", "")
        return self.origin + (base_path if isinstance(base_path, str) else "")

    # ---- thread mode -----------------------------------------------------------------------

    def start_thread(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(
            target=self.server.run,
            kwargs={"sockets": [self.socket]},
            name=f"fake-upstream-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("uvicorn exited during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start in time")
            time.sleep(0.005)

    def stop_thread(self) -> None:
        thread = self._thread
        self.server.should_exit = True
        if thread is not None:
            thread.join(_STOP_GRACE)
            if thread.is_alive():
                # Streams still open (a test left one hanging): stop waiting for them.
                self.server.force_exit = True
                thread.join(10)
        self.socket.close()

    # ---- task mode -------------------------------------------------------------------------

    async def start_task(self, startup_limit: float = 10.0) -> None:
        # `_serve` is `serve` without signal-handler capture, which would hijack the test's Ctrl-C.
        self._task = asyncio.create_task(self.server._serve(sockets=[self.socket]))
        async with asyncio.timeout(startup_limit):
            while not self.server.started:
                if self._task.done():
                    self._task.result()
                    raise RuntimeError("uvicorn exited during start-up")
                await asyncio.sleep(0.005)

    async def stop_task(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), _STOP_GRACE)
            except TimeoutError:
                self.server.force_exit = True
                await self._task
        self.socket.close()


@contextlib.contextmanager
def serve_in_thread(app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run `app` with uvicorn in a background thread; yield its base URL; stop it on exit."""
    running = RunningServer(app, host, port)
    running.start_thread()
    try:
        yield running.base_url
    finally:
        running.stop_thread()


@contextlib.asynccontextmanager
async def serve(
    app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, in_thread: bool = True
) -> AsyncIterator[str]:
    """Async `serve_in_thread`; with ``in_thread=False`` uvicorn runs as a task on this loop."""
    running = RunningServer(app, host, port)
    if in_thread:
        await asyncio.to_thread(running.start_thread)
        try:
            yield running.base_url
        finally:
            await asyncio.to_thread(running.stop_thread)
    else:
        await running.start_task()
        try:
            yield running.base_url
        finally:
            await running.stop_task()
