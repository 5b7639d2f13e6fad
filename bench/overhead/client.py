"""Cheap load-generator clients: raw HTTP/1.1 keep-alive connections and grpc.aio stubs.

The load generator shares two cores with four server processes, so it must cost little: no
HTTP library, no JSON parsing of replies. An HTTP connection writes a prepared request and reads
the response head and body (Content-Length or chunked) off an asyncio stream. Streaming replies
are timed per content chunk by counting a content marker in each received piece, so a reply is
never parsed: `{"response":"<non-empty>` upstream, `"delta":{"content":"<non-empty>` from the
bridge (the role chunk's `"content":""` does not count).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Final

import grpc

from native1api.gateway.v1 import chat_pb2, gateway_service_pb2, gateway_service_pb2_grpc

UPSTREAM_CONTENT: Final = b'{"response":"'
BRIDGE_CONTENT: Final = b'"delta":{"content":"'
_QUOTE: Final = ord('"')


@dataclass(slots=True)
class Sample:
    """One request: total latency, time to the first content chunk and the gaps between chunks."""

    latency: float
    ttft: float = 0.0
    gaps: list[float] = field(default_factory=list)
    chunks: int = 0


class BadReply(Exception):
    """The reply was not a 200 with the expected content."""


def count_content(data: bytes, marker: bytes) -> int:
    """How many non-empty content deltas `data` holds (a marker followed by anything but `"`)."""
    count = 0
    start = data.find(marker)
    width = len(marker)
    while start >= 0:
        after = start + width
        if after < len(data) and data[after] != _QUOTE:
            count += 1
        start = data.find(marker, after)
    return count


def http_request(url_path: str, host: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = [f"POST {url_path} HTTP/1.1", f"host: {host}", f"content-length: {len(body)}"]
    head += [f"{key}: {value}" for key, value in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class HttpConnection:
    """One keep-alive HTTP/1.1 connection that sends one prepared request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def _head(self) -> tuple[int, int | None]:
        """(status, content length or None for chunked)."""
        raw = await self._reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length: int | None = None
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if not chunked and length is None:
            raise BadReply("reply without Content-Length or chunked framing")
        return status, None if chunked else length

    async def _next_chunk(self) -> bytes:
        """One piece of a chunked body; b"" at its end."""
        size_line = await self._reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0], 16)
        data = await self._reader.readexactly(size + 2)
        return data[:-2]

    async def unary(self, request: bytes) -> Sample:
        started = time.perf_counter()
        self._writer.write(request)
        status, length = await self._head()
        if length is not None:
            body = await self._reader.readexactly(length)
        else:
            parts = []
            while piece := await self._next_chunk():
                parts.append(piece)
            body = b"".join(parts)
        latency = time.perf_counter() - started
        if status != 200:
            raise BadReply(f"HTTP {status}: {body[:300]!r}")
        return Sample(latency)

    async def stream(self, request: bytes, marker: bytes, expect_chunks: int) -> Sample:
        perf = time.perf_counter
        started = perf()
        self._writer.write(request)
        status, length = await self._head()
        if length is not None:  # an error answered as plain JSON
            body = await self._reader.readexactly(length)
            raise BadReply(f"HTTP {status}: {body[:300]!r}")
        first = last = 0.0
        chunks = 0
        gaps: list[float] = []
        tail = b""
        while piece := await self._next_chunk():
            now = perf()
            found = count_content(piece, marker)
            if found:
                if chunks == 0:
                    first = now
                else:
                    gaps.append(now - last)
                    gaps.extend([0.0] * (found - 1))  # delivered together: no gap between them
                chunks += found
                last = now
            tail = piece[-16:]
        latency = perf() - started
        if status != 200 or chunks != expect_chunks or not tail.endswith(b"[DONE]\n\n"):
            raise BadReply(f"HTTP {status}, {chunks} content chunks, ends {tail!r}")
        return Sample(latency, first - started, gaps, chunks)


class GrpcClient:
    """GatewayService over one grpc.aio channel, the caller's token in the metadata."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._stub = gateway_service_pb2_grpc.GatewayServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def unary(
        self, request: gateway_service_pb2.CreateChatCompletionRequest, token: str
    ) -> Sample:
        metadata = (("authorization", f"Bearer {token}"),)
        started = time.perf_counter()
        reply = await self._stub.CreateChatCompletion(request, metadata=metadata)
        latency = time.perf_counter() - started
        if not reply.completion.choices:
            raise BadReply("a completion without choices")
        return Sample(latency)

    async def stream(
        self,
        request: gateway_service_pb2.StreamChatCompletionRequest,
        token: str,
        expect_chunks: int,
    ) -> Sample:
        perf = time.perf_counter
        metadata = (("authorization", f"Bearer {token}"),)
        started = perf()
        call = self._stub.StreamChatCompletion(request, metadata=metadata)
        first = last = 0.0
        chunks = 0
        gaps: list[float] = []
        saw_finish = False
        async for message in call:
            now = perf()
            # With allow_batches, chunks that were ready together share a message.
            for chunk in (message.chunk, *message.more_chunks):
                choices = chunk.choices
                if not choices:
                    continue
                choice = choices[0]
                if choice.delta.content:
                    if chunks == 0:
                        first = now
                    else:
                        gaps.append(now - last)
                    chunks += 1
                    last = now
                if choice.finish_reason != chat_pb2.FINISH_REASON_UNSPECIFIED:
                    saw_finish = True
        latency = perf() - started
        if chunks != expect_chunks or not saw_finish:
            raise BadReply(f"{chunks} content chunks, finish seen: {saw_finish}")
        return Sample(latency, first - started, gaps, chunks)
