"""A scriptable upstream for tests of the HTTP leg: a real aiohttp.web server on a free loopback
port, so every test goes through real sockets, keep-alive and chunked bodies included.

Each test sets `handler` (or uses `reply`/`sse_reply` to build one). The server records every
request it gets (`requests`), which TCP connection carried it (the client's port), and which
connections the client closed (`closed_connections`, with `wait_closed`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    query: str
    headers: CIMultiDictProxy[str]
    body: bytes
    connection: int
    """The client's port: the same number means the same TCP connection."""


def reply(
    status: int,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Handler:
    """Answer every request with this status, JSON body (or `raw` bytes) and headers."""
    content = raw if raw is not None else orjson.dumps(body)

    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=content, headers=dict(headers or {}))

    return handle


def sse_reply(*pieces: bytes, delay: float = 0.0, hold: float = 0.0) -> Handler:
    """A chunked `text/event-stream` answer written piece by piece (`delay` apart), then held
    open `hold` seconds before the body's end."""

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
            if delay:
                await asyncio.sleep(delay)
        if hold:
            await asyncio.sleep(hold)
        await response.write_eof()
        return response

    return handle


class UpstreamServer:
    """See the module docstring."""

    def __init__(self, server: TestServer) -> None:
        self._server = server
        self.handler: Handler = reply(200, {})
        self.requests: list[Seen] = []
        self.closed_connections: set[int] = set()
        self._changed = asyncio.Condition()

    @property
    def base_url(self) -> str:
        return str(self._server.make_url("")).rstrip("/")

    @property
    def connections(self) -> list[int]:
        """The connection of each request, in order."""
        return [seen.connection for seen in self.requests]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        assert transport is not None
        port: int = transport.get_extra_info("peername")[1]
        self.requests.append(
            Seen(
                request.method,
                request.path,
                request.query_string,
                request.headers,
                await request.read(),
                port,
            )
        )
        try:
            return await self.handler(request)
        except (asyncio.CancelledError, ConnectionResetError):
            # aiohttp cancels the handler when the client closes the connection under it
            # (handler_cancellation), and a write to a closed connection raises.
            self.closed_connections.add(port)
            async with self._changed:
                self._changed.notify_all()
            raise

    async def wait_closed(self, port: int, within: float = 2.0) -> None:
        """Until the client has closed connection `port` while a handler was answering on it."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: port in self.closed_connections)


@asynccontextmanager
async def upstream_server() -> AsyncIterator[UpstreamServer]:
    """Run an `UpstreamServer` on 127.0.0.1 for the duration of the block."""
    app = web.Application()
    holder: list[UpstreamServer] = []

    async def dispatch(request: web.Request) -> web.StreamResponse:
        return await holder[0].handle(request)

    app.router.add_route("*", "/{tail:.*}", dispatch)
    server = TestServer(app, host="127.0.0.1")
    upstream = UpstreamServer(server)
    holder.append(upstream)
    await server.start_server()  # with handler_cancellation: a client gone cancels the handler
    try:
        yield upstream
    finally:
        await server.close()
