"""`StreamChatCompletion` -> OpenAI server-sent events, exactly as SPEC §2 describes.

The response is its own ASGI app (not Starlette's StreamingResponse) because the head must be
held back until the first gRPC message, an error, or the end of the hold window:

- first message in the window: commit `200` with `x-native1api-provider` and stream;
- error in the window: a normal non-2xx JSON error, as if the call had been unary;
- window over: commit `200`, send `: ping` at once, keep waiting.

Three pieces run per stream, joined by a small bounded queue (its bound is the backpressure
that reaches the gateway over gRPC flow control when a client reads slowly):

- the *reader* task pulls gRPC messages (`call.read()`) and ends with EOF or the error;
- a *timer* (loop callbacks, no task) drops the hold-window and keep-alive sentinels into the
  queue, so the per-chunk path has no timeout bookkeeping at all;
- the *watcher* task waits for `http.disconnect` and cancels the gRPC call, which closes the
  upstream connection in the gateway.

The writer (this app's own coroutine) turns queue items into bytes; everything that can wait in
the queue at once is sent in one write. The route asks the gateway for batches
(`allow_batches`): a message may carry several chunks that were ready together (`chunk`, then
`more_chunks`), and all their frames go out in the same write. Frames are `data: <json>\n\n`,
never `event:` lines.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

import grpc
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from native1api.gateway.v1 import chat_pb2, gateway_service_pb2
from rest_bridge import errors
from rest_bridge.disconnect import wait_for_disconnect
from rest_bridge.metrics import BridgeMetrics
from rest_bridge.providers import PROVIDER_HEADER, gateway_provider_name
from rest_bridge.ratelimit import state_headers
from rpc_common.openai import chunk_to_json_bytes

_LOGGER: Final = logging.getLogger(__name__)

_DATA: Final = b"data: "
_END: Final = b"\n\n"
_PING: Final = b": ping\n\n"
_DONE: Final = b"data: [DONE]\n\n"
_SSE_HEADERS: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # nginx (and compatible proxies) would otherwise buffer the stream.
    (b"x-accel-buffering", b"no"),
)
_QUEUE_SIZE: Final = 64

StreamCall = grpc.aio.UnaryStreamCall[
    gateway_service_pb2.StreamChatCompletionRequest,
    gateway_service_pb2.StreamChatCompletionResponse,
]
_Message = gateway_service_pb2.StreamChatCompletionResponse


class _Signal:
    """A queue sentinel."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_EOF: Final = _Signal("eof")  # the gateway ended the stream OK
_GONE: Final = _Signal("gone")  # the client disconnected
_HOLD_OVER: Final = _Signal("hold-over")  # the hold window passed without a message
_KEEPALIVE: Final = _Signal("keepalive")  # silence for a keep-alive interval


class ChatStream(Response):
    """The SSE response for one `StreamChatCompletion` call (already started by the route)."""

    def __init__(
        self,
        call: StreamCall,
        *,
        include_usage: bool,
        hold_seconds: float,
        keepalive_seconds: float,
        metrics: BridgeMetrics,
        started: float,
    ) -> None:
        # Response.__init__ would render a body; this response writes its own messages.
        self.status_code = 200
        self.background = None
        self.raw_headers = []  # the real head is built when the first message (or none) arrives
        self._call = call
        self._include_usage = include_usage
        self._hold = hold_seconds
        self._keepalive = keepalive_seconds
        self._metrics = metrics
        self._started = started
        self._provider = ""
        self._head: list[tuple[bytes, bytes]] = []  # x-ratelimit-* from initial metadata
        self._gone = False
        self._last_sent = 0.0
        self._timer: asyncio.TimerHandle | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue(_QUEUE_SIZE)
        reader = loop.create_task(self._read(queue))
        watcher = loop.create_task(self._watch(receive, queue))
        self._timer = loop.call_later(self._hold, _offer, queue, _HOLD_OVER)
        self._metrics.streams_in_flight.inc()
        try:
            first = await queue.get()
            if first is _GONE or self._gone:
                return
            if not isinstance(first, _Message) and first is not _HOLD_OVER:
                # An error (or an empty stream) before anything was sent: a plain JSON error.
                await self._failure(first).to_response()(scope, receive, send)
                return
            self._timer.cancel()
            await self._stream(first, queue, loop, send)
        finally:
            if self._timer is not None:
                self._timer.cancel()
            if not reader.done():
                self._call.cancel()  # client gone or we failed: stop the upstream too
                reader.cancel()
            watcher.cancel()
            self._metrics.streams_in_flight.dec()
            await asyncio.gather(reader, watcher, return_exceptions=True)

    async def _stream(
        self,
        first: Any,
        queue: asyncio.Queue[Any],
        loop: asyncio.AbstractEventLoop,
        send: Send,
    ) -> None:
        headers = [*_SSE_HEADERS, *self._head]
        if first is _HOLD_OVER:
            body = _PING  # commit now and show the client the connection is alive
        else:
            self._on_first(first)
            headers.append((PROVIDER_HEADER, self._provider.encode("ascii")))
            body = self._frame(first)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        self._last_sent = loop.time()
        self._timer = loop.call_at(self._last_sent + self._keepalive, self._tick, loop, queue)
        if body:
            await send({"type": "http.response.body", "body": body, "more_body": True})
        add = self._add
        while True:
            item = await queue.get()
            parts: list[bytes] = []
            while True:
                if isinstance(item, _Message):
                    if not self._provider:
                        self._on_first(item)
                    add(item.chunk, parts)
                    if item.more_chunks:  # a batch: chunks the gateway had ready together
                        for chunk in item.more_chunks:
                            add(chunk, parts)
                elif item is _KEEPALIVE:
                    if not parts:
                        parts.append(_PING)
                elif item is _EOF:
                    # An OK end with no message at all would be a broken gateway: say so.
                    parts.append(_DONE if self._provider else self._error_frame(item))
                    await send({"type": "http.response.body", "body": b"".join(parts)})
                    return
                elif item is _GONE:
                    return
                elif item is not _HOLD_OVER:  # an error after the head was committed
                    parts.append(self._error_frame(item))
                    await send({"type": "http.response.body", "body": b"".join(parts)})
                    return
                if queue.empty():
                    break
                item = queue.get_nowait()
            if self._gone:
                return
            if parts:
                self._last_sent = loop.time()
                await send(
                    {"type": "http.response.body", "body": b"".join(parts), "more_body": True}
                )

    def _on_first(self, message: _Message) -> None:
        self._provider = gateway_provider_name(message.provider)
        self._metrics.observe_first_chunk(self._provider, time.perf_counter() - self._started)

    def _frame(self, message: _Message) -> bytes:
        """One message's frames (a batch has several)."""
        parts: list[bytes] = []
        self._add(message.chunk, parts)
        for chunk in message.more_chunks:
            self._add(chunk, parts)
        return b"".join(parts)

    def _add(self, chunk: chat_pb2.ChatCompletionChunk, parts: list[bytes]) -> None:
        """Append one chunk's frame; the usage chunk is counted, and sent only when asked for."""
        if not chunk.choices and chunk.HasField("usage"):
            self._metrics.record_usage(self._provider, chunk.model, chunk.usage)
            if not self._include_usage:
                return
        parts += (_DATA, chunk_to_json_bytes(chunk), _END)

    def _failure(self, item: Any) -> errors.ApiError:
        if isinstance(item, errors.ApiError):
            return item
        if isinstance(item, grpc.aio.AioRpcError):
            return errors.from_grpc(item, backend="gateway")
        # `_EOF` before any message: the gateway broke its contract (role chunk first).
        _LOGGER.error("the gateway ended a stream without sending anything")
        return errors.ApiError(
            502, "The upstream ended the stream without an answer.", errors.SERVER_ERROR
        )

    def _error_frame(self, item: Any) -> bytes:
        # The SDK raises openai.APIError for any data frame with a truthy `error` key; no
        # finish_reason is faked, so the client knows the answer is incomplete.
        error = self._failure(item)
        # The access line says 200 (the head went out first), so say here how it really ended.
        _LOGGER.info("stream ended with an error frame: %d %s", error.status, error.code)
        return b"".join((_DATA, error.body(), _END))

    def _tick(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
        """Timer callback: ask for a ping after `keepalive` seconds without a write."""
        now = loop.time()
        due = self._last_sent + self._keepalive
        if now >= due:
            _offer(queue, _KEEPALIVE)
            due = now + self._keepalive
        self._timer = loop.call_at(due, self._tick, loop, queue)

    async def _read(self, queue: asyncio.Queue[Any]) -> None:
        call = self._call
        try:
            # The gateway sends its initial metadata before the first message, so the head
            # (built when the first message arrives) always has it.
            self._head = state_headers(await call.initial_metadata())
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    break
                await queue.put(message)
        except grpc.aio.AioRpcError as error:
            await queue.put(error)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            _LOGGER.exception("reading the gateway stream failed")
            await queue.put(errors.internal_error())
            return
        await queue.put(_EOF)

    async def _watch(self, receive: Receive, queue: asyncio.Queue[Any]) -> None:
        await wait_for_disconnect(receive)
        self._gone = True
        self._call.cancel()
        _offer(queue, _GONE)


def _offer(queue: asyncio.Queue[Any], item: _Signal) -> None:
    """Put a sentinel unless the queue already holds something (the writer is busy anyway)."""
    if queue.empty():
        queue.put_nowait(item)
