"""The OpenRouter adapter against the OpenRouter fake, over real HTTP with the pooled client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import orjson
import pytest

from fakes import openrouter as fake_openrouter
from fakes.app import FakeApp
from fakes.behavior import Behavior
from fakes.catalog import OPENROUTER_MODELS
from fakes.content import count_prompt_tokens, digest, reply_text
from fakes.server import serve_in_thread
from gateway_service import errors
from gateway_service.providers.base import UpstreamCall
from gateway_service.providers.openrouter import OpenRouter
from gateway_service.upstream_http import HttpSettings, make_client
from native1api.gateway.v1 import chat_pb2
from rpc_common.openai import request_from_json
from rpc_common.status import RpcError
from tests.gateway.providers.compat_support import collect, content, drain, finishes, make_call, run

KEY = "sk-or-v1-0123456789abcdef0123456789"
MODEL = "meta-llama/llama-3.2-3b-instruct"
CLIENT_MODEL = "@cf/meta/llama-3.2-3b-instruct"
REASONING_MODEL = "qwen/qwen3.5-35b-a3b"
CHUNKS = 4
CHAT = "/api/v1/chat/completions"
SETTINGS = HttpSettings(
    connect_timeout_seconds=2,
    read_timeout_seconds=5,
    total_timeout_seconds=10,
    retry_after_cap_seconds=1,
)
NO_RETRY = HttpSettings(read_timeout_seconds=5, max_retries=0)
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "schema": {
            "type": "object",
            "properties": {"word": {"type": "string"}, "count": {"type": "integer"}},
            "required": ["word", "count"],
        },
    },
}


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeApp, str]]:
    app = fake_openrouter.create_app(tokens=[KEY])
    with serve_in_thread(app) as base_url:
        yield app, base_url


@pytest.fixture
def app(fake: tuple[FakeApp, str]) -> FakeApp:
    fake[0].control.reset()
    fake[0].control.defaults = Behavior(chunks=CHUNKS, chunk_delay=0.0)
    return fake[0]


@pytest.fixture
async def provider(fake: tuple[FakeApp, str], app: FakeApp) -> AsyncIterator[OpenRouter]:
    http = make_client(SETTINGS)
    yield OpenRouter(http, SETTINGS, fake[1])
    await http.aclose()


@pytest.fixture
async def strict(fake: tuple[FakeApp, str], app: FakeApp) -> AsyncIterator[OpenRouter]:
    """The adapter without retries, to see each error status as it is mapped."""
    http = make_client(NO_RETRY)
    yield OpenRouter(http, NO_RETRY, fake[1])
    await http.aclose()


def call(
    prompt: str = "hello there", *, model: str = MODEL, key: str = KEY, **extra: Any
) -> UpstreamCall:
    return make_call(prompt, client_model=CLIENT_MODEL, model=model, key=key, **extra)


# ---- conformance ---------------------------------------------------------------------------


async def test_non_stream_reads_the_padded_body(provider: OpenRouter, app: FakeApp) -> None:
    completion = await provider.complete(call())
    choice = completion.choices[0]
    assert choice.message.content == reply_text("hello there", CHUNKS)
    assert choice.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert completion.model == CLIENT_MODEL  # not the fake's dated slug
    body = app.control.last.body
    assert completion.usage.prompt_tokens == count_prompt_tokens(body)
    assert completion.usage.completion_tokens == CHUNKS
    assert completion.usage.total_tokens == count_prompt_tokens(body) + CHUNKS


async def test_non_stream_request_body_and_headers(provider: OpenRouter, app: FakeApp) -> None:
    await provider.complete(call(max_completion_tokens=50))
    record = app.control.last
    assert record.body["model"] == MODEL
    assert record.body["stream"] is False
    assert record.body["usage"] == {"include": True}
    assert "stream_options" not in record.body
    assert record.body["max_tokens"] == 50 and "max_completion_tokens" not in record.body
    assert record.header("authorization") == f"Bearer {KEY}"
    assert record.notes["attribution"] == {
        "http-referer": "https://github.com/native1api",
        "x-openrouter-title": "Native1API",
        "x-title": "Native1API",
    }


async def test_attribution_headers_are_configurable(
    fake: tuple[FakeApp, str], app: FakeApp
) -> None:
    async with make_client(SETTINGS) as http:
        custom = OpenRouter(http, SETTINGS, fake[1], referer="https://example.test", title="Demo")
        await custom.complete(call())
    assert app.control.last.notes["attribution"]["http-referer"] == "https://example.test"
    assert app.control.last.notes["attribution"]["x-title"] == "Demo"


async def test_stream_conformance(provider: OpenRouter, app: FakeApp) -> None:
    chunks = await collect(provider, call())
    assert content(chunks) == reply_text("hello there", CHUNKS)
    # The usage chunk repeats the finish reason upstream; it reaches the servicer once.
    assert finishes(chunks) == [chat_pb2.FINISH_REASON_STOP]
    last = chunks[-1]
    assert last.HasField("usage") and not last.choices
    body = app.control.last.body
    assert last.usage.prompt_tokens == count_prompt_tokens(body)
    assert last.usage.completion_tokens == CHUNKS
    assert all(chunk.model == CLIENT_MODEL for chunk in chunks)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["usage"] == {"include": True}
    assert app.control.last.outcome == "completed"


async def test_stream_reasoning_deltas(provider: OpenRouter) -> None:
    chunks = await collect(provider, call("think", model=REASONING_MODEL))
    reasoning = "".join(c.delta.reasoning for chunk in chunks for c in chunk.choices)
    assert reasoning == f"Thinking about {digest('think')}."
    assert content(chunks) == reply_text("think", CHUNKS)


async def test_non_stream_reasoning(provider: OpenRouter) -> None:
    completion = await provider.complete(call("think", model=REASONING_MODEL))
    assert completion.choices[0].message.reasoning == f"Thinking about {digest('think')}."
    assert completion.usage.completion_tokens_details.reasoning_tokens == 1


async def test_max_completion_tokens_becomes_max_tokens(provider: OpenRouter, app: FakeApp) -> None:
    chunks = await collect(provider, call(max_completion_tokens=2))
    assert app.control.last.body["max_tokens"] == 2
    assert "max_completion_tokens" not in app.control.last.body
    assert content(chunks) == reply_text("hello there", CHUNKS, max_tokens=2)
    assert finishes(chunks) == [chat_pb2.FINISH_REASON_LENGTH]


async def test_non_stream_tool_call(provider: OpenRouter) -> None:
    completion = await provider.complete(call("weather?", tools=[WEATHER_TOOL]))
    choice = completion.choices[0]
    assert choice.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    (tool_call,) = choice.message.tool_calls
    assert tool_call.function.name == "get_weather" and tool_call.id.startswith("call_")
    assert orjson.loads(tool_call.function.arguments) == {"city": digest("weather?")}


async def test_stream_tool_call_deltas(provider: OpenRouter) -> None:
    chunks = await collect(provider, call("weather?", tools=[WEATHER_TOOL], tool_choice="required"))
    deltas = [t for chunk in chunks for c in chunk.choices for t in c.delta.tool_calls]
    assert deltas[0].name == "get_weather" and deltas[0].id.startswith("call_")
    arguments = "".join(d.arguments for d in deltas)
    assert orjson.loads(arguments) == {"city": digest("weather?")}
    assert finishes(chunks) == [chat_pb2.FINISH_REASON_TOOL_CALLS]


async def test_json_schema_response(provider: OpenRouter, app: FakeApp) -> None:
    completion = await provider.complete(call("structured", response_format=SCHEMA_FORMAT))
    expected = {"word": digest("structured"), "count": int(digest("structured")[:4], 16)}
    assert orjson.loads(completion.choices[0].message.content) == expected
    assert app.control.last.body["response_format"] == SCHEMA_FORMAT
    chunks = await collect(provider, call("structured", response_format=SCHEMA_FORMAT))
    assert orjson.loads(content(chunks)) == expected


# ---- request extras ------------------------------------------------------------------------


async def test_documented_extras_are_forwarded(provider: OpenRouter, app: FakeApp) -> None:
    extras: dict[str, Any] = {
        "provider": {"order": ["deepinfra", "together"], "allow_fallbacks": True},
        "models": [MODEL, "openai/gpt-4o-mini"],
        "route": "fallback",
        "transforms": ["middle-out"],
        "top_k": 40,
        "min_p": 0.05,
        "top_a": 0.1,
        "repetition_penalty": 1.1,
        "usage": {"include": False},
    }
    await provider.complete(call(**extras))
    body = app.control.last.body
    for key, value in extras.items():
        if key != "usage":
            assert body[key] == value, key
    # The client cannot switch usage off: the gateway meters every call.
    assert body["usage"] == {"include": True}


@pytest.mark.parametrize("param", ["reasoning_effort", "safety_model", "metadata", "frobnicate"])
async def test_unknown_extras_are_refused_before_sending(
    provider: OpenRouter, app: FakeApp, param: str
) -> None:
    with pytest.raises(RpcError) as caught:
        await provider.complete(call(**{param: "x"}))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.reason == errors.UNSUPPORTED_PARAMETER
    assert caught.value.metadata["param"] == param
    with pytest.raises(RpcError):
        await collect(provider, call(**{param: "x"}))
    assert app.control.count() == 0


async def test_unknown_content_part_type_is_refused(provider: OpenRouter, app: FakeApp) -> None:
    parts = [
        {"type": "text", "text": "what is this"},
        {"type": "video_url", "video_url": {"url": "x"}},
    ]
    body = {"model": CLIENT_MODEL, "messages": [{"role": "user", "content": parts}]}
    request = request_from_json(body).request
    with pytest.raises(RpcError) as caught:
        await provider.complete(UpstreamCall(request, MODEL, KEY, True, "r"))
    assert caught.value.metadata["param"] == "messages[0].content[1].type"
    assert app.control.count() == 0


async def test_cache_control_text_parts_are_forwarded(provider: OpenRouter, app: FakeApp) -> None:
    parts = [{"type": "text", "text": "hello there", "cache_control": {"type": "ephemeral"}}]
    body = {"model": CLIENT_MODEL, "messages": [{"role": "user", "content": parts}]}
    request = request_from_json(body).request
    await provider.complete(UpstreamCall(request, MODEL, KEY, True, "r"))
    assert app.control.last.body["messages"][0]["content"] == parts


# ---- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "reason", "openai_code"),
    [
        (
            400,
            grpc.StatusCode.INVALID_ARGUMENT,
            errors.UPSTREAM_BAD_REQUEST,
            "upstream_bad_request",
        ),
        (402, grpc.StatusCode.RESOURCE_EXHAUSTED, errors.INSUFFICIENT_QUOTA, "insufficient_quota"),
        (403, grpc.StatusCode.PERMISSION_DENIED, errors.CONTENT_BLOCKED, "model_not_allowed"),
        (408, grpc.StatusCode.DEADLINE_EXCEEDED, errors.UPSTREAM_TIMEOUT, "upstream_timeout"),
        (429, grpc.StatusCode.RESOURCE_EXHAUSTED, errors.RATE_LIMITED, "rate_limit_exceeded"),
        (502, grpc.StatusCode.UNAVAILABLE, errors.UPSTREAM_ERROR, "upstream_error"),
        (503, grpc.StatusCode.UNAVAILABLE, errors.UPSTREAM_ERROR, "upstream_error"),
    ],
)
async def test_error_envelopes(
    strict: OpenRouter,
    app: FakeApp,
    status: int,
    code: grpc.StatusCode,
    reason: str,
    openai_code: str,
) -> None:
    for stream in (False, True):
        app.control.fail_next(status)
        with pytest.raises(RpcError) as caught:
            await run(strict, call(), stream=stream)
        error = caught.value
        assert (error.code, error.reason) == (code, reason)
        assert error.metadata["code"] == openai_code
        assert error.metadata["provider"] == "openrouter"
        assert error.metadata["upstream_status"] == str(status)


async def test_moderation_403_names_the_reasons(strict: OpenRouter, app: FakeApp) -> None:
    app.control.fail_next(403)
    with pytest.raises(RpcError) as caught:
        await strict.complete(call())
    assert "flagged" in caught.value.message and "harassment" in caught.value.message


async def test_429_retry_after_from_the_rate_limit_reset(strict: OpenRouter, app: FakeApp) -> None:
    app.control.fail_next(429)  # X-RateLimit-Reset one minute ahead, no Retry-After
    with pytest.raises(RpcError) as caught:
        await strict.complete(call())
    assert 55 <= int(caught.value.metadata["retry_after"]) <= 60
    app.control.fail_next(429, retry_after=7)
    with pytest.raises(RpcError) as caught:
        await strict.complete(call())
    assert caught.value.metadata["retry_after"] == "7"


async def test_invalid_model_is_model_not_found(provider: OpenRouter) -> None:
    for stream in (False, True):
        with pytest.raises(RpcError) as caught:
            await run(provider, call(model="bad/model"), stream=stream)
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        assert caught.value.reason == errors.MODEL_NOT_FOUND
        assert caught.value.metadata["code"] == "model_not_found"


async def test_rejected_byok_key(provider: OpenRouter) -> None:
    wrong = "sk-or-v1-ffffffffffffffffffffffffffff"
    for stream in (False, True):
        with pytest.raises(RpcError) as caught:
            await run(provider, call(key=wrong), stream=stream)
        error = caught.value
        assert error.code == grpc.StatusCode.FAILED_PRECONDITION
        assert error.reason == errors.BYOK_KEY_REJECTED
        assert error.metadata["code"] == "invalid_api_key"
        assert wrong not in error.message and KEY not in error.message
        assert not any(wrong in value for value in error.metadata.values())


async def test_mid_stream_error_chunk_after_content(provider: OpenRouter, app: FakeApp) -> None:
    app.control.error_next(2)
    received: list[chat_pb2.ChatCompletionChunk] = []
    with pytest.raises(RpcError) as caught:
        await drain(provider, call(), received)
    assert content(received) == reply_text("hello there", 2)
    assert caught.value.reason == errors.UPSTREAM_STREAM_INTERRUPTED
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert "Provider disconnected unexpectedly" in caught.value.message
    assert app.control.count(CHAT) == 1


@pytest.mark.parametrize(
    ("code", "reason"),
    [(None, errors.UPSTREAM_ERROR), (429, errors.RATE_LIMITED), (402, errors.INSUFFICIENT_QUOTA)],
)
async def test_error_chunk_before_any_content(
    provider: OpenRouter, app: FakeApp, code: int | None, reason: str
) -> None:
    # Nothing was delivered yet, so the error maps as the HTTP status OpenRouter could not send.
    app.control.push(Behavior(error_after=0, code=code))
    with pytest.raises(RpcError) as caught:
        await collect(provider, call())
    assert caught.value.reason == reason


async def test_cut_mid_stream_is_interrupted_without_retry(
    provider: OpenRouter, app: FakeApp
) -> None:
    app.control.cut_next(3)
    received: list[chat_pb2.ChatCompletionChunk] = []
    with pytest.raises(RpcError) as caught:
        await drain(provider, call(), received)
    assert content(received) == reply_text("hello there", 3)
    assert caught.value.reason == errors.UPSTREAM_STREAM_INTERRUPTED
    assert app.control.count(CHAT) == 1


async def test_cut_non_stream_body(provider: OpenRouter, app: FakeApp) -> None:
    app.control.cut_next(0)
    with pytest.raises(RpcError) as caught:
        await provider.complete(call())
    assert caught.value.reason == errors.UPSTREAM_STREAM_INTERRUPTED
    assert app.control.count(CHAT) == 1


@pytest.mark.parametrize("status", [503, 429, 502])
async def test_retried_before_the_first_byte(
    provider: OpenRouter, app: FakeApp, status: int
) -> None:
    app.control.fail_next(status, retry_after=0, times=2)
    chunks = await collect(provider, call())
    assert content(chunks) == reply_text("hello there", CHUNKS)
    assert app.control.count(CHAT) == 3


async def test_retries_are_bounded(provider: OpenRouter, app: FakeApp) -> None:
    app.control.fail_next(503, retry_after=0, times=5)
    with pytest.raises(RpcError) as caught:
        await provider.complete(call())
    assert caught.value.reason == errors.UPSTREAM_ERROR
    assert app.control.count(CHAT) == 3


# ---- cancellation --------------------------------------------------------------------------


async def test_closing_the_stream_closes_the_upstream(provider: OpenRouter, app: FakeApp) -> None:
    app.control.push(Behavior(chunks=50, chunk_delay=0.2))
    stream = provider.stream(call())
    first = await anext(stream)
    assert first.choices
    await stream.aclose()
    event = await app.control.wait_for_disconnect(within=1.0)
    assert event.phase == "streaming" and event.content_chunks_sent < 50


async def test_cancelling_the_consumer_closes_the_upstream(
    provider: OpenRouter, app: FakeApp
) -> None:
    app.control.push(Behavior(chunks=50, chunk_delay=0.2))
    got_one = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.stream(call()):
            got_one.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_one.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await app.control.wait_for_disconnect(within=1.0)


# ---- models --------------------------------------------------------------------------------


async def test_list_models_and_cache(provider: OpenRouter, app: FakeApp) -> None:
    models = await provider.list_models(KEY, byok=True)
    by_id = {m.id: m for m in models}
    assert set(by_id) == {m.id for m in OPENROUTER_MODELS}
    assert by_id[MODEL].owned_by == "meta-llama" and by_id[MODEL].created == 1735689600
    again = await provider.list_models(KEY, byok=True)
    assert [m.id for m in again] == [m.id for m in models]
    assert app.control.count("/api/v1/models") == 1
    await provider.list_models("sk-or-v1-another-key-0000000000", byok=True)
    assert app.control.count("/api/v1/models") == 2
    assert app.control.last.header("authorization") == "Bearer sk-or-v1-another-key-0000000000"


async def test_list_models_error_is_mapped(strict: OpenRouter, app: FakeApp) -> None:
    app.control.fail_next(503, scope="any")
    with pytest.raises(RpcError) as caught:
        await strict.list_models(KEY, byok=True)
    assert caught.value.reason == errors.UPSTREAM_ERROR
