"""Edge cases of the shared OpenAI-shaped core that the fakes do not produce.

Served by a real local HTTP server (tests/gateway/upstream_server.py) with hand-written bodies in the providers' recorded shapes
(reference/wire-formats.md §3, §4), so each case is exact; the conformance against the fakes is
in test_openrouter.py and test_together.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import orjson
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway_service import errors
from gateway_service.providers import openai_compat
from gateway_service.providers.base import Provider, UpstreamCall
from gateway_service.providers.openai_compat import OpenAICompatProvider
from gateway_service.providers.openrouter import OpenRouter
from gateway_service.providers.together import Together
from gateway_service.upstream_http import HttpSettings, UpstreamClient, make_client
from native1api.gateway.v1 import chat_pb2
from rpc_common.openai import request_from_json
from rpc_common.status import RpcError
from tests.gateway.upstream_server import Handler, UpstreamServer, reply

KEY = "sk-or-v1-0123456789abcdef0123456789"
SETTINGS = HttpSettings(max_retries=0)
SSE = {"content-type": "text/event-stream"}
NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


@pytest.fixture
async def http() -> AsyncIterator[UpstreamClient]:
    async with make_client(SETTINGS) as client:
        yield client


Make = Callable[[type[OpenAICompatProvider], Handler], OpenAICompatProvider]


@pytest.fixture
def make(upstream: UpstreamServer, http: UpstreamClient) -> Make:
    """Build a provider of a kind on the test server, which answers with `handler`."""

    def build(kind: type[OpenAICompatProvider], handler: Handler) -> OpenAICompatProvider:
        upstream.handler = handler
        return kind(http, SETTINGS, upstream.base_url + "/v1")

    return build


def offline(kind: type[OpenAICompatProvider]) -> OpenAICompatProvider:
    """A provider for the pure parts (request bodies, error parsing): never sends anything."""
    return kind(make_client(SETTINGS), SETTINGS, "http://127.0.0.1:9/v1")


def sse(*frames: Any, done: bool = True) -> bytes:
    parts = [f if isinstance(f, bytes) else b"data: " + orjson.dumps(f) + b"\n\n" for f in frames]
    return b"".join(parts) + (b"data: [DONE]\n\n" if done else b"")


def call(key: str = KEY, **extra: Any) -> UpstreamCall:
    body = {"model": "client/model", "messages": [{"role": "user", "content": "hi"}], **extra}
    return UpstreamCall(request_from_json(body).request, "vendor/model", key, True, "r")


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    delta = {"role": "assistant", "content": content}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {
        "id": "gen-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "choices": [choice],
        **extra,
    }


USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


async def collect(
    provider: Provider, upstream_call: UpstreamCall
) -> list[chat_pb2.ChatCompletionChunk]:
    return [c async for c in provider.stream(upstream_call)]


def test_adapters_satisfy_the_provider_protocol() -> None:
    http = make_client(SETTINGS)  # no connection is made until a request is sent
    providers: list[Provider] = [OpenRouter(http, SETTINGS), Together(http, SETTINGS)]
    assert [p.name for p in providers] == ["openrouter", "together"]


def test_both_token_limits_send_the_smaller() -> None:
    provider = offline(Together)
    body = provider.build_body(call(max_tokens=30, max_completion_tokens=20), stream=False)
    assert body["max_tokens"] == 20 and "max_completion_tokens" not in body


def test_openrouter_usage_must_be_an_object() -> None:
    provider = offline(OpenRouter)
    with pytest.raises(RpcError) as caught:
        provider.build_body(call(usage=True), stream=True)
    assert caught.value.metadata["param"] == "usage"


# ---- errors reported with a 200 -------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ({"code": 429, "message": "Rate limit exceeded"}, errors.RATE_LIMITED),
        ({"code": 401, "message": "User not found."}, errors.BYOK_KEY_REJECTED),
        ({"code": 502, "message": "Provider returned error"}, errors.UPSTREAM_ERROR),
        ({"code": "server_error", "message": "boom"}, errors.UPSTREAM_ERROR),
    ],
)
async def test_padded_200_body_with_an_error(
    error: dict[str, Any], reason: str, make: Make
) -> None:
    # OpenRouter commits the 200 with keep-alive padding before it knows the outcome (§3.3).
    raw = b"\n         \n\n" + orjson.dumps({"error": error, "user_id": "user_1"})
    provider = make(OpenRouter, reply(200, raw=raw))
    with pytest.raises(RpcError) as caught:
        await provider.complete(call())
    assert caught.value.reason == reason


async def test_error_as_the_first_stream_frame(make: Make) -> None:
    frame = {**chunk("", "error"), "error": {"code": 402, "message": "Insufficient credits"}}
    provider = make(
        OpenRouter, reply(200, raw=sse(b": OPENROUTER PROCESSING\n\n", frame), headers=SSE)
    )
    with pytest.raises(RpcError) as caught:
        await collect(provider, call())
    assert caught.value.reason == errors.INSUFFICIENT_QUOTA


async def test_finish_reason_error_without_an_error_object(make: Make) -> None:
    provider = make(OpenRouter, reply(200, raw=sse(chunk("a"), chunk("", "error")), headers=SSE))
    with pytest.raises(RpcError) as caught:
        await collect(provider, call())
    assert caught.value.message.endswith("The provider ended the response with an error.")
    assert caught.value.reason == errors.UPSTREAM_STREAM_INTERRUPTED


async def test_non_sse_reply_to_a_stream_request(make: Make) -> None:
    error = {"error": {"code": 429, "message": "slow down"}}
    provider = make(OpenRouter, reply(200, error, headers={"content-type": "application/json"}))
    with pytest.raises(RpcError) as caught:
        await collect(provider, call())
    assert caught.value.reason == errors.RATE_LIMITED
    provider = make(
        Together, reply(200, raw=b"<html>oops</html>", headers={"content-type": "text/html"})
    )
    with pytest.raises(RpcError) as caught:
        await collect(provider, call())
    assert caught.value.reason == errors.UPSTREAM_PROTOCOL_ERROR


# ---- stream shapes --------------------------------------------------------------------------


async def test_repeated_finish_chunk_adds_no_content(make: Make) -> None:
    # A usage chunk repeating the finish choice, here even with text in it: nothing after a
    # choice's finish may reach the client, the usage must.
    frames = sse(chunk("Hi"), chunk("", "stop"), {**chunk("Hi", "stop"), "usage": USAGE})
    provider = make(OpenRouter, reply(200, raw=frames, headers=SSE))
    chunks = await collect(provider, call())
    assert "".join(c.delta.content for ch in chunks for c in ch.choices) == "Hi"
    assert not chunks[-1].choices and chunks[-1].usage.total_tokens == 5


async def test_clean_end_without_done_is_interrupted(make: Make) -> None:
    provider = make(Together, reply(200, raw=sse(chunk("Hi"), done=False), headers=SSE))
    with pytest.raises(RpcError) as caught:
        await collect(provider, call())
    assert caught.value.reason == errors.UPSTREAM_STREAM_INTERRUPTED


@pytest.mark.parametrize("frame", [b"data: {not json\n\n", b'data: {"choices": 3}\n\n'])
async def test_unreadable_chunk_is_a_protocol_error(frame: bytes, make: Make) -> None:
    provider = make(Together, reply(200, raw=frame, headers=SSE))
    with pytest.raises(RpcError) as caught:
        await collect(provider, call())
    assert caught.value.reason == errors.UPSTREAM_PROTOCOL_ERROR
    assert caught.value.code == grpc.StatusCode.INTERNAL


@pytest.mark.parametrize("raw", [b"", b"{", b'{"choices": []}'])
async def test_unreadable_completion_is_a_protocol_error(raw: bytes, make: Make) -> None:
    provider = make(Together, reply(200, raw=raw))
    with pytest.raises(RpcError) as caught:
        await provider.complete(call())
    assert caught.value.reason == errors.UPSTREAM_PROTOCOL_ERROR


# ---- error envelopes ------------------------------------------------------------------------


def test_openrouter_parse_error() -> None:
    provider = offline(OpenRouter)
    bad_model = orjson.dumps({"error": {"message": "bad/x is not a valid model ID", "code": 400}})
    failure = provider.parse_error(400, bad_model, NO_HEADERS)
    assert failure.provider_code == "model_not_available" and failure.status == 400
    mapped = errors.from_upstream_status("openrouter", failure, byok=True)
    assert mapped.reason == errors.MODEL_NOT_FOUND
    flagged = orjson.dumps({"error": {"message": "flagged", "code": 403, "metadata": {}}})
    failure = provider.parse_error(403, flagged, NO_HEADERS)
    assert errors.from_upstream_status("openrouter", failure, byok=True).reason == (
        errors.CONTENT_BLOCKED
    )


def test_together_parse_error() -> None:
    provider = offline(Together)
    body = {
        "id": "omJGRXw-2kFHot-a046",
        "error": {
            "message": "Unable to access model bad model.",
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_available",
        },
    }
    failure = provider.parse_error(404, orjson.dumps(body), NO_HEADERS)
    assert (failure.status, failure.provider_code) == (404, "model_not_available")
    failure = provider.parse_error(401, b'{"error":{"message":"Unauthorized"}}', NO_HEADERS)
    assert failure.message == "Unauthorized"
    assert errors.from_upstream_status("together", failure, byok=True).reason == (
        errors.BYOK_KEY_REJECTED
    )
    credit = b'{"error":{"message":"Credit limit exceeded","type":"credit_limit"}}'
    assert provider.parse_error(402, credit, NO_HEADERS).provider_code == "credit_limit"
    failure = provider.parse_error(503, b"The server is overloaded", NO_HEADERS)
    assert failure.message == "The server is overloaded"
    assert provider.parse_error(502, b"<html>bad gateway</html>", NO_HEADERS).message == (
        "HTTP 502"
    )


async def test_a_key_echoed_by_the_provider_is_scrubbed(make: Make) -> None:
    body = {"error": {"message": f"Key {KEY} is not allowed here", "code": 400}}
    provider = make(OpenRouter, reply(400, body))
    with pytest.raises(RpcError) as caught:
        await provider.complete(call())
    assert KEY not in caught.value.message and "[REDACTED]" in caught.value.message


async def test_a_key_that_cannot_be_a_header_is_rejected_locally(
    make: Make, upstream: UpstreamServer
) -> None:
    provider = make(Together, reply(200, {}))
    for bad in ("tgp_v1_abc\r\nx-evil: 1", "tgp_v1_é", "two words"):
        with pytest.raises(RpcError) as caught:
            await provider.complete(call(key=bad))
        assert caught.value.reason == errors.BYOK_KEY_REJECTED
        assert bad not in caught.value.message
    assert not upstream.requests


# ---- model list cache -----------------------------------------------------------------------


async def test_models_cache_is_keyed_by_hash_and_bounded(
    monkeypatch: pytest.MonkeyPatch, make: Make, upstream: UpstreamServer
) -> None:
    monkeypatch.setattr(openai_compat, "MODELS_CACHE_MAX_KEYS", 2)
    provider = make(Together, reply(200, [{"id": "a/b", "type": "chat", "created": 5}]))
    for key in ("k1", "k2", "k1", "k3", "k1"):
        models = await provider.list_models(key, byok=True)
        assert [(m.id, m.owned_by, m.created) for m in models] == [("a/b", "a", 5)]
    # k1 was evicted by k3 (least recently stored first), so it was fetched twice.
    seen = [request.headers["authorization"] for request in upstream.requests]
    assert seen == ["Bearer k1", "Bearer k2", "Bearer k3", "Bearer k1"]
    cache = provider._models_cache
    assert len(cache) == 2
    assert set(cache) == {hashlib.sha256(k.encode()).digest() for k in ("k3", "k1")}


async def test_models_cache_expires(make: Make, upstream: UpstreamServer) -> None:
    provider = make(OpenRouter, reply(200, {"data": [{"id": "x/y", "created": 1}]}))
    await provider.list_models("k", byok=True)
    await provider.list_models("k", byok=True)
    assert len(upstream.requests) == 1
    digest = hashlib.sha256(b"k").digest()
    provider._models_cache[digest] = (0.0, provider._models_cache[digest][1])  # expired
    models = await provider.list_models("k", byok=True)
    assert len(upstream.requests) == 2 and [(m.id, m.owned_by) for m in models] == [("x/y", "x")]


@pytest.mark.parametrize("kind", [OpenRouter, Together])
@pytest.mark.parametrize("raw", [b'{"models": []}', b"[", b'{"data": 1}'])
async def test_unreadable_model_list(
    kind: type[OpenAICompatProvider], raw: bytes, make: Make
) -> None:
    provider = make(kind, reply(200, raw=raw))
    with pytest.raises(RpcError) as caught:
        await provider.list_models("k", byok=True)
    assert caught.value.reason == errors.UPSTREAM_PROTOCOL_ERROR
    assert not provider._models_cache
