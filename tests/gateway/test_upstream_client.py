"""The pooled upstream client over real sockets: cookies, redirects, pools, keep-alive, closing.

Every test talks to a real HTTP server on loopback (tests/gateway/upstream_server.py) through
the production client (`upstream_http.make_client`) and, where it matters, a real adapter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from gateway_service import errors
from gateway_service.providers.base import UpstreamCall
from gateway_service.providers.openrouter import OpenRouter
from gateway_service.providers.together import Together
from gateway_service.upstream_http import (
    MAX_ERROR_BODY,
    Headers,
    HttpSettings,
    UpstreamClient,
    make_client,
    open_stream,
)
from native1api.gateway.v1 import chat_pb2
from rpc_common.openai import request_from_json
from rpc_common.status import RpcError
from tests.gateway.upstream_server import UpstreamServer, reply, sse_reply, upstream_server

KEY_ALICE = "tgp_v1_alice0123456789abcdef"
KEY_BOB = "tgp_v1_bob0123456789abcdefgh"
SETTINGS = HttpSettings(
    connect_timeout_seconds=2, read_timeout_seconds=5, total_timeout_seconds=10, max_retries=0
)


@pytest.fixture
async def http() -> AsyncIterator[UpstreamClient]:
    async with make_client(SETTINGS) as client:
        yield client


def call(key: str = KEY_ALICE) -> UpstreamCall:
    body = {"model": "client/model", "messages": [{"role": "user", "content": "hi"}]}
    return UpstreamCall(request_from_json(body).request, "vendor/model", key, True, "r")


def frame(content: str | None = None, finish: str | None = None, **extra: Any) -> bytes:
    chunk = {
        "id": "gen-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


ANSWER = (frame("Hel"), frame("lo"), frame("", "stop"), b"data: [DONE]\n\n")
COMPLETION = {
    "id": "c-1",
    "object": "chat.completion",
    "created": 1,
    "model": "vendor/model",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
}


async def text_of(stream: AsyncIterator[chat_pb2.ChatCompletionChunk]) -> str:
    return "".join([c.delta.content async for chunk in stream for c in chunk.choices])


async def drain(
    stream: AsyncIterator[chat_pb2.ChatCompletionChunk], sink: list[chat_pb2.ChatCompletionChunk]
) -> None:
    async for chunk in stream:
        sink.append(chunk)


# ---- cookies and redirects ------------------------------------------------------------------


async def test_cookies_are_never_kept_or_sent(
    upstream: UpstreamServer, http: UpstreamClient
) -> None:
    # Cloudflare sets `__cf_bm` on answers; one user's cookie must never ride on another's call.
    upstream.handler = reply(
        200, COMPLETION, headers={"set-cookie": "__cf_bm=abc; Path=/; HttpOnly"}
    )
    provider = Together(http, SETTINGS, upstream.base_url)
    await provider.complete(call(KEY_ALICE))
    await provider.complete(call(KEY_BOB))
    alice, bob = upstream.requests
    assert bob.headers["authorization"] == f"Bearer {KEY_BOB}"
    assert "cookie" not in alice.headers and "cookie" not in bob.headers
    assert len(http.session.cookie_jar) == 0


async def test_redirects_are_not_followed(upstream: UpstreamServer, http: UpstreamClient) -> None:
    async with upstream_server() as elsewhere:
        upstream.handler = reply(302, {}, headers={"location": elsewhere.base_url + "/steal"})
        provider = Together(http, SETTINGS, upstream.base_url)
        with pytest.raises(RpcError) as caught:
            await provider.complete(call())
        with pytest.raises(RpcError):
            await provider.list_models(KEY_ALICE, byok=True)
    assert caught.value.reason == errors.UPSTREAM_ERROR
    assert not elsewhere.requests  # the Authorization header went nowhere else
    assert len(upstream.requests) == 2


# ---- pools ----------------------------------------------------------------------------------


async def test_a_full_pool_is_503_and_other_pools_are_unaffected(upstream: UpstreamServer) -> None:
    settings = HttpSettings(read_timeout_seconds=5, max_connections=2, pool_timeout_seconds=0.3)
    upstream.handler = sse_reply(*ANSWER[:2], hold=5)  # until closed below
    async with make_client(settings) as together_http, make_client(settings) as openrouter_http:
        together = Together(together_http, settings, upstream.base_url)
        openrouter = OpenRouter(openrouter_http, settings, upstream.base_url)
        held = [together.stream(call()) for _ in range(2)]
        for stream in held:
            await anext(stream)  # both of Together's connections are now busy
        assert together_http.slots_free == 0
        started = time.monotonic()
        with pytest.raises(RpcError) as caught:
            await together.complete(call())
        waited = time.monotonic() - started
        assert caught.value.reason == errors.UPSTREAM_OVERLOADED
        assert caught.value.metadata["code"] == "upstream_overloaded"
        assert 0.25 <= waited < 1.0
        # Another provider's pool is untouched.
        upstream.handler = reply(200, COMPLETION)
        completion = await openrouter.complete(call())
        assert completion.choices[0].message.content == "ok"
        # Closing the held streams frees their connections for the next request.
        for stream in held:
            await stream.aclose()
        assert together_http.slots_free == 2
        await together.complete(call())
        assert together_http.slots_free == 2


async def test_a_request_waits_for_a_connection_freed_in_time(upstream: UpstreamServer) -> None:
    settings = HttpSettings(read_timeout_seconds=5, max_connections=1, pool_timeout_seconds=2)
    upstream.handler = reply(200, COMPLETION)
    async with make_client(settings) as http:
        provider = Together(http, settings, upstream.base_url)
        upstream.handler = sse_reply(*ANSWER)
        first = provider.stream(call())
        await anext(first)
        second = asyncio.ensure_future(provider.complete(call()))
        await asyncio.sleep(0.2)
        assert not second.done()  # waiting for the one connection
        upstream.handler = reply(200, COMPLETION)
        await first.aclose()
        assert (await second).choices[0].message.content == "ok"


# ---- keep-alive ----------------------------------------------------------------------------


async def test_streams_reuse_the_connection_after_done(
    upstream: UpstreamServer, http: UpstreamClient
) -> None:
    upstream.handler = sse_reply(*ANSWER)
    provider = Together(http, SETTINGS, upstream.base_url)
    assert await text_of(provider.stream(call())) == "Hello"
    assert await text_of(provider.stream(call(KEY_BOB))) == "Hello"
    first, second = upstream.connections
    assert first == second
    # And whole answers too.
    upstream.handler = reply(200, COMPLETION)
    await provider.complete(call())
    assert upstream.connections[-1] == first


async def test_a_body_held_open_after_done_is_closed_not_waited_for(
    upstream: UpstreamServer, http: UpstreamClient
) -> None:
    upstream.handler = sse_reply(*ANSWER, hold=5)
    provider = Together(http, SETTINGS, upstream.base_url)
    started = time.monotonic()
    assert await text_of(provider.stream(call())) == "Hello"
    assert time.monotonic() - started < 1.5  # the drain gives up after a quarter second
    await upstream.wait_closed(upstream.connections[0])
    upstream.handler = sse_reply(*ANSWER)
    assert await text_of(provider.stream(call())) == "Hello"
    assert upstream.connections[1] != upstream.connections[0]


# ---- closing ------------------------------------------------------------------------------


async def test_closing_a_stream_closes_the_upstream_connection(
    upstream: UpstreamServer, http: UpstreamClient
) -> None:
    upstream.handler = sse_reply(*(frame(f"t{i}") for i in range(200)), delay=0.02)
    provider = Together(http, SETTINGS, upstream.base_url)
    stream = provider.stream(call())
    await anext(stream)
    await stream.aclose()  # what gRPC does when the client cancels
    await upstream.wait_closed(upstream.connections[0])
    assert http.slots_free == SETTINGS.max_connections


async def test_cancelling_before_the_first_byte_closes_the_connection(
    upstream: UpstreamServer, http: UpstreamClient
) -> None:
    arrived = asyncio.Event()

    async def silent(request: web.Request) -> web.StreamResponse:
        arrived.set()
        await asyncio.sleep(10)
        return web.Response()

    upstream.handler = silent
    provider = Together(http, SETTINGS, upstream.base_url)
    task = asyncio.ensure_future(provider.complete(call()))
    await asyncio.wait_for(arrived.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await upstream.wait_closed(upstream.connections[0])
    assert http.slots_free == SETTINGS.max_connections


async def test_closed_client_closes_its_connections(upstream: UpstreamServer) -> None:
    upstream.handler = sse_reply(*ANSWER[:1], hold=10)
    http = make_client(SETTINGS)
    provider = Together(http, SETTINGS, upstream.base_url)
    stream = provider.stream(call())
    await anext(stream)
    await http.aclose()  # what the gateway does on SIGTERM, after its grace period
    await upstream.wait_closed(upstream.connections[0])
    with pytest.raises(RpcError):
        await anext(stream)
    await stream.aclose()


# ---- errors ---------------------------------------------------------------------------------


async def test_error_bodies_are_read_bounded(
    upstream: UpstreamServer, http: UpstreamClient
) -> None:
    upstream.handler = reply(500, raw=b"x" * (4 * MAX_ERROR_BODY))
    seen: list[int] = []

    def parse(status: int, body: bytes, headers: Headers) -> errors.UpstreamHTTPError:
        seen.append(len(body))
        return errors.UpstreamHTTPError(status, "boom")

    with pytest.raises(RpcError):
        await open_stream(
            http,
            "POST",
            upstream.base_url + "/x",
            headers={},
            body=b"{}",
            provider="together",
            byok=True,
            parse_error=parse,
            settings=SETTINGS,
        )
    assert seen == [MAX_ERROR_BODY]
    assert http.slots_free == SETTINGS.max_connections


async def test_retry_after_ms_is_honoured(upstream: UpstreamServer) -> None:
    settings = HttpSettings(read_timeout_seconds=5, retry_after_cap_seconds=1)
    answers = [
        web.Response(status=503, headers={"retry-after-ms": "150"}),
        web.Response(body=orjson.dumps(COMPLETION)),
    ]

    async def handle(request: web.Request) -> web.StreamResponse:
        return answers.pop(0)

    upstream.handler = handle
    async with make_client(settings) as http:
        provider = Together(http, settings, upstream.base_url)
        started = time.monotonic()
        completion = await provider.complete(call())
    assert completion.choices[0].message.content == "ok"
    assert time.monotonic() - started >= 0.15
    assert len(upstream.requests) == 2


async def test_a_cut_body_is_an_interrupted_stream(
    upstream: UpstreamServer, http: UpstreamClient
) -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(ANSWER[0])
        assert request.transport is not None
        request.transport.close()  # mid-body, before the chunked body's end
        return response

    upstream.handler = cut
    provider = Together(http, SETTINGS, upstream.base_url)
    received: list[chat_pb2.ChatCompletionChunk] = []
    with pytest.raises(RpcError) as caught:
        await drain(provider.stream(call()), received)
    assert caught.value.reason == errors.UPSTREAM_STREAM_INTERRUPTED
    assert len(received) == 1
    assert http.slots_free == SETTINGS.max_connections
