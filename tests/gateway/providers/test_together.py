"""The Together adapter against the Together fake, over real HTTP with the pooled client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import orjson
import pytest

from fakes import together as fake_together
from fakes.app import FakeApp
from fakes.behavior import Behavior
from fakes.catalog import TOGETHER_MODELS
from fakes.content import count_prompt_tokens, digest, reply_text
from fakes.server import serve_in_thread
from gateway_service import errors
from gateway_service.providers.base import UpstreamCall
from gateway_service.providers.together import Together
from gateway_service.upstream_http import HttpSettings, make_client
from native1api.gateway.v1 import chat_pb2
from rpc_common.openai import request_from_json
from rpc_common.status import RpcError
from tests.gateway.providers.compat_support import collect, content, drain, finishes, make_call, run

KEY = "tgp_v1_0123456789abcdefghijklmnopqrstuv"
LLAMA = "meta-llama/Llama-3.3-70B-Instruct-Turbo"  # natural stop is `eos`
GPT_OSS = "openai/gpt-oss-20b"  # natural stop is `stop`, reasoning in the message
CLIENT_MODEL = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
CHUNKS = 4
CHAT = "/v1/chat/completions"
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
SCHEMA = {
    "type": "object",
    "properties": {"word": {"type": "string"}, "count": {"type": "integer"}},
    "required": ["word", "count"],
}
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeApp, str]]:
    app = fake_together.create_app(tokens=[KEY])
    with serve_in_thread(app) as base_url:
        yield app, base_url


@pytest.fixture
def app(fake: tuple[FakeApp, str]) -> FakeApp:
    fake[0].control.reset()
    fake[0].control.defaults = Behavior(chunks=CHUNKS, chunk_delay=0.0)
    return fake[0]


@pytest.fixture
async def provider(fake: tuple[FakeApp, str], app: FakeApp) -> AsyncIterator[Together]:
    http = make_client(SETTINGS)
    yield Together(http, SETTINGS, fake[1])
    await http.aclose()


@pytest.fixture
async def strict(fake: tuple[FakeApp, str], app: FakeApp) -> AsyncIterator[Together]:
    """The adapter without retries, to see each error status as it is mapped."""
    http = make_client(NO_RETRY)
    yield Together(http, NO_RETRY, fake[1])
    await http.aclose()


def call(
    prompt: str = "hello there", *, model: str = LLAMA, key: str = KEY, **extra: Any
) -> UpstreamCall:
    return make_call(prompt, client_model=CLIENT_MODEL, model=model, key=key, **extra)


# ---- conformance ---------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "upstream_finish"), [(LLAMA, "eos"), (GPT_OSS, "stop")])
async def test_non_stream_conformance(
    provider: Together, app: FakeApp, model: str, upstream_finish: str
) -> None:
    completion = await provider.complete(call(model=model))
    assert app.control.last.notes["finish_reason"] == upstream_finish
    choice = completion.choices[0]
    assert choice.message.content == reply_text("hello there", CHUNKS)
    assert choice.finish_reason == chat_pb2.FINISH_REASON_STOP  # `eos` included
    assert not choice.message.tool_calls  # Together's `tool_calls: []`
    assert completion.model == CLIENT_MODEL
    body = app.control.last.body
    assert completion.usage.prompt_tokens == count_prompt_tokens(body)
    assert completion.usage.completion_tokens == CHUNKS
    assert completion.usage.total_tokens == count_prompt_tokens(body) + CHUNKS
    if model == GPT_OSS:
        assert choice.message.reasoning == "The user wants a reply."


async def test_request_body(provider: Together, app: FakeApp) -> None:
    await provider.complete(call(max_completion_tokens=50, logprobs=True, top_logprobs=3))
    body = app.control.last.body
    assert body["model"] == LLAMA and body["stream"] is False
    assert body["max_tokens"] == 50 and "max_completion_tokens" not in body
    assert body["logprobs"] == 3 and "top_logprobs" not in body  # Together's integer form
    assert "stream_options" not in body and "usage" not in body
    assert app.control.last.header("authorization") == f"Bearer {KEY}"


@pytest.mark.parametrize("model", [LLAMA, GPT_OSS])
async def test_stream_conformance(provider: Together, app: FakeApp, model: str) -> None:
    chunks = await collect(provider, call(model=model))
    assert content(chunks) == reply_text("hello there", CHUNKS)
    assert finishes(chunks) == [chat_pb2.FINISH_REASON_STOP]
    # Together's unsolicited `choices: []` usage chunk comes through as the usage.
    last = chunks[-1]
    assert not last.choices and last.HasField("usage")
    body = app.control.last.body
    assert last.usage.prompt_tokens == count_prompt_tokens(body)
    assert last.usage.completion_tokens == CHUNKS
    assert last.usage.completion_tokens_details.reasoning_tokens == 0
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert app.control.last.outcome == "completed"


async def test_max_completion_tokens_truncates(provider: Together, app: FakeApp) -> None:
    chunks = await collect(provider, call(max_completion_tokens=2))
    assert app.control.last.body["max_tokens"] == 2
    assert content(chunks) == reply_text("hello there", CHUNKS, max_tokens=2)
    assert finishes(chunks) == [chat_pb2.FINISH_REASON_LENGTH]


async def test_non_stream_tool_call(provider: Together) -> None:
    completion = await provider.complete(call("weather?", tools=[WEATHER_TOOL]))
    choice = completion.choices[0]
    assert choice.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    (tool_call,) = choice.message.tool_calls
    assert tool_call.function.name == "get_weather"
    assert orjson.loads(tool_call.function.arguments) == {"city": digest("weather?")}


async def test_stream_tool_call_deltas(provider: Together) -> None:
    tool_choice = {"type": "function", "function": {"name": "get_weather"}}
    chunks = await collect(
        provider, call("weather?", tools=[WEATHER_TOOL], tool_choice=tool_choice)
    )
    deltas = [t for chunk in chunks for c in chunk.choices for t in c.delta.tool_calls]
    assert deltas[0].name == "get_weather" and deltas[0].id.startswith("call_")
    assert orjson.loads("".join(d.arguments for d in deltas)) == {"city": digest("weather?")}
    assert finishes(chunks) == [chat_pb2.FINISH_REASON_TOOL_CALLS]


async def test_json_schema_response(provider: Together, app: FakeApp) -> None:
    expected = {"word": digest("structured"), "count": int(digest("structured")[:4], 16)}
    completion = await provider.complete(call("structured", response_format=SCHEMA_FORMAT))
    assert orjson.loads(completion.choices[0].message.content) == expected
    sent = app.control.last.body["response_format"]
    assert sent["json_schema"]["schema"] == SCHEMA and sent["schema"] == SCHEMA
    chunks = await collect(provider, call("structured", response_format=SCHEMA_FORMAT))
    assert orjson.loads(content(chunks)) == expected


# ---- request extras ------------------------------------------------------------------------


async def test_documented_extras_are_forwarded(provider: Together, app: FakeApp) -> None:
    extras: dict[str, Any] = {
        "top_k": 40,
        "repetition_penalty": 1.1,
        "min_p": 0.05,
        "safety_model": "meta-llama/Meta-Llama-Guard-3-8B",
        "reasoning_effort": "low",
    }
    await provider.complete(call(**extras))
    body = app.control.last.body
    assert {key: body[key] for key in extras} == extras


@pytest.mark.parametrize("param", ["provider", "transforms", "top_a", "metadata", "frobnicate"])
async def test_unknown_extras_are_refused(provider: Together, app: FakeApp, param: str) -> None:
    with pytest.raises(RpcError) as caught:
        await provider.complete(call(**{param: "x"}))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.reason == errors.UNSUPPORTED_PARAMETER
    assert caught.value.metadata["param"] == param
    assert "together" in caught.value.message
    assert app.control.count() == 0


async def test_content_parts(provider: Together, app: FakeApp) -> None:
    video = [{"type": "text", "text": "hi"}, {"type": "video_url", "video_url": {"url": "v"}}]
    body = {"model": CLIENT_MODEL, "messages": [{"role": "user", "content": video}]}
    await provider.complete(UpstreamCall(request_from_json(body).request, LLAMA, KEY, True, "r"))
    assert app.control.last.body["messages"][0]["content"] == video
    audio = [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]
    body = {"model": CLIENT_MODEL, "messages": [{"role": "user", "content": audio}]}
    with pytest.raises(RpcError) as caught:
        await provider.complete(
            UpstreamCall(request_from_json(body).request, LLAMA, KEY, True, "r")
        )
    assert caught.value.metadata["param"] == "messages[0].content[0].type"
    assert app.control.count(CHAT) == 1


# ---- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "reason", "openai_code", "text"),
    [
        (
            400,
            grpc.StatusCode.INVALID_ARGUMENT,
            errors.UPSTREAM_BAD_REQUEST,
            "upstream_bad_request",
            False,
        ),
        (
            402,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            errors.INSUFFICIENT_QUOTA,
            "insufficient_quota",
            False,
        ),
        (
            403,
            grpc.StatusCode.INVALID_ARGUMENT,
            errors.UPSTREAM_BAD_REQUEST,
            "upstream_bad_request",
            False,
        ),
        (
            429,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            errors.RATE_LIMITED,
            "rate_limit_exceeded",
            False,
        ),
        (500, grpc.StatusCode.UNAVAILABLE, errors.UPSTREAM_ERROR, "upstream_error", False),
        (500, grpc.StatusCode.UNAVAILABLE, errors.UPSTREAM_ERROR, "upstream_error", True),
        (503, grpc.StatusCode.UNAVAILABLE, errors.UPSTREAM_ERROR, "upstream_error", False),
        (
            504,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            errors.UPSTREAM_TIMEOUT,
            "upstream_timeout",
            False,
        ),
        (520, grpc.StatusCode.UNAVAILABLE, errors.UPSTREAM_ERROR, "upstream_error", False),
        (
            524,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            errors.UPSTREAM_TIMEOUT,
            "upstream_timeout",
            False,
        ),
        (529, grpc.StatusCode.UNAVAILABLE, errors.UPSTREAM_ERROR, "upstream_error", False),
    ],
)
async def test_error_envelopes(
    strict: Together,
    app: FakeApp,
    status: int,
    code: grpc.StatusCode,
    reason: str,
    openai_code: str,
    text: bool,
) -> None:
    for stream in (False, True):
        app.control.fail_next(status, text=text)
        with pytest.raises(RpcError) as caught:
            await run(strict, call(), stream=stream)
        error = caught.value
        assert (error.code, error.reason) == (code, reason)
        assert error.metadata["code"] == openai_code
        assert error.metadata["provider"] == "together"


async def test_context_length_403_is_a_bad_request_with_the_message(
    strict: Together, app: FakeApp
) -> None:
    app.control.fail_next(403)
    with pytest.raises(RpcError) as caught:
        await strict.complete(call())
    assert "max_new_tokens" in caught.value.message
    assert caught.value.reason == errors.UPSTREAM_BAD_REQUEST


async def test_unknown_model_is_model_not_found(provider: Together) -> None:
    for model in ("bad/model", "meta-llama/llama-3.3-70b-instruct-turbo"):  # ids are case-sensitive
        with pytest.raises(RpcError) as caught:
            await provider.complete(call(model=model))
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        assert caught.value.reason == errors.MODEL_NOT_FOUND
        assert caught.value.metadata["code"] == "model_not_found"


async def test_rejected_byok_key(provider: Together) -> None:
    wrong = "tgp_v1_ffffffffffffffffffffffffffffffff"
    for stream in (False, True):
        with pytest.raises(RpcError) as caught:
            await run(provider, call(key=wrong), stream=stream)
        error = caught.value
        assert error.code == grpc.StatusCode.FAILED_PRECONDITION
        assert error.reason == errors.BYOK_KEY_REJECTED
        assert wrong not in error.message
        assert not any(wrong in value for value in error.metadata.values())
    with pytest.raises(RpcError) as caught:
        await provider.list_models(wrong, byok=True)  # 401 {"error":{"message":"Unauthorized"}}
    assert caught.value.reason == errors.BYOK_KEY_REJECTED


async def test_mid_stream_error_frame_after_content(provider: Together, app: FakeApp) -> None:
    app.control.error_next(2)
    received: list[chat_pb2.ChatCompletionChunk] = []
    with pytest.raises(RpcError) as caught:
        await drain(provider, call(), received)
    assert content(received) == reply_text("hello there", 2)
    assert caught.value.reason == errors.UPSTREAM_STREAM_INTERRUPTED
    assert "Internal server error while streaming" in caught.value.message
    assert app.control.count(CHAT) == 1


async def test_cut_mid_stream_is_interrupted_without_retry(
    provider: Together, app: FakeApp
) -> None:
    app.control.cut_next(3)
    received: list[chat_pb2.ChatCompletionChunk] = []
    with pytest.raises(RpcError) as caught:
        await drain(provider, call(), received)
    assert content(received) == reply_text("hello there", 3)
    assert caught.value.reason == errors.UPSTREAM_STREAM_INTERRUPTED
    assert app.control.count(CHAT) == 1


@pytest.mark.parametrize("status", [503, 429])
async def test_retried_before_the_first_byte(provider: Together, app: FakeApp, status: int) -> None:
    app.control.fail_next(status, retry_after=0, times=2)
    completion = await provider.complete(call())
    assert completion.choices[0].message.content == reply_text("hello there", CHUNKS)
    assert app.control.count(CHAT) == 3


async def test_retry_after_beyond_the_cap_is_not_waited_for(
    provider: Together, app: FakeApp
) -> None:
    app.control.fail_next(429, retry_after=30)
    with pytest.raises(RpcError) as caught:
        await provider.complete(call())
    assert caught.value.reason == errors.RATE_LIMITED
    assert caught.value.metadata["retry_after"] == "30"
    assert app.control.count(CHAT) == 1


# ---- cancellation --------------------------------------------------------------------------


async def test_closing_the_stream_closes_the_upstream(provider: Together, app: FakeApp) -> None:
    app.control.push(Behavior(chunks=50, chunk_delay=0.2))
    stream = provider.stream(call())
    assert (await anext(stream)).choices
    await stream.aclose()
    event = await app.control.wait_for_disconnect(within=1.0)
    assert event.phase == "streaming" and event.content_chunks_sent < 50


async def test_cancelling_the_consumer_closes_the_upstream(
    provider: Together, app: FakeApp
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


async def test_list_models_reads_the_bare_array(provider: Together, app: FakeApp) -> None:
    models = await provider.list_models(KEY, byok=True)
    by_id = {m.id: m for m in models}
    assert set(by_id) == {m.id for m in TOGETHER_MODELS if m.type == "chat"}
    assert "BAAI/bge-base-en-v1.5" not in by_id  # embedding
    assert by_id[LLAMA].owned_by == "Meta" and by_id[LLAMA].created == 1735689600
    await provider.list_models(KEY, byok=True)
    assert app.control.count("/v1/models") == 1  # cached
    assert app.control.last.header("authorization") == f"Bearer {KEY}"
