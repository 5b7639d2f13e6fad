"""Requests the HTTP parser itself refuses still get the OpenAI error envelope."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from urllib.parse import urlsplit

import pytest

from tests.bridge.support import Bridge, open_raw, read_response, read_to_close
from tests.support.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def raw_exchange(bridge: Bridge, request: bytes) -> bytes:
    url = urlsplit(bridge.base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)  # the bridge closes after the error
    finally:
        writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"FOO /v1/models HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nbad header line\r\n\r\n",
        b"\x00\x01\x02 garbage\r\n\r\n",
        b"GET http://[::1 HTTP/1.1\r\nhost: x\r\n\r\n",  # parsed, but not as a URL
    ],
)
async def test_unparseable_request_is_a_400_envelope(
    stack: Stack, bridge: Bridge, request_bytes: bytes
) -> None:
    raw = await raw_exchange(bridge, request_bytes)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"


# The header cap: counted where the bytes arrive, per request --------------------------------------

CAP = 32 * 1024  # the default BRIDGE_MAX_HEADER_BYTES, which the `bridge` fixture runs with


def head_of(size: int, path: bytes = b"/healthz") -> bytes:
    """A GET whose request line and headers are exactly `size` bytes."""
    prefix = b"GET " + path + b" HTTP/1.1\r\nhost: bridge\r\nx-pad: "
    suffix = b"\r\n\r\n"
    return prefix + b"a" * (size - len(prefix) - len(suffix)) + suffix


def refused(bridge: Bridge, reason: str) -> float:
    value = bridge.state.metrics.registry.get_sample_value(
        "native1api_bridge_http_connections_refused_total", {"reason": reason}
    )
    return value or 0.0


async def test_a_head_of_exactly_the_cap_is_served_and_one_byte_more_is_431(
    bridge: Bridge,
) -> None:
    assert bridge.settings.max_header_bytes == CAP
    reader, writer = await open_raw(bridge)
    try:
        writer.write(head_of(CAP))
        assert (await read_response(reader)).status == 200
    finally:
        writer.close()

    before = refused(bridge, "header_too_large")
    reader, writer = await open_raw(bridge)
    try:
        writer.write(head_of(CAP + 1))
        response = await read_response(reader)
        assert await read_to_close(reader) == b""
    finally:
        writer.close()
    assert response.status == 431
    assert response.headers["connection"] == "close"
    assert response.headers["cache-control"] == "no-store"
    error = response.error()
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "request_header_fields_too_large"
    assert error["param"] is None
    assert str(CAP) in error["message"]
    assert refused(bridge, "header_too_large") == before + 1


async def test_a_1_mib_header_is_refused_at_once(bridge: Bridge) -> None:
    reader, writer = await open_raw(bridge)
    started = time.monotonic()
    try:
        writer.write(head_of(1024 * 1024))  # the bridge stops reading long before the end
        response = await read_response(reader, within=5)
        elapsed = time.monotonic() - started
    finally:
        writer.close()
    assert response.status == 431
    assert elapsed < 1.0


async def test_a_head_trickled_in_small_pieces_is_counted_across_reads(bridge: Bridge) -> None:
    reader, writer = await open_raw(bridge)

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            head = head_of(2 * CAP)
            for start in range(0, len(head), 1024):
                writer.write(head[start : start + 1024])
                await writer.drain()
                await asyncio.sleep(0)

    task = asyncio.create_task(send())
    try:
        assert (await read_response(reader)).status == 431
    finally:
        task.cancel()
        writer.close()


@pytest.mark.parametrize("pipelined", [False, True], ids=["one-by-one", "pipelined"])
async def test_each_kept_alive_request_has_its_own_budget(bridge: Bridge, pipelined: bool) -> None:
    """Three heads of almost the cap each on one connection: ~3x the cap in all, all served."""
    head = head_of(CAP - 100)
    reader, writer = await open_raw(bridge)
    try:
        if pipelined:
            writer.write(head * 3)
            statuses = [(await read_response(reader)).status for _ in range(3)]
        else:
            statuses = []
            for _ in range(3):
                writer.write(head)
                statuses.append((await read_response(reader)).status)
    finally:
        writer.close()
    assert statuses == [200, 200, 200]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_in_the_same_read_as_its_head_is_not_counted_as_head(
    bridge: Bridge, chunked: bool
) -> None:
    body = b'{"model": "m", "messages": [], "pad": "' + b"a" * (4 * CAP) + b'"}'
    if chunked:
        framing = b"transfer-encoding: chunked\r\n\r\n"
        payload = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    else:
        framing = b"content-length: %d\r\n\r\n" % len(body)
        payload = body
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: bridge\r\n" + framing
    reader, writer = await open_raw(bridge)
    try:
        writer.write(head + payload + head_of(CAP - 100))  # and a pipelined GET after it
        first, second = await read_response(reader), await read_response(reader)
    finally:
        writer.close()
    assert first.status == 401  # no token: refused by the app, not by the edge
    assert second.status == 200


async def test_an_endless_chunked_trailer_is_refused_like_a_header(bridge: Bridge) -> None:
    """Trailers are header fields the parser buffers too: the same cap applies, even once the
    request has been answered (without a token, at once)."""
    before = refused(bridge, "header_too_large")
    reader, writer = await open_raw(bridge)

    async def send_trailer() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(b"0\r\nx-trailer: ")
            for _ in range(64):  # 1 MiB of one trailer value
                writer.write(b"a" * 16384)
                await writer.drain()
            writer.write(b"\r\n\r\n")
            await writer.drain()

    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: bridge\r\n"
        b"transfer-encoding: chunked\r\n\r\n2\r\n{}\r\n"
    )
    task = None
    try:
        assert (await read_response(reader)).status == 401
        task = asyncio.create_task(send_trailer())
        assert await read_to_close(reader, within=5) == b""  # closed by the cap, not kept alive
    finally:
        if task is not None:
            task.cancel()
        writer.close()
    assert refused(bridge, "header_too_large") == before + 1
