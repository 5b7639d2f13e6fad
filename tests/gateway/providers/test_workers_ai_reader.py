"""The pure Workers AI readers (no HTTP): stream frames, reply shapes the fake does not produce,
and the tool-call-as-text salvage."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway_service.providers.workers_ai_stream import (
    StreamReader,
    completion_from_body,
    completion_to_chunks,
)
from native1api.gateway.v1 import chat_pb2
from rpc_common.openai import UpstreamFormatError, UpstreamReportedError
from tests.gateway.providers.workers_ai_support import LLAMA, content_of, finishes, tool_arguments

NAMES = frozenset({"square_root"})


def _run(reader: StreamReader, frames: list[Any]) -> list[chat_pb2.ChatCompletionChunk]:
    out = []
    for frame in frames:
        chunk = reader.feed(frame if isinstance(frame, str) else orjson.dumps(frame).decode())
        if chunk is not None:
            out.append(chunk)
    return out + reader.finish()


def test_stream_reader_ignores_padding_and_empty_frames() -> None:
    reader = StreamReader(max_tokens=10)
    for frame in ("{}", '{"p":"abc"}', '{"tool_calls":[],"p":"x"}', '{"response":"","p":"x"}'):
        assert reader.feed(frame) is None
    chunk = reader.feed('{"response":"Hi","p":"abcdef"}')
    assert chunk is not None and chunk.choices[0].delta.content == "Hi"
    assert reader.feed('{"response":"","usage":{"prompt_tokens":5,"completion_tokens":1}}') is None
    closing = reader.finish()
    assert [c.choices[0].finish_reason for c in closing if c.choices] == [1]  # stop
    assert closing[-1].usage.total_tokens == 6  # the missing total is added


@pytest.mark.parametrize("frame", ["not json", "[1]", '"text"', '{"choices":"x"}'])
def test_stream_reader_refuses_unreadable_frames(frame: str) -> None:
    with pytest.raises(UpstreamFormatError):
        StreamReader(max_tokens=10).feed(frame)


@pytest.mark.parametrize(
    "frame",
    [
        '{"result":null,"success":false,"errors":[{"code":3043,"message":"Internal"}]}',
        '{"error":{"message":"overloaded","type":"server_error"}}',
    ],
)
def test_stream_reader_raises_reported_errors(frame: str) -> None:
    with pytest.raises(UpstreamReportedError):
        StreamReader(max_tokens=10).feed(frame)


def test_text_tool_call_salvage_accepts_leading_whitespace_and_arrays() -> None:
    text = ' [{"name": "square_root", "parameters": {"number": "4"}}, {"type": "function", "name": "square_root", "parameters": {"number": 9}}]'
    frames: list[Any] = [{"response": piece} for piece in (" ", text[1:20], text[20:])]
    frames.append({"response": "", "usage": {"prompt_tokens": 3, "completion_tokens": 30}})
    chunks = _run(StreamReader(max_tokens=100, tool_names=NAMES), frames)
    calls = tool_arguments(chunks)
    assert [calls[i]["name"] for i in (0, 1)] == ["square_root", "square_root"]
    assert orjson.loads(calls[1]["arguments"]) == {"number": 9}
    assert calls[0]["id"] != calls[1]["id"]
    assert content_of(chunks) == "" and finishes(chunks) == ["tool_calls"]


def test_json_naming_an_unoffered_function_stays_content() -> None:
    text = '{"name": "rm_rf", "parameters": {}}'
    chunks = _run(StreamReader(max_tokens=100, tool_names=NAMES), [{"response": text}])
    assert content_of(chunks) == text and finishes(chunks) == ["stop"]


def test_plain_text_is_not_held_back_when_tools_are_offered() -> None:
    reader = StreamReader(max_tokens=100, tool_names=NAMES)
    first = reader.feed('{"response":"Sure"}')
    assert first is not None and first.choices[0].delta.content == "Sure"


def test_held_text_is_released_past_the_limit() -> None:
    reader = StreamReader(max_tokens=10**6, tool_names=NAMES)
    assert reader.feed(orjson.dumps({"response": "{" + "x" * 1000}).decode()) is None
    released = reader.feed(orjson.dumps({"response": "y" * 70_000}).decode())
    assert released is not None and released.choices[0].delta.content.startswith("{xxx")


def test_native_frames_with_reasoning_and_finish_reason() -> None:
    frames = [
        {"response": "", "reasoning_content": "thinking"},
        {"response": "answer", "finish_reason": "length"},
        {"response": "", "usage": {"prompt_tokens": 1, "completion_tokens": 2}},
    ]
    chunks = _run(StreamReader(max_tokens=100), frames)
    assert chunks[0].choices[0].delta.reasoning == "thinking"
    assert content_of(chunks) == "answer"
    assert finishes(chunks) == ["length"]  # the model's own reason wins over the derivation


def test_openai_frames_with_usage_only_at_the_end_and_tool_calls() -> None:
    frames = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "f", "arguments": ""},
                            }
                        ]
                    },
                }
            ]
        },
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]},
                }
            ]
        },
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}},
    ]
    chunks = _run(StreamReader(max_tokens=100), frames)
    assert tool_arguments(chunks) == {0: {"id": "c1", "name": "f", "arguments": "{}"}}
    assert finishes(chunks) == ["tool_calls"]  # the upstream's, not a second derived one
    assert chunks[-1].usage.total_tokens == 9 and not chunks[-1].choices


def test_flat_tool_call_in_one_native_frame() -> None:
    frames = [{"tool_calls": [{"name": "square_root", "arguments": {"number": 4}}]}]
    chunks = _run(StreamReader(max_tokens=100), frames)
    calls = tool_arguments(chunks)
    assert calls[0]["name"] == "square_root" and calls[0]["id"].startswith("call_")
    assert orjson.loads(calls[0]["arguments"]) == {"number": 4}


def test_length_is_derived_from_the_usage_frame() -> None:
    frames = [
        {"response": "a"},
        {"response": "", "usage": {"prompt_tokens": 1, "completion_tokens": 16}},
    ]
    assert finishes(_run(StreamReader(max_tokens=16), frames)) == ["length"]
    assert finishes(_run(StreamReader(max_tokens=17), frames)) == ["stop"]


def test_responses_shaped_result() -> None:
    data = {
        "result": {
            "object": "response",
            "status": "incomplete",
            "output": [
                {"type": "reasoning", "content": [{"type": "reasoning_text", "text": "hmm"}]},
                {
                    "type": "message",
                    "content": [
                        {"type": "output_text", "text": "Hel"},
                        {"type": "output_text", "text": "lo"},
                    ],
                },
            ],
            "usage": {"input_tokens": 7, "output_tokens": 2, "total_tokens": 9},
        },
        "success": True,
        "errors": [],
    }
    completion = completion_from_body(data, model=LLAMA, max_tokens=100)
    [choice] = completion.choices
    assert (choice.message.content, choice.message.reasoning) == ("Hello", "hmm")
    assert choice.finish_reason == chat_pb2.FINISH_REASON_LENGTH
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (7, 2)
    chunks = completion_to_chunks(completion)
    assert [c.choices[0].delta.reasoning for c in chunks[:1]] == ["hmm"]
    assert content_of(chunks) == "Hello" and finishes(chunks) == ["length"]


def test_native_result_without_usage_or_text() -> None:
    completion = completion_from_body({"result": {"response": None}}, model=LLAMA, max_tokens=5)
    [choice] = completion.choices
    assert choice.message.content == "" and choice.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert not completion.HasField("usage")


def test_usage_without_total_gets_one() -> None:
    data = {"result": {"response": "x", "usage": {"prompt_tokens": 3, "completion_tokens": 5}}}
    completion = completion_from_body(data, model=LLAMA, max_tokens=5)
    assert completion.usage.total_tokens == 8
    assert completion.choices[0].finish_reason == chat_pb2.FINISH_REASON_LENGTH


def test_bare_openai_completion_without_finish_reason_at_the_limit() -> None:
    data = {
        "id": "chatcmpl-up",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 5},
    }
    completion = completion_from_body(data, model="requested", max_tokens=5)
    assert (completion.id, completion.model) == ("chatcmpl-up", "requested")
    assert completion.created > 0
    assert completion.choices[0].finish_reason == chat_pb2.FINISH_REASON_LENGTH


def test_reported_error_inside_an_openai_body() -> None:
    with pytest.raises(UpstreamReportedError):
        completion_from_body({"error": {"message": "nope"}}, model=LLAMA, max_tokens=5)
    with pytest.raises(UpstreamFormatError):
        completion_from_body(
            {"result": {"response": "x", "usage": "lots"}}, model=LLAMA, max_tokens=5
        )
