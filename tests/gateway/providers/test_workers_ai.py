"""The Workers AI adapter against the Workers AI fake, over real HTTP with the pooled client:
conformance of non-stream and stream replies, every reply shape, and the request mapping."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import orjson
import pytest

from fakes.app import FakeApp
from fakes.catalog import WORKERS_AI_MODELS
from fakes.content import count_prompt_tokens, reply_text
from gateway_service import errors
from gateway_service.providers.base import Provider
from gateway_service.providers.workers_ai import WorkersAI, plan_request
from gateway_service.providers.workers_ai_catalog import builtin_entries
from native1api.gateway.v1 import chat_pb2
from rpc_common.status import RpcError
from tests.gateway.providers.workers_ai_support import (
    CHUNKS,
    FRUIT_SCHEMA,
    GPT_OSS,
    LLAMA,
    QWEN3,
    RUN,
    SCOUT,
    SQRT_TOOL,
    TOKEN,
    V1,
    VISION,
    Env,
    body,
    collect,
    content_of,
    drain,
    finishes,
    make_call,
    make_env,
    sent_body,
    start_fake,
    tool_arguments,
    usage_chunks,
)


@pytest.fixture(scope="module")
def wai_fake() -> Iterator[tuple[FakeApp, str]]:
    yield from start_fake()


@pytest.fixture
async def wai(wai_fake: tuple[FakeApp, str]) -> AsyncIterator[Env]:
    async for env in make_env(wai_fake):
        yield env


def test_implements_the_provider_protocol() -> None:
    provider: type[Provider] = WorkersAI  # mypy checks the structural match
    assert provider.name == "workers-ai"


# ---- plain text ----------------------------------------------------------------------------------


async def test_non_stream_reply_usage_and_synthesised_fields(wai: Env) -> None:
    request = body("hello there")
    before = int(time.time())
    completion = await wai.provider.complete(make_call(request))
    record = wai.control.last
    assert record.path == RUN + LLAMA
    assert record.header("authorization") == f"Bearer {TOKEN}"
    sent = sent_body(record)
    assert completion.id.startswith("chatcmpl-") and len(completion.id) == len("chatcmpl-") + 32
    assert before <= completion.created <= int(time.time())
    assert completion.model == LLAMA
    [choice] = completion.choices
    assert choice.message.role == chat_pb2.ROLE_ASSISTANT
    assert choice.message.content == reply_text("hello there", CHUNKS)
    assert choice.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert completion.usage.prompt_tokens == count_prompt_tokens(sent)
    assert completion.usage.completion_tokens == CHUNKS
    assert completion.usage.total_tokens == count_prompt_tokens(sent) + CHUNKS


async def test_stream_reply_usage_and_one_derived_finish(wai: Env) -> None:
    chunks = await collect(wai.provider, make_call(body("stream me")))
    sent = sent_body(wai.control.last)
    assert sent["stream"] is True
    assert content_of(chunks) == reply_text("stream me", CHUNKS)
    assert finishes(chunks) == ["stop"]
    [usage] = usage_chunks(chunks)
    assert (usage.prompt_tokens, usage.completion_tokens) == (count_prompt_tokens(sent), CHUNKS)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # Order: content, then the finish chunk, then the usage chunk (`choices: []`).
    assert chunks[-2].choices[0].finish_reason == chat_pb2.FINISH_REASON_STOP
    assert not chunks[-1].choices
    # The native padding frames, `{}` and `tool_calls: []` frames produce nothing.
    assert all(c.choices[0].delta.content for c in chunks[:-2])
    assert wai.control.last.outcome == "completed"


@pytest.mark.parametrize("stream", [False, True])
async def test_max_tokens_is_always_sent(wai: Env, stream: bool) -> None:
    call = make_call(body("hi"))
    if stream:
        await collect(wai.provider, call)
    else:
        await wai.provider.complete(call)
    record = wai.control.last
    assert sent_body(record)["max_tokens"] == 1024
    assert record.notes["max_tokens_defaulted"] is False


async def test_max_completion_tokens_is_sent_as_max_tokens(wai: Env) -> None:
    await wai.provider.complete(make_call(body("hi", max_completion_tokens=300)))
    sent = sent_body(wai.control.last)
    assert sent["max_tokens"] == 300 and "max_completion_tokens" not in sent
    await wai.provider.complete(make_call(body("hi", max_tokens=500, max_completion_tokens=40)))
    assert sent_body(wai.control.last)["max_tokens"] == 40  # the tighter limit


@pytest.mark.parametrize("stream", [False, True])
async def test_length_when_the_limit_is_used_up(wai: Env, stream: bool) -> None:
    call = make_call(body("cut short", max_tokens=3))
    if stream:
        chunks = await collect(wai.provider, call)
        assert content_of(chunks) == reply_text("cut short", CHUNKS, max_tokens=3)
        assert finishes(chunks) == ["length"]
        assert usage_chunks(chunks)[0].completion_tokens == 3
    else:
        completion = await wai.provider.complete(call)
        assert completion.choices[0].message.content == reply_text("cut short", CHUNKS, 3)
        assert completion.choices[0].finish_reason == chat_pb2.FINISH_REASON_LENGTH


async def test_default_max_tokens_is_a_constructor_parameter(wai: Env) -> None:
    provider = wai.adapter(default_max_tokens=4)
    chunks = await collect(provider, make_call(body("short default")))
    assert sent_body(wai.control.last)["max_tokens"] == 4
    assert finishes(chunks) == ["length"]
    with pytest.raises(ValueError, match="default_max_tokens"):
        wai.adapter(default_max_tokens=0)


# ---- tool calls ----------------------------------------------------------------------------------


async def test_flat_tool_call_becomes_an_openai_tool_call(wai: Env) -> None:
    completion = await wai.provider.complete(make_call(body("root of 9", tools=[SQRT_TOOL])))
    assert sent_body(wai.control.last)["tools"] == [SQRT_TOOL]
    [choice] = completion.choices
    assert not choice.message.HasField("content")  # content: null, as OpenAI sends it
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "square_root"
    assert isinstance(orjson.loads(call.function.arguments)["number"], float)
    assert choice.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS


async def test_openai_like_tool_call_passes_through(wai: Env) -> None:
    completion = await wai.provider.complete(
        make_call(body("root of 9", model=SCOUT, tools=[SQRT_TOOL]))
    )
    [call] = completion.choices[0].message.tool_calls
    assert call.id.startswith("chatcmpl-tool-")  # Workers AI's own id is kept
    assert call.function.name == "square_root"
    assert "number" in orjson.loads(call.function.arguments)
    assert completion.choices[0].finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS


async def test_streamed_top_level_tool_call_deltas(wai: Env) -> None:
    chunks = await collect(wai.provider, make_call(body("root", model=SCOUT, tools=[SQRT_TOOL])))
    calls = tool_arguments(chunks)
    assert list(calls) == [0]
    assert calls[0]["id"].startswith("chatcmpl-tool-") and calls[0]["name"] == "square_root"
    assert "number" in orjson.loads(calls[0]["arguments"])
    assert content_of(chunks) == ""
    assert finishes(chunks) == ["tool_calls"]
    assert len(usage_chunks(chunks)) == 1


async def test_streamed_tool_call_written_as_text_becomes_a_tool_call(wai: Env) -> None:
    # llama-3.x streams `{"name": ..., "parameters": {...}}` as text in `response`.
    chunks = await collect(wai.provider, make_call(body("root", tools=[SQRT_TOOL])))
    calls = tool_arguments(chunks)
    assert list(calls) == [0]
    assert calls[0]["id"].startswith("call_") and calls[0]["name"] == "square_root"
    assert "number" in orjson.loads(calls[0]["arguments"])
    assert content_of(chunks) == ""
    assert finishes(chunks) == ["tool_calls"]


def _after_tool_result(text: str, **extra: Any) -> dict[str, Any]:
    """A conversation whose last message is a tool result: the fake then answers with text."""
    return {
        "model": LLAMA,
        "messages": [
            {"role": "user", "content": text},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "square_root", "arguments": '{"number": 9}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "3"},
        ],
        "tools": [SQRT_TOOL],
        **extra,
    }


async def test_text_answer_with_tools_offered_streams_as_content(wai: Env) -> None:
    chunks = await collect(wai.provider, make_call(_after_tool_result("what is it")))
    assert content_of(chunks) == reply_text("what is it", CHUNKS)
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == CHUNKS
    assert finishes(chunks) == ["stop"]
    sent = sent_body(wai.control.last)
    assert sent["messages"][1]["content"] == ""  # null content becomes "" natively
    assert sent["messages"][1]["tool_calls"][0]["id"] == "call_1"
    assert sent["messages"][2] == {"role": "tool", "content": "3", "tool_call_id": "call_1"}


async def test_json_text_that_is_no_tool_call_is_released_as_content(wai: Env) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "fruit", "schema": FRUIT_SCHEMA}}
    chunks = await collect(
        wai.provider, make_call(_after_tool_result("fruit?", response_format=fmt))
    )
    assert orjson.loads(content_of(chunks)) == {"is_fruit": True}
    assert tool_arguments(chunks) == {}
    assert finishes(chunks) == ["stop"]


# ---- structured output ---------------------------------------------------------------------------


async def test_json_schema_is_unwrapped_and_an_object_response_becomes_text(wai: Env) -> None:
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "fruit", "schema": FRUIT_SCHEMA, "strict": True},
    }
    completion = await wai.provider.complete(make_call(body("apple", response_format=fmt)))
    assert sent_body(wai.control.last)["response_format"] == {
        "type": "json_schema",
        "json_schema": FRUIT_SCHEMA,
    }
    assert orjson.loads(completion.choices[0].message.content) == {"is_fruit": True}
    assert completion.choices[0].finish_reason == chat_pb2.FINISH_REASON_STOP


async def test_json_schema_stream(wai: Env) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "fruit", "schema": FRUIT_SCHEMA}}
    chunks = await collect(wai.provider, make_call(body("apple", response_format=fmt)))
    assert orjson.loads(content_of(chunks)) == {"is_fruit": True}


async def test_json_object_and_text_formats(wai: Env) -> None:
    await wai.provider.complete(make_call(body("x", response_format={"type": "json_object"})))
    assert sent_body(wai.control.last)["response_format"] == {"type": "json_object"}
    await wai.provider.complete(make_call(body("x", response_format={"type": "text"})))
    assert "response_format" not in sent_body(wai.control.last)  # the native default


# ---- OpenAI-shaped replies on /ai/run and /ai/v1 -------------------------------------------------


async def test_openai_frames_on_run_stream(wai: Env) -> None:
    chunks = await collect(wai.provider, make_call(body("vllm", model=QWEN3)))
    assert wai.control.last.path == RUN + QWEN3
    assert wai.control.last.notes["shape"] == "openai"
    assert content_of(chunks) == reply_text("vllm", CHUNKS)
    assert finishes(chunks) == ["stop"]
    # Usage rode on every upstream chunk; it comes out once, last, with the final counts.
    [usage] = usage_chunks(chunks)
    assert usage.completion_tokens == CHUNKS
    assert chunks[-1].HasField("usage") and not chunks[-1].choices
    assert all(not c.choices[0].delta.role for c in chunks if c.choices)
    [finish] = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert not finish.choices[0].delta.HasField("content")  # `delta: {}`, as OpenAI sends it


async def test_openai_frames_on_run_length_is_the_upstream_reason(wai: Env) -> None:
    chunks = await collect(wai.provider, make_call(body("vllm", model=QWEN3, max_tokens=2)))
    assert content_of(chunks) == reply_text("vllm", CHUNKS, max_tokens=2)
    assert finishes(chunks) == ["length"]


async def test_full_completion_inside_result_passes_through(wai: Env) -> None:
    completion = await wai.provider.complete(make_call(body("vllm", model=QWEN3)))
    assert completion.model == QWEN3
    assert completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.content == reply_text("vllm", CHUNKS)
    assert completion.choices[0].finish_reason == chat_pb2.FINISH_REASON_STOP
    assert completion.usage.completion_tokens == CHUNKS


async def test_gpt_oss_goes_to_the_openai_compatible_endpoint(wai: Env) -> None:
    completion = await wai.provider.complete(make_call(body("oss", model=GPT_OSS)))
    record = wai.control.last
    assert record.path == V1
    sent = sent_body(record)
    assert sent["model"] == GPT_OSS and sent["max_tokens"] == 1024 and "stream" not in sent
    assert completion.model == GPT_OSS
    assert completion.choices[0].message.content == reply_text("oss", CHUNKS)
    assert completion.usage.completion_tokens == CHUNKS


async def test_gpt_oss_stream_asks_for_usage(wai: Env) -> None:
    chunks = await collect(wai.provider, make_call(body("oss", model=GPT_OSS, max_tokens=50)))
    sent = sent_body(wai.control.last)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["max_tokens"] == 50
    assert content_of(chunks) == reply_text("oss", CHUNKS)
    assert finishes(chunks) == ["stop"]
    assert usage_chunks(chunks)[0].completion_tokens == CHUNKS


async def test_json_instead_of_sse_becomes_chunks(wai: Env) -> None:
    # gpt-oss on /ai/run answers JSON to a streaming request; the fake does it on demand.
    chunks = await collect(wai.provider, make_call(body("whole [[fake:shape=json]]")))
    assert wai.control.last.notes["stream"] is True
    assert content_of(chunks) == reply_text("whole", CHUNKS)
    assert finishes(chunks) == ["stop"]
    assert usage_chunks(chunks)[0].completion_tokens == CHUNKS


async def test_json_instead_of_sse_with_tool_calls(wai: Env) -> None:
    call = make_call(body("root [[fake:shape=json]]", tools=[SQRT_TOOL]))
    chunks = await collect(wai.provider, call)
    assert tool_arguments(chunks)[0]["name"] == "square_root"
    assert finishes(chunks) == ["tool_calls"]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"stop": ["\n\n"]}, "stop"),
        ({"stop": "END"}, "stop"),
        ({"tools": [SQRT_TOOL], "tool_choice": "required"}, "tool_choice"),
        ({"tools": [SQRT_TOOL], "tool_choice": "none"}, "tool_choice"),
        (
            {"tools": [SQRT_TOOL], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
        ),
        ({"tools": [SQRT_TOOL], "parallel_tool_calls": False}, "parallel_tool_calls"),
    ],
)
async def test_fields_the_native_schema_lacks_go_to_v1(
    wai: Env, extra: dict[str, Any], field: str
) -> None:
    await wai.provider.complete(make_call(body("v1 please", **extra)))
    record = wai.control.last
    assert record.path == V1
    sent = sent_body(record)
    assert sent[field] == extra[field] and sent["model"] == LLAMA


async def test_native_defaults_stay_native(wai: Env) -> None:
    request = body(
        "native",
        tools=[SQRT_TOOL],
        tool_choice="auto",
        parallel_tool_calls=True,
        n=1,
        logprobs=False,
    )
    await wai.provider.complete(make_call(request))
    sent = sent_body(wai.control.last)
    assert wai.control.last.path == RUN + LLAMA
    for absent in ("tool_choice", "parallel_tool_calls", "n", "logprobs"):
        assert absent not in sent


# ---- request mapping -----------------------------------------------------------------------------


async def test_native_body_mapping(wai: Env) -> None:
    request = {
        "model": LLAMA,
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "Be terse."}]},
            {"role": "system", "content": "Second system."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "line one"}, {"type": "text", "text": "two"}],
            },
        ],
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 42,
        "presence_penalty": 0.5,
        "frequency_penalty": 0,
        "user": "end-user-1",
        "top_k": 40,
        "repetition_penalty": 1.1,
        "raw": False,
        "options": {"rejectIfBusy": True},
    }
    completion = await wai.provider.complete(make_call(request))
    assert sent_body(wai.control.last) == {
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "system", "content": "Second system."},
            {"role": "user", "content": "line one\ntwo"},
        ],
        "max_tokens": 1024,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 42,
        "presence_penalty": 0.5,
        "frequency_penalty": 0,
        "top_k": 40,
        "repetition_penalty": 1.1,
        "raw": False,
        "options": {"rejectIfBusy": True},
    }
    # The fake derives the reply from the flattened text, so this proves what it saw.
    assert completion.choices[0].message.content == reply_text("line one\ntwo", CHUNKS)


async def test_vision_model_keeps_image_parts(wai: Env) -> None:
    parts = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    request = {"model": VISION, "messages": [{"role": "user", "content": parts}]}
    completion = await wai.provider.complete(make_call(request))
    assert sent_body(wai.control.last)["messages"][0]["content"] == parts
    assert completion.choices[0].message.content == reply_text("what is this", CHUNKS)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"provider": {"order": ["x"]}}, "provider"),  # OpenRouter-only
        ({"transforms": ["middle-out"]}, "transforms"),  # OpenRouter-only
        ({"store": True}, "store"),
        ({"prompt": "raw text"}, "prompt"),
        ({"presence_penalty": -0.5}, "presence_penalty"),
        ({"frequency_penalty": -1}, "frequency_penalty"),
        ({"seed": 0}, "seed"),
        ({"seed": -7}, "seed"),
        ({"stop": ["x"], "lora": "my-adapter"}, "lora"),  # native-only extra on a v1 request
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_unsupported_parameters_are_refused_before_any_request(
    wai: Env, extra: dict[str, Any], param: str, stream: bool
) -> None:
    call = make_call(body("refuse", **extra))
    with pytest.raises(RpcError) as caught:
        await drain(wai.provider, call, [], stream=stream)
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == errors.UNSUPPORTED_PARAMETER
    assert error.metadata["param"] == param
    assert f"'{param}'" in error.message
    assert wai.control.count() == 0


async def test_gpt_oss_refuses_native_only_extras_and_says_why(wai: Env) -> None:
    with pytest.raises(RpcError) as caught:
        await wai.provider.complete(make_call(body("x", model=GPT_OSS, raw=True)))
    assert caught.value.metadata["param"] == "raw"
    assert "native /ai/run endpoint" in caught.value.message


async def test_negative_penalty_is_forwarded_on_v1(wai: Env) -> None:
    await wai.provider.complete(make_call(body("x", model=GPT_OSS, presence_penalty=-1)))
    assert sent_body(wai.control.last)["presence_penalty"] == -1


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (
            [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}],
            "messages[0].content[0].type",
        ),
        (
            [
                {"type": "text", "text": "hi"},
                {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}},
            ],
            "messages[0].content[1].type",
        ),
    ],
)
async def test_media_parts_on_text_models_are_refused(
    wai: Env, content: list[dict[str, Any]], param: str
) -> None:
    request = {"model": LLAMA, "messages": [{"role": "user", "content": content}]}
    with pytest.raises(RpcError) as caught:
        await wai.provider.complete(make_call(request))
    assert caught.value.reason == errors.UNSUPPORTED_PARAMETER
    assert caught.value.metadata["param"] == param
    assert wai.control.count() == 0


async def test_function_role_is_refused(wai: Env) -> None:
    request = {
        "model": LLAMA,
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "function", "name": "f", "content": "1"},
        ],
    }
    with pytest.raises(RpcError) as caught:
        await wai.provider.complete(make_call(request))
    assert caught.value.metadata["param"] == "messages[1].role"


@pytest.mark.parametrize(
    "model",
    [
        "@cf/../../user/tokens/verify",
        "@cf/meta/llama?x=1",
        "@cf/meta/llama#frag",
        "@cf/meta/a/b",
        "@cf/meta/..",
        "gpt-4o",
    ],
)
async def test_model_ids_that_could_change_the_url_never_reach_it(wai: Env, model: str) -> None:
    with pytest.raises(RpcError) as caught:
        await wai.provider.complete(make_call(body("x", model=model)))
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert caught.value.reason == errors.MODEL_NOT_FOUND
    assert wai.control.count() == 0


async def test_unknown_model_is_model_not_found(wai: Env) -> None:
    with pytest.raises(RpcError) as caught:
        await wai.provider.complete(make_call(body("x", model="@cf/meta/does-not-exist")))
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert caught.value.reason == errors.MODEL_NOT_FOUND
    assert caught.value.metadata["param"] == "model"


async def test_translated_model_id_is_used_upstream_and_requested_id_reported(wai: Env) -> None:
    completion = await wai.provider.complete(
        make_call(body("alias", model="my-alias"), model=LLAMA)
    )
    assert wai.control.last.path == RUN + LLAMA
    assert completion.model == "my-alias"


def test_every_catalog_id_passes_the_path_check() -> None:
    ids = {m.name for m in WORKERS_AI_MODELS} | {e.id for e in builtin_entries()}
    for model in sorted(ids):
        plan = plan_request(
            make_call(body("x", model=model)), stream=False, run_url="R/", v1_url="V"
        )
        assert plan.url in (f"R/{model}", "V")
