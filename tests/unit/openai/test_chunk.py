"""chunk_to_json / chunk_to_json_bytes / chunk_from_json against recorded OpenAI stream frames
and provider chunks (wire-formats §1.4, §3.4, §4.3); the output must load in the openai SDK."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types.chat import ChatCompletionChunk as SdkChatCompletionChunk

from native1api.gateway.v1 import chat_pb2
from rpc_common.openai import (
    UpstreamFormatError,
    UpstreamReportedError,
    chunk_from_json,
    chunk_to_json,
    chunk_to_json_bytes,
)

# wire-formats §1.4, the recorded OpenAI stream (data: payloads, byte for byte).
OPENAI_STREAM = [
    b'{"id":"chatcmpl-9f2c","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o-mini","system_fingerprint":null,"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}',
    b'{"id":"chatcmpl-9f2c","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o-mini","system_fingerprint":null,"choices":[{"index":0,"delta":{"content":"Hel"},"logprobs":null,"finish_reason":null}],"usage":null}',
    b'{"id":"chatcmpl-9f2c","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o-mini","system_fingerprint":null,"choices":[{"index":0,"delta":{"content":"lo!"},"logprobs":null,"finish_reason":null}],"usage":null}',
    b'{"id":"chatcmpl-9f2c","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o-mini","system_fingerprint":null,"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}',
    b'{"id":"chatcmpl-9f2c","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o-mini","system_fingerprint":null,"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12}}',
]


def expected_bytes(line: bytes) -> bytes:
    # ChoiceDelta cannot say "refusal: null" (unset and null are the same), the only difference.
    return line.replace(b',"refusal":null', b"")


@pytest.mark.parametrize(
    "line", OPENAI_STREAM, ids=["first", "content-1", "content-2", "finish", "usage"]
)
def test_openai_stream_is_reproduced_byte_for_byte(line: bytes) -> None:
    chunk = chunk_from_json(orjson.loads(line))
    chunk = chat_pb2.ChatCompletionChunk.FromString(chunk.SerializeToString())  # the gRPC hop
    assert chunk_to_json_bytes(chunk) == expected_bytes(line)
    assert chunk_to_json(chunk) == orjson.loads(expected_bytes(line))
    SdkChatCompletionChunk.model_validate(chunk_to_json(chunk))


def stream_chunk(**fields: Any) -> chat_pb2.ChatCompletionChunk:
    envelope: dict[str, Any] = {
        "id": "chatcmpl-9f2c",
        "created": 1767225600,
        "model": "gpt-4o-mini",
    }
    return chat_pb2.ChatCompletionChunk(**{**envelope, **fields})


def test_built_first_finish_and_usage_chunks() -> None:
    first = stream_chunk()
    first.choices.add(index=0, delta=chat_pb2.ChoiceDelta(role=chat_pb2.ROLE_ASSISTANT, content=""))
    finish = stream_chunk()
    finish.choices.add(index=0, finish_reason=chat_pb2.FINISH_REASON_STOP)
    usage = stream_chunk(
        usage=chat_pb2.Usage(prompt_tokens=10, completion_tokens=2, total_tokens=12)
    )

    assert chunk_to_json(first)["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    assert chunk_to_json(finish)["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    ]
    assert chunk_to_json(first)["usage"] is None
    assert chunk_to_json(usage)["choices"] == []
    assert chunk_to_json(usage)["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 2,
        "total_tokens": 12,
    }
    for chunk in (first, finish, usage):
        assert chunk_to_json(chunk)["object"] == "chat.completion.chunk"
        SdkChatCompletionChunk.model_validate(chunk_to_json(chunk))


# wire-formats §1.4 tool-call deltas (the "..." filled in with the envelope above).
TOOL_CALL_DELTAS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    (
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ],
        },
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ],
        },
    ),
    (
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
    ),
    (
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
    ),
    (
        {"tool_calls": [{"index": 1, "id": "call_2"}, {"index": 2, "type": "function"}]},
        {"tool_calls": [{"index": 1, "id": "call_2"}, {"index": 2, "type": "function"}]},
    ),
]


@pytest.mark.parametrize(("delta", "expected"), TOOL_CALL_DELTAS)
def test_tool_call_deltas(delta: dict[str, Any], expected: dict[str, Any]) -> None:
    body = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }
    produced = chunk_to_json(chunk_from_json(body))
    assert produced["choices"][0]["delta"] == expected  # `content: null` is unset: not emitted
    SdkChatCompletionChunk.model_validate(produced)


def test_tool_call_finish_chunk() -> None:
    body = {
        "id": "c",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
    }
    produced = chunk_to_json(chunk_from_json(body))
    assert produced["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }


# wire-formats §3.4 (OpenRouter) and §4.3 (Together), as recorded.
OPENROUTER_REASONING = b'{"id":"gen-1767225600-AbC","object":"chat.completion.chunk","created":1767225600,"model":"qwen/qwen3.5-122b-a10b-20260224","provider":"Alibaba","choices":[{"index":0,"delta":{"content":"","role":"assistant","reasoning":"Here","reasoning_details":[{"type":"reasoning.text","text":"Here","format":"unknown","index":0}]},"finish_reason":null,"native_finish_reason":null}]}'
OPENROUTER_USAGE = b'{"id":"gen-1767225600-AbC","object":"chat.completion.chunk","created":1767225600,"model":"qwen/qwen3.5-122b-a10b-20260224","provider":"Alibaba","choices":[{"index":0,"delta":{"content":"","role":"assistant"},"finish_reason":"length","native_finish_reason":"length"}],"usage":{"prompt_tokens":21,"completion_tokens":1333,"total_tokens":1354,"cost":0.0027781,"is_byok":false,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":1313}}}'
OPENROUTER_ERROR = b'{"id":"gen-x","object":"chat.completion.chunk","created":1767225600,"model":"openai/gpt-4o-mini","provider":"openai","error":{"code":"server_error","message":"Provider disconnected unexpectedly"},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}'
TOGETHER_CONTENT = b'{"id":"omJK92o-4YNCb4-a046","object":"chat.completion.chunk","created":1767225600,"choices":[{"index":0,"text":"Hello","logprobs":null,"finish_reason":null,"delta":{"token_id":null,"role":"assistant","content":"Hello","reasoning":null}}],"model":"openai/gpt-oss-20b","usage":null}'
TOGETHER_FINISH = b'{"id":"omJK92o-4YNCb4-a046","object":"chat.completion.chunk","created":1767225600,"choices":[{"index":0,"text":"","logprobs":null,"finish_reason":"eos","delta":{"token_id":null,"role":"assistant","content":"","reasoning":null}}],"model":"openai/gpt-oss-20b","usage":null}'
TOGETHER_USAGE = b'{"id":"omJK92o-4YNCb4-a046","object":"chat.completion.chunk","created":1767225600,"choices":[],"model":"openai/gpt-oss-20b","usage":{"prompt_tokens":75,"total_tokens":152,"completion_tokens":77,"reasoning_tokens":0}}'

PROVIDER_CHUNKS: list[tuple[str, bytes, list[dict[str, Any]], dict[str, Any] | None]] = [
    (
        "openrouter reasoning",
        OPENROUTER_REASONING,
        [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": "", "reasoning": "Here"},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
        None,
    ),
    (
        "openrouter usage on a finish chunk",
        OPENROUTER_USAGE,
        [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": "length",
            }
        ],
        {
            "prompt_tokens": 21,
            "completion_tokens": 1333,
            "total_tokens": 1354,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 1313},
            "cost": 0.0027781,  # OpenRouter's billing figure is kept (wire-formats §5.3)
        },
    ),
    (
        "together content",
        TOGETHER_CONTENT,
        [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": "Hello"},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
        None,
    ),
    (
        "together eos",
        TOGETHER_FINISH,
        [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        None,
    ),
    (
        "together usage",
        TOGETHER_USAGE,
        [],
        {
            "prompt_tokens": 75,
            "completion_tokens": 77,
            "total_tokens": 152,
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    ),
]


@pytest.mark.parametrize(
    ("name", "line", "choices", "usage"), PROVIDER_CHUNKS, ids=[p[0] for p in PROVIDER_CHUNKS]
)
def test_provider_chunks(
    name: str, line: bytes, choices: list[dict[str, Any]], usage: dict[str, Any] | None
) -> None:
    produced = chunk_to_json(chunk_from_json(orjson.loads(line)))
    assert produced["choices"] == choices
    assert produced["usage"] == usage
    assert "provider" not in produced
    SdkChatCompletionChunk.model_validate(produced)


def test_openrouter_mid_stream_error_raises() -> None:
    with pytest.raises(UpstreamReportedError) as info:
        chunk_from_json(orjson.loads(OPENROUTER_ERROR))
    assert info.value.message == "Provider disconnected unexpectedly"


def test_finish_reason_error_without_error_object_raises() -> None:
    with pytest.raises(UpstreamReportedError):
        chunk_from_json(
            {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}]}
        )


def test_reasoning_content_and_object_arguments() -> None:
    body = {
        "id": "c",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "delta": {
                    "reasoning_content": "hmm",
                    "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": {"a": [1]}}}],
                },
                "logprobs": {
                    "content": [{"token": "x", "logprob": -1.5, "bytes": [120], "top_logprobs": []}]
                },
            }
        ],
    }
    produced = chunk_to_json(chunk_from_json(body))
    assert produced["choices"][0] == {
        "index": 0,
        "delta": {
            "reasoning": "hmm",
            "tool_calls": [
                {"index": 0, "id": "t", "function": {"name": "f", "arguments": '{"a":[1]}'}}
            ],
        },
        "logprobs": {
            "content": [{"token": "x", "logprob": -1.5, "bytes": [120], "top_logprobs": []}]
        },
        "finish_reason": None,
    }
    SdkChatCompletionChunk.model_validate(produced)


@pytest.mark.parametrize(
    "body",
    [
        "data",
        {"choices": "x"},
        {"choices": [{"delta": []}]},
        {"choices": [{"delta": {"content": 1}}]},
        {"choices": [{"delta": {"tool_calls": {}}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": "zero"}]}}]},
        {"choices": [], "usage": []},
    ],
)
def test_unreadable_chunks_raise_format_error(body: Any) -> None:
    with pytest.raises(UpstreamFormatError):
        chunk_from_json(body)


def content_chunk(content: str = "Hel", **fields: Any) -> chat_pb2.ChatCompletionChunk:
    chunk = stream_chunk(**fields)
    chunk.choices.add(index=0, delta=chat_pb2.ChoiceDelta(content=content))
    return chunk


def variant(edit: Any) -> chat_pb2.ChatCompletionChunk:
    chunk = content_chunk()
    edit(chunk)
    return chunk


# Chunks on and just off the fast path of chunk_to_json_bytes; each must equal the generic bytes.
FAST_PATH_CASES: list[tuple[str, chat_pb2.ChatCompletionChunk]] = [
    ("content", content_chunk()),
    ("empty content", content_chunk("")),
    ("escapes and unicode", content_chunk('"quoted"\n\t\\ \u0000 \u2028 héllo 👋 </script>')),
    ("fingerprint", content_chunk(system_fingerprint="fp_1")),
    ("odd envelope", content_chunk(id='id"with\\quotes', model="@cf/ü", created=-1)),
    ("choice index 3", variant(lambda c: setattr(c.choices[0], "index", 3))),
    ("role", variant(lambda c: setattr(c.choices[0].delta, "role", chat_pb2.ROLE_ASSISTANT))),
    ("reasoning", variant(lambda c: setattr(c.choices[0].delta, "reasoning", "r"))),
    ("refusal", variant(lambda c: setattr(c.choices[0].delta, "refusal", "no"))),
    (
        "finish",
        variant(lambda c: setattr(c.choices[0], "finish_reason", chat_pb2.FINISH_REASON_LENGTH)),
    ),
    ("tool call", variant(lambda c: c.choices[0].delta.tool_calls.add(index=0, arguments="{"))),
    ("logprobs", variant(lambda c: c.choices[0].logprobs.update({"content": []}))),
    ("usage", variant(lambda c: c.usage.SetInParent())),
    (
        "two choices",
        variant(lambda c: c.choices.add(index=1, delta=chat_pb2.ChoiceDelta(content="x"))),
    ),
    ("no content", variant(lambda c: c.choices[0].delta.ClearField("content"))),
]


@pytest.mark.parametrize(("name", "chunk"), FAST_PATH_CASES, ids=[f[0] for f in FAST_PATH_CASES])
def test_fast_path_bytes_equal_generic_bytes(
    name: str, chunk: chat_pb2.ChatCompletionChunk
) -> None:
    assert chunk_to_json_bytes(chunk) == orjson.dumps(chunk_to_json(chunk))
    SdkChatCompletionChunk.model_validate_json(chunk_to_json_bytes(chunk))


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (None, None),
        ("", None),  # Together's "not finished"
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool_calls"),
        ("content_filter", "content_filter"),
        ("function_call", "function_call"),
        ("eos", "stop"),
        ("model_length", "length"),
        ("tool_use", "tool_calls"),
        ("safety", "content_filter"),
        ("something_new", "stop"),  # documented: an unknown reason still ends the choice
    ],
)
def test_chunk_finish_reasons(reason: str | None, expected: str | None) -> None:
    body = {
        "id": "c",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": reason}],
    }
    assert chunk_to_json(chunk_from_json(body))["choices"][0]["finish_reason"] == expected
