"""Requests the HTTP parser itself refuses still get the OpenAI error envelope."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import pytest

from tests.bridge.support import Bridge
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
