"""completion_to_json / completion_from_json against OpenAI's documented object and real
provider bodies (wire-formats §1.3, §3.3, §4.2); the output must also load in the openai SDK."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from openai.types.chat import ChatCompletion as SdkChatCompletion

from native1api.gateway.v1 import chat_pb2
from rpc_common.openai import (
    UpstreamFormatError,
    UpstreamReportedError,
    completion_from_json,
    completion_to_json,
)
from tests.unit.openai.jsonutil import canonical

# wire-formats §1.3, verbatim.
OPENAI_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-9f2c1d7e0a",
    "object": "chat.completion",
    "created": 1767225600,
    "model": "@cf/meta/llama-3.2-3b-instruct",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hello!",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 19,
        "completion_tokens": 3,
        "total_tokens": 22,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": None,
}


def without_proto_gaps(completion: dict[str, Any]) -> dict[str, Any]:
    """The §1.3 object minus what the ChatCompletion proto has no field for (see the report)."""
    expected = copy.deepcopy(completion)
    del expected["service_tier"]
    del expected["choices"][0]["message"]["annotations"]
    del expected["usage"]["completion_tokens_details"]["accepted_prediction_tokens"]
    del expected["usage"]["completion_tokens_details"]["rejected_prediction_tokens"]
    return expected


def test_openai_example_round_trips() -> None:
    produced = completion_to_json(completion_from_json(OPENAI_COMPLETION))
    assert canonical(produced) == canonical(without_proto_gaps(OPENAI_COMPLETION))
    assert list(produced) == [
        "id",
        "object",
        "created",
        "model",
        "choices",
        "usage",
        "system_fingerprint",
    ]
    SdkChatCompletion.model_validate(produced)


def test_built_completion_matches_openai_shape() -> None:
    completion = chat_pb2.ChatCompletion(id="chatcmpl-1", created=1767225600, model="m")
    choice = completion.choices.add(index=0, finish_reason=chat_pb2.FINISH_REASON_STOP)
    choice.message.content = "Hello!"
    (
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
        completion.usage.total_tokens,
    ) = 19, 3, 22
    assert completion_to_json(completion) == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello!", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 19, "completion_tokens": 3, "total_tokens": 22},
        "system_fingerprint": None,
    }


TOOL_CALL_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-tool",
    "object": "chat.completion",
    "created": 1767225600,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_abc",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
    "system_fingerprint": "fp_44709d6fcb",
}


def test_tool_call_completion_round_trips() -> None:
    produced = completion_to_json(completion_from_json(TOOL_CALL_COMPLETION))
    assert canonical(produced) == canonical(TOOL_CALL_COMPLETION)
    sdk = SdkChatCompletion.model_validate(produced)
    assert sdk.choices[0].message.tool_calls is not None


LOGPROBS = {
    "content": [
        {
            "token": "Hi",
            "logprob": -0.25,
            "bytes": [72, 105],
            "top_logprobs": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105]}],
        }
    ],
    "refusal": None,
}


def test_logprobs_are_kept_verbatim() -> None:
    body = copy.deepcopy(TOOL_CALL_COMPLETION)
    body["choices"][0]["logprobs"] = LOGPROBS
    produced = completion_to_json(completion_from_json(body))
    assert canonical(produced["choices"][0]["logprobs"]) == canonical(LOGPROBS)
    SdkChatCompletion.model_validate(produced)


# wire-formats §3.3 (OpenRouter) and §4.2 (Together).
OPENROUTER_COMPLETION: dict[str, Any] = {
    "id": "gen-1767225600-AbCdEf",
    "object": "chat.completion",
    "created": 1767225600,
    "model": "qwen/qwen3.5-35b-a3b-20260224",
    "provider": "DeepInfra",
    "system_fingerprint": None,
    "choices": [
        {
            "index": 0,
            "logprobs": None,
            "finish_reason": "stop",
            "native_finish_reason": "stop",
            "message": {
                "role": "assistant",
                "content": "Hello",
                "refusal": None,
                "reasoning": "Thinking",
                "reasoning_details": [
                    {"type": "reasoning.text", "text": "Thinking", "format": "unknown", "index": 0}
                ],
            },
        }
    ],
    "usage": {
        "prompt_tokens": 18,
        "completion_tokens": 447,
        "total_tokens": 465,
        "cost": 0.00044952,
        "is_byok": False,
        "prompt_tokens_details": {
            "cached_tokens": 0,
            "cache_write_tokens": 0,
            "audio_tokens": 0,
            "video_tokens": 0,
        },
        "cost_details": {"upstream_inference_cost": 0.00044952},
        "completion_tokens_details": {
            "reasoning_tokens": 432,
            "image_tokens": 0,
            "audio_tokens": 0,
        },
    },
}

TOGETHER_COMPLETION: dict[str, Any] = {
    "id": "omJK98b-3pDw3Z-a04673c1cf25a2b4",
    "object": "chat.completion",
    "created": 1767225600,
    "model": "openai/gpt-oss-20b",
    "metadata": {"weight_version": "default"},
    "prompt": [],
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "hello",
                "tool_calls": [],
                "reasoning": "User asks",
            },
            "logprobs": None,
            "finish_reason": "eos",
            "seed": None,
        }
    ],
    "usage": {
        "prompt_tokens": 75,
        "total_tokens": 159,
        "completion_tokens": 84,
        "reasoning_tokens": 0,
    },
}


def test_openrouter_completion() -> None:
    produced = completion_to_json(completion_from_json(OPENROUTER_COMPLETION))
    assert produced["choices"][0] == {
        "index": 0,
        "message": {
            "role": "assistant",
            "content": "Hello",
            "refusal": None,
            "reasoning": "Thinking",
        },
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert produced["usage"] == {
        "prompt_tokens": 18,
        "completion_tokens": 447,
        "total_tokens": 465,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 432, "audio_tokens": 0},
        "cost": 0.00044952,  # OpenRouter's billing figure is kept (wire-formats §5.3)
    }
    assert "provider" not in produced
    SdkChatCompletion.model_validate(produced)


def test_together_completion() -> None:
    produced = completion_to_json(completion_from_json(TOGETHER_COMPLETION))
    assert produced["choices"][0] == {
        "index": 0,
        "message": {
            "role": "assistant",
            "content": "hello",
            "refusal": None,
            "reasoning": "User asks",
        },
        "logprobs": None,
        "finish_reason": "stop",  # eos -> stop
    }
    assert produced["usage"] == {
        "prompt_tokens": 75,
        "completion_tokens": 84,
        "total_tokens": 159,
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    SdkChatCompletion.model_validate(produced)


def choice_body(**fields: Any) -> dict[str, Any]:
    return {
        "id": "x",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "c"}, **fields}],
    }


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool_calls"),
        ("content_filter", "content_filter"),
        ("function_call", "function_call"),
        ("eos", "stop"),
        ("model_length", "length"),
        ("max_tokens", "length"),
        ("end_turn", "stop"),
        ("STOP", "stop"),
        ("something_new", "stop"),
        (None, "stop"),
        ("", "stop"),
    ],
)
def test_finish_reasons(reason: str | None, expected: str) -> None:
    produced = completion_to_json(completion_from_json(choice_body(finish_reason=reason)))
    assert produced["choices"][0]["finish_reason"] == expected


def test_missing_finish_reason_with_tool_calls_is_tool_calls() -> None:
    body = copy.deepcopy(TOOL_CALL_COMPLETION)
    del body["choices"][0]["finish_reason"]
    assert (
        completion_to_json(completion_from_json(body))["choices"][0]["finish_reason"]
        == "tool_calls"
    )


def test_tolerant_reading() -> None:
    body = {
        "id": 123,
        "created": 1767225600.0,
        "choices": [
            {
                "message": {
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                    "reasoning_content": "deepseek style",
                    "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {"x": 1}}}],
                },
                "finish_reason": "tool_calls",
                "unknown": {"ignored": True},
            }
        ],
        "usage": {"prompt_tokens": 2, "completion_tokens": 3},
    }
    produced = completion_to_json(completion_from_json(body))
    assert produced["id"] == "123"
    assert produced["model"] == ""
    assert produced["created"] == 1767225600
    assert produced["choices"][0]["message"] == {
        "role": "assistant",
        "content": "ab",
        "refusal": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}}
        ],
        "reasoning": "deepseek style",
    }
    assert produced["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    SdkChatCompletion.model_validate(produced)


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"message": "Provider disconnected", "code": 502}},
        choice_body(finish_reason="error"),
    ],
)
def test_reported_errors_raise(body: dict[str, Any]) -> None:
    with pytest.raises(UpstreamReportedError):
        completion_from_json(body)


def test_reported_error_keeps_the_message() -> None:
    with pytest.raises(UpstreamReportedError) as info:
        completion_from_json({"error": {"message": "Rate limited upstream", "code": 429}})
    assert info.value.message == "Rate limited upstream"
    assert info.value.body["code"] == 429


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"choices": {}},
        {"choices": ["x"]},
        {"choices": [{"message": {"content": 5}}]},
        {"choices": [{"message": "hi"}]},
        {"choices": [], "usage": {"prompt_tokens": "many"}},
        {"choices": [], "created": True},
        {"choices": [{"finish_reason": 1}]},
    ],
)
def test_unreadable_bodies_raise_format_error(body: Any) -> None:
    with pytest.raises(UpstreamFormatError):
        completion_from_json(body)
