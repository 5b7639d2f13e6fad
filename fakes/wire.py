"""Shared wire helpers for the fakes: SSE framing, JSON bodies and the timed ASGI `Reply`.

Every fake endpoint builds a `Reply`: a status, headers and a list of `Frame`s (body pieces, some
of them marked as *content* chunks). `Reply.__call__` is a raw ASGI response that

- waits `delay_first` seconds before the status line (a slow first byte),
- waits `chunk_delay` seconds between content chunks,
- abruptly closes the TCP connection after `cut_after` content chunks (by raising
  `ConnectionCut`: uvicorn then closes the transport mid-body, so the client sees an incomplete
  chunked body, never a clean end; `fakes.server` silences the resulting log line),
- watches ASGI ``receive()`` for ``http.disconnect`` while it waits or streams, and reports a
  client that went away early to its observer (tests assert the fake noticed within a second).

A plain immediate response skips the watcher task entirely: the Workers AI fake is also the
benchmark upstream, so the hot path stays a couple of ``send`` calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal, Protocol

import orjson
from starlette.types import Receive, Scope, Send

__all__ = [
    "SSE_DONE",
    "ConnectionCut",
    "Frame",
    "Reply",
    "ReplyObserver",
    "json_bytes",
    "json_reply",
    "sse_comment",
    "sse_data",
    "sse_headers",
    "text_reply",
]

SSE_DONE = b"data: [DONE]\n\n"


class ConnectionCut(Exception):
    """Raised inside a Reply to make uvicorn drop the connection in the middle of the body."""


class ReplyObserver(Protocol):
    """How a Reply reports the way it ended (implemented by `fakes.control`)."""

    def on_complete(self) -> None: ...

    def on_error_frame(self) -> None: ...

    def on_cut(self, content_chunks: int) -> None: ...

    def on_disconnect(
        self, phase: Literal["before_headers", "streaming"], content_chunks: int
    ) -> None: ...


class Frame:
    """One body write. `content` frames count for `cut_after`, `error_after` and `chunk_delay`."""

    __slots__ = ("content", "data")

    def __init__(self, data: bytes, content: bool = False) -> None:
        self.data = data
        self.content = content

    def __repr__(self) -> str:
        return f"Frame({self.data!r}, content={self.content})"


def json_bytes(obj: Any, *, pretty: bool = False) -> bytes:
    """Serialise with orjson (compact, or 2-space indented like Together's non-stream bodies)."""
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2) if pretty else orjson.dumps(obj)


def sse_data(obj: Any) -> bytes:
    """One ``data: <compact json>`` event, no ``event:`` line (what all three providers send)."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def sse_comment(text: str) -> bytes:
    """An SSE comment line such as OpenRouter's ``: OPENROUTER PROCESSING``."""
    return b": " + text.encode() + b"\n\n"


def sse_headers(
    content_type: bytes = b"text/event-stream", *extra: tuple[bytes, bytes]
) -> list[tuple[bytes, bytes]]:
    """Headers of an SSE response."""
    return [(b"content-type", content_type), *extra]


def _retry_after(value: float | None) -> list[tuple[bytes, bytes]]:
    if value is None:
        return []
    text = str(int(value)) if float(value).is_integer() else repr(value)
    return [(b"retry-after", text.encode())]


def json_reply(
    status: int,
    obj: Any,
    *,
    headers: Sequence[tuple[bytes, bytes]] = (),
    retry_after: float | None = None,
    pretty: bool = False,
    prefix: bytes = b"",
) -> Reply:
    """A JSON body. `prefix` is sent as a separate first write (OpenRouter's whitespace padding)."""
    body = json_bytes(obj, pretty=pretty)
    hdrs = [(b"content-type", b"application/json"), *headers, *_retry_after(retry_after)]
    if prefix:
        # Padding and JSON go out as two writes on a chunked body, as OpenRouter streams them.
        return Reply(status, hdrs, [Frame(prefix), Frame(body, content=True)], stream=False)
    return Reply(status, hdrs, [Frame(body, content=True)], stream=False)


def text_reply(
    status: int,
    text: str,
    *,
    headers: Sequence[tuple[bytes, bytes]] = (),
    retry_after: float | None = None,
) -> Reply:
    """A ``text/plain`` body (Workers AI's bare 5xx, Together's plain-text errors)."""
    hdrs = [(b"content-type", b"text/plain; charset=utf-8"), *headers, *_retry_after(retry_after)]
    return Reply(status, hdrs, [Frame(text.encode(), content=True)], stream=False)


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    # The handler already consumed the request body, so the next message uvicorn delivers is
    # http.disconnect: either the client left, or (after we finish) the response completed.
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return


async def _sleep_unless_gone(seconds: float, gone: asyncio.Event) -> bool:
    """Sleep `seconds`; return True early if the client disconnected meanwhile."""
    if gone.is_set():
        return True
    try:
        async with asyncio.timeout(seconds):
            await gone.wait()
    except TimeoutError:
        return False
    return True


class Reply:
    """A planned response; see the module docstring. Starlette routes use it as a raw ASGI app."""

    __slots__ = (
        "chunk_delay",
        "cut_after",
        "delay_first",
        "error_after",
        "error_frames",
        "frames",
        "headers",
        "observer",
        "status",
        "stream",
    )

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        frames: list[Frame],
        *,
        stream: bool,
    ) -> None:
        self.status = status
        self.headers = headers
        self.frames = frames
        self.stream = stream
        self.delay_first = 0.0
        self.chunk_delay = 0.0
        self.cut_after: int | None = None
        self.error_after: int | None = None
        self.error_frames: list[Frame] = []
        self.observer: ReplyObserver | None = None

    def timed(
        self,
        *,
        delay_first: float | None = None,
        chunk_delay: float | None = None,
        cut_after: int | None = None,
    ) -> Reply:
        """Set timing and cut knobs (None keeps the current value); returns self for chaining."""
        if delay_first is not None:
            self.delay_first = delay_first
        if chunk_delay is not None:
            self.chunk_delay = chunk_delay
        if cut_after is not None:
            self.cut_after = cut_after
        return self

    def fail_midstream(self, after: int, frames: list[Frame]) -> Reply:
        """After `after` content chunks, send `frames` (the provider's error chunk) and end."""
        self.error_after = after
        self.error_frames = frames
        return self

    # ---- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        frames = self._planned_frames()
        if not (self.delay_first or self.chunk_delay or self.stream or self.cut_after is not None):
            await self._send_plain(send, frames)
            return
        gone = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(receive, gone))
        try:
            await self._send_watched(send, frames, gone)
        finally:
            watcher.cancel()

    def _planned_frames(self) -> list[Frame]:
        frames = self.frames
        if self.error_after is not None:
            frames = _truncate_after_content(frames, self.error_after) + self.error_frames
        if self.cut_after is not None and not self.stream:
            # A non-streaming body is one content frame; cut it in the middle of the JSON.
            frames = _split_content_in_half(frames)
        return frames

    def _start_message(self, frames: list[Frame]) -> dict[str, Any]:
        headers = self.headers
        if not self.stream and self.cut_after is None and len(frames) == 1:
            headers = [*headers, (b"content-length", str(len(frames[0].data)).encode())]
        return {"type": "http.response.start", "status": self.status, "headers": headers}

    async def _send_plain(self, send: Send, frames: list[Frame]) -> None:
        await send(self._start_message(frames))
        body = frames[0].data if len(frames) == 1 else b"".join(f.data for f in frames)
        await send({"type": "http.response.body", "body": body, "more_body": False})
        self._notify_end()

    async def _send_watched(self, send: Send, frames: list[Frame], gone: asyncio.Event) -> None:
        observer = self.observer
        if self.delay_first and await _sleep_unless_gone(self.delay_first, gone):
            if observer is not None:
                observer.on_disconnect("before_headers", 0)
            return
        await send(self._start_message(frames))
        cut_after = self.cut_after
        if cut_after is not None and not self.stream:
            # A non-streaming body was split in two halves: cut after the first one at most.
            cut_after = min(cut_after, 1)
        cut_before = _cut_index(frames, cut_after)
        content_sent = 0
        for frame in frames if cut_before is None else frames[:cut_before]:
            pause = self.chunk_delay if frame.content and content_sent else 0.0
            if (await _sleep_unless_gone(pause, gone)) if pause else gone.is_set():
                if observer is not None:
                    observer.on_disconnect("streaming", content_sent)
                return
            await send({"type": "http.response.body", "body": frame.data, "more_body": True})
            if frame.content:
                content_sent += 1
        if cut_before is not None:
            if observer is not None:
                observer.on_cut(content_sent)
            raise ConnectionCut(f"fake cut the connection after {content_sent} content chunks")
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self._notify_end()

    def _notify_end(self) -> None:
        if self.observer is None:
            return
        if self.error_after is not None:
            self.observer.on_error_frame()
        else:
            self.observer.on_complete()


def _content_end(frames: list[Frame], count: int) -> int:
    """Index just past the `count`-th content frame (past the last one if there are fewer).

    For ``count == 0`` it is the index of the first content frame, so a stream's preamble (an
    SSE comment, a role-only chunk) still goes out.
    """
    seen = 0
    end = 0
    for index, frame in enumerate(frames):
        if frame.content:
            if seen == count:
                return index
            seen += 1
            end = index + 1
    return end if count else len(frames)


def _truncate_after_content(frames: list[Frame], count: int) -> list[Frame]:
    """Frames up to the `count`-th content chunk; the finish, usage and [DONE] frames are dropped."""
    return frames[: _content_end(frames, count)]


def _split_content_in_half(frames: list[Frame]) -> list[Frame]:
    out: list[Frame] = []
    for frame in frames:
        if frame.content and len(frame.data) > 1:
            half = len(frame.data) // 2
            out += [Frame(frame.data[:half], content=True), Frame(frame.data[half:], content=True)]
        else:
            out.append(frame)
    return out


def _cut_index(frames: list[Frame], cut_after: int | None) -> int | None:
    """Index of the frame before which the connection is cut, or None for no cut.

    The cut lands right before the (cut_after+1)-th content frame; when there are fewer content
    frames, right after the last one (so the stream's usage frame and ``[DONE]`` never arrive).
    """
    if cut_after is None:
        return None
    return _content_end(frames, cut_after)
