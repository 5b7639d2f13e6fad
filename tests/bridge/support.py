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
from rest_bridge.state import BridgeState
from rest_bridge.uvicorn_config import start_metrics_listener, uvicorn_config

LLAMA = "@cf/meta/llama-3.2-3b-instruct"


@dataclass
class Bridge:
    app: FastAPI
    settings: BridgeSettings
    base_url: str  # http://127.0.0.1:PORT
    metrics_url: str | None = None  # the metrics listener's /metrics, when settings.metrics_addr

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
    """Settings for tests: the stack's addresses, short hold/keep-alive windows by default.

    No metrics listener unless asked for (`metrics_addr="127.0.0.1:0"` picks a free port).
    """
    base = BridgeSettings(
        listen_host="127.0.0.1",
        listen_port=0,
        gateway_addr=gateway_addr,
        vault_addr=vault_addr,
        first_chunk_wait_seconds=2.0,
        keepalive_seconds=15.0,
        rpc_timeout_seconds=10.0,
        ready_timeout_seconds=1.0,
        metrics_addr="",
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

    Configured as `python -m rest_bridge` configures it (`uvicorn_config`: the same protocol
    class and edge limits), with quieter logs and a short drain. The same loop as the in-process
    gRPC stack, so sync clients must run in a thread.
    """
    app = create_app(settings)
    sock = bind_loopback()
    port = sock.getsockname()[1]
    config = uvicorn_config(app, settings, log_level="warning", graceful_shutdown_seconds=1)
    server = uvicorn.Server(config)
    metrics = start_metrics_listener(settings, app.state.bridge.metrics)
    # `_serve` is `serve` without installing signal handlers over pytest's own.
    task = asyncio.create_task(server._serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn exited during start-up")
                await asyncio.sleep(0.005)
        yield Bridge(app, settings, f"http://127.0.0.1:{port}", metrics.url if metrics else None)
    finally:
        if metrics is not None:
            await asyncio.to_thread(metrics.stop)
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


# Raw HTTP/1.1 over a loopback socket, for what httpx will not send (oversized or unfinished
# requests) and to see exactly when the bridge closes a connection.


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def error(self) -> dict[str, Any]:
        """The OpenAI error envelope's `error` object (asserts the shape)."""
        assert self.headers.get("content-type", "").startswith("application/json"), self.headers
        error: dict[str, Any] = json.loads(self.body)["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        return error


async def open_raw(bridge: Bridge) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, _, port = bridge.base_url.removeprefix("http://").rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def read_response(reader: asyncio.StreamReader, within: float = 10.0) -> RawResponse:
    """One response with a content-length body (all the bridge's error answers have one)."""
    async with asyncio.timeout(within):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return RawResponse(int(status_line.split(" ")[1]), headers, body)


async def read_to_close(reader: asyncio.StreamReader, within: float = 10.0) -> bytes:
    """Everything until the bridge closes the connection (EOF or reset)."""
    chunks: list[bytes] = []
    async with asyncio.timeout(within):
        try:
            while chunk := await reader.read(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)
