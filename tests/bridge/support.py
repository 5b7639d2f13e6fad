"""Serving the bridge for tests: the real app under uvicorn on a loopback port, in this loop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from httpx_sse import ServerSentEvent, aconnect_sse

from rest_bridge.app import create_app
from rest_bridge.config import BridgeSettings
from rest_bridge.http_protocol import BridgeHttpProtocol
from rest_bridge.state import BridgeState

LLAMA = "@cf/meta/llama-3.2-3b-instruct"


@dataclass
class Bridge:
    app: FastAPI
    settings: BridgeSettings
    base_url: str  # http://127.0.0.1:PORT

    @property
    def state(self) -> BridgeState:
        state: BridgeState = self.app.state.bridge
        return state

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=httpx.Timeout(20.0), **kwargs
        )


def bridge_settings(gateway_addr: str, vault_addr: str, **overrides: Any) -> BridgeSettings:
    """Settings for tests: the stack's addresses, short hold/keep-alive windows by default."""
    base = BridgeSettings(
        listen_host="127.0.0.1",
        listen_port=0,
        gateway_addr=gateway_addr,
        vault_addr=vault_addr,
        first_chunk_wait_seconds=2.0,
        keepalive_seconds=15.0,
        rpc_timeout_seconds=10.0,
        ready_timeout_seconds=1.0,
    )
    return dataclasses.replace(base, **overrides)


def bind_loopback() -> socket.socket:
    """A listening loopback socket on a free port.

    Created with an explicit IPPROTO_TCP: asyncio enables TCP_NODELAY on accepted connections
    only when the listening socket's `proto` says TCP, and without it every response written in
    two pieces (head, body) stalls ~40 ms on Nagle + delayed ACK. (`fakes.server.bind_socket`
    passes proto 0 and so has exactly that stall.)
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    return sock


@contextlib.asynccontextmanager
async def serve_bridge(settings: BridgeSettings) -> AsyncIterator[Bridge]:
    """Run `create_app(settings)` with uvicorn (lifespan on) as a task on the running loop.

    The same loop as the in-process gRPC stack, so sync clients must run in a thread.
    """
    app = create_app(settings)
    sock = bind_loopback()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        http=BridgeHttpProtocol,  # as `python -m rest_bridge` runs it
        lifespan="on",
        log_config=None,
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    # `_serve` is `serve` without installing signal handlers over pytest's own.
    task = asyncio.create_task(server._serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn exited during start-up")
                await asyncio.sleep(0.005)
        yield Bridge(app, settings, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), 3)
        except TimeoutError:
            server.force_exit = True
            await task
        sock.close()


def chat_body(prompt: str, *, model: str = LLAMA, **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], **fields}


@dataclass
class SSEResult:
    """A whole streamed response: the raw text (comments included) and the parsed events."""

    response: httpx.Response
    raw: str
    events: list[ServerSentEvent]

    @property
    def data(self) -> list[str]:
        return [event.data for event in self.events]

    def chunks(self) -> list[dict[str, Any]]:
        """Every data frame except [DONE], parsed (so each must be JSON)."""
        return [json.loads(event.data) for event in self.events if event.data != "[DONE]"]


async def stream_chat(client: httpx.AsyncClient, body: dict[str, Any]) -> SSEResult:
    """POST a streaming request and read it to the end with httpx-sse."""
    async with aconnect_sse(client, "POST", "/v1/chat/completions", json=body) as source:
        response = source.response
        await response.aread()
        events: list[ServerSentEvent] = []
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            # The body is read already; httpx replays it to the decoder.
            events = [event async for event in source.aiter_sse()]
    return SSEResult(response, response.text, events)
