"""request_from_json -> gRPC wire -> request_to_json gives back what the client sent.

Each body below is sent through the parser, serialised and parsed again (the bridge -> gateway
hop), validated, and rendered; the result must equal the body minus `stream`/`stream_options`,
compared type-exactly (an int that came back as a float fails). The second table pins the
documented normalisations, the last tests pin what a Struct cannot keep.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from rpc_common.openai import request_from_json, request_to_json, validate_request
from rpc_common.openai.jsonvalue import MAX_NESTING
from tests.unit.openai.jsonutil import canonical, over_grpc

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 1},
                "days": {"type": "integer", "minimum": 1, "maximum": 14, "default": 3},
                "units": {"type": "string", "enum": ["c", "f"]},
                "threshold": {"type": "number", "multipleOf": 0.5},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": False,
    },
}

ROUND_TRIP_BODIES: list[tuple[str, dict[str, Any]]] = [
    (
        "plain",
        {
            "model": "@cf/meta/llama-3.2-3b-instruct",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hi"},
            ],
        },
    ),
    (
        "sampling knobs, ints stay ints",
        {
            "model": "meta-llama/llama-3.2-3b-instruct",
            "messages": [{"role": "user", "content": "Hi", "name": "alice"}],
            "temperature": 0.7,
            "top_p": 1,
            "max_tokens": 256,
            "max_completion_tokens": 300,
            "n": 1,
            "seed": 9999999999,
            "presence_penalty": -0.5,
            "frequency_penalty": 2,
            "logprobs": True,
            "top_logprobs": 20,
            "user": "user-1234",
            "parallel_tool_calls": False,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ),
    (
        "multi-part user content: image, audio, file",
        {
            "model": "gpt-4o-mini",
            "messages": [
                {
                    "role": "developer",
                    "content": [{"type": "text", "text": "Prefer bullet points."}],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in this image?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64,iVBOR", "detail": "auto"},
                        },
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                        {
                            "type": "input_audio",
                            "input_audio": {"data": "UklGRg==", "format": "wav"},
                        },
                        {"type": "file", "file": {"file_data": "JVBERi0=", "filename": "a.pdf"}},
                        {"type": "file", "file": {"file_id": "file-abc123"}},
                    ],
                },
            ],
        },
    ),
    (
        "tools with tool_choice auto",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": [
                WEATHER_TOOL,
                {"type": "function", "function": {"name": "now", "parameters": {}}},
                {"type": "function", "function": {"name": "bare"}},
            ],
            "tool_choice": "auto",
        },
    ),
    (
        "tool_choice none",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "tools": [WEATHER_TOOL],
            "tool_choice": "none",
        },
    ),
    (
        "tool_choice required",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "tools": [WEATHER_TOOL],
            "tool_choice": "required",
        },
    ),
    (
        "tool_choice named function",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        },
    ),
    (
        "assistant tool_calls and tool results",
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_abc",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        },
                        {
                            "id": "call_def",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_abc", "content": '{"temp_c": 21}'},
                {
                    "role": "tool",
                    "tool_call_id": "call_def",
                    "content": [{"type": "text", "text": '{"temp_c": 25}'}],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Paris 21, Rome 25."},
                        {"type": "refusal", "refusal": "No more."},
                    ],
                },
                {"role": "assistant", "content": "I can't help.", "refusal": "I can't help."},
            ],
            "tools": [WEATHER_TOOL],
        },
    ),
    (
        "response_format json_schema",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "Extract."}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "person",
                    "description": "A person.",
                    "strict": True,
                    "schema": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "age": {"type": "integer", "minimum": 0, "maximum": 150},
                            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
                            "score": {"type": ["number", "null"]},
                        },
                        "required": ["name", "age", "tags", "score"],
                        "additionalProperties": False,
                        "$defs": {},
                    },
                },
            },
        },
    ),
    (
        "response_format json_object",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_object"},
        },
    ),
    (
        "response_format text",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "text"},
        },
    ),
    (
        "logit_bias",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "logit_bias": {"50256": -100, "1234": 5.5, "42": 100},
        },
    ),
    (
        "stop as a string",
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": "\n\n"},
    ),
    (
        "stop as a one-item list",
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": ["END"]},
    ),
    (
        "stop as a list",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "stop": ["a", "b", "c", "d"],
        },
    ),
    (
        "OpenAI extras",
        {
            "model": "o4-mini",
            "messages": [{"role": "user", "content": "x"}],
            "reasoning_effort": "low",
            "metadata": {"session": "abc", "turn": "3"},
            "store": False,
            "service_tier": "auto",
            "modalities": ["text", "audio"],
            "audio": {"voice": "alloy", "format": "mp3"},
            "prediction": {"type": "content", "content": "draft"},
            "web_search_options": {
                "search_context_size": "low",
                "user_location": {"type": "approximate", "approximate": {"city": "Paris"}},
            },
            "verbosity": "medium",
            "safety_identifier": "hash-1",
            "prompt_cache_key": "k1",
            "functions": [{"name": "legacy", "parameters": {"type": "object", "properties": {}}}],
            "function_call": "auto",
        },
    ),
    (
        "OpenRouter and Together extras",
        {
            "model": "meta-llama/llama-3.2-3b-instruct",
            "messages": [{"role": "user", "content": "x"}],
            "models": ["meta-llama/llama-3.2-3b-instruct", "qwen/qwen3.5-35b-a3b"],
            "route": "fallback",
            "provider": {
                "order": ["deepinfra", "together"],
                "allow_fallbacks": True,
                "data_collection": "deny",
                "sort": "price",
                "max_price": {"prompt": 1, "completion": 2.5},
            },
            "transforms": ["middle-out"],
            "reasoning": {"effort": "low", "max_tokens": 2048, "exclude": False},
            "usage": {"include": True},
            "top_k": 40,
            "repetition_penalty": 1.1,
            "min_p": 0.05,
            "top_a": 0,
            "echo": False,
            "nested": {"deep": [1, 2.5, -3, True, None, "s", {"x": [[]]}], "empty": {}},
        },
    ),
    (
        "unknown message fields, unknown and extended content parts",
        {
            "model": "anthropic/claude-sonnet-4",
            "messages": [
                {
                    "role": "system",
                    "content": [
                        {
                            "type": "text",
                            "text": "Long context",
                            "cache_control": {"type": "ephemeral"},
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://e.com/i.png", "detail": "high"},
                            "cache_control": {"type": "ephemeral"},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": "Earlier answer",
                    "reasoning": "thinking...",
                    "reasoning_details": [
                        {"type": "reasoning.text", "text": "thinking...", "index": 0}
                    ],
                    "annotations": [],
                    "prefix": True,
                },
                {
                    "role": "assistant",
                    "content": None,
                    "function_call": {"name": "legacy", "arguments": "{}"},
                },
                {"role": "function", "name": "legacy", "content": "ok"},
            ],
        },
    ),
    (
        "big integers within 2**53 and unicode",
        {
            "model": "m",
            "messages": [{"role": "user", "content": 'héllo 👋 \u0000 "quoted"'}],
            "seed": -(2**63),
            "metadata": {
                "max": 2**53,
                "min": -(2**53),
                "zero": 0,
                "neg": -1,
                "float": 1e-7,
                "big": 1.5e300,
            },
        },
    ),
]


def roundtrip(body: dict[str, Any]) -> dict[str, Any]:
    parsed = request_from_json(copy.deepcopy(body))
    request = over_grpc(parsed)
    validate_request(request)
    return request_to_json(request)


@pytest.mark.parametrize(
    ("name", "body"), ROUND_TRIP_BODIES, ids=[name for name, _ in ROUND_TRIP_BODIES]
)
def test_round_trip_is_exact(name: str, body: dict[str, Any]) -> None:
    expected = {
        key: value for key, value in body.items() if key not in ("stream", "stream_options")
    }
    assert canonical(roundtrip(body)) == canonical(expected)


def test_stream_and_stream_options_are_kept_beside_the_body() -> None:
    body = dict(ROUND_TRIP_BODIES[1][1])
    parsed = request_from_json(body)
    assert parsed.stream is True
    assert parsed.request.stream_options.include_usage is True
    assert not parsed.request.stream_options.HasField("include_obfuscation")
    assert request_from_json({"model": "m", "messages": []}).stream is False


def test_stop_string_sets_stop_is_string() -> None:
    as_string = request_from_json({"model": "m", "messages": [], "stop": "END"}).request
    as_list = request_from_json({"model": "m", "messages": [], "stop": ["END"]}).request
    assert (list(as_string.stop), as_string.stop_is_string) == (["END"], True)
    assert (list(as_list.stop), as_list.stop_is_string) == (["END"], False)


# Documented normalisations: (name, sent, forwarded). Everything else round-trips exactly.
NORMALISED: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "null typed fields are unset",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x", "name": None}],
            "temperature": None,
            "tools": None,
            "user": None,
        },
        {"model": "m", "messages": [{"role": "user", "content": "x"}]},
    ),
    (
        "null extra fields are unset, nested nulls are kept",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x", "audio": None}],
            "reasoning_effort": None,
            "metadata": {"a": None},
        },
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "metadata": {"a": None}},
    ),
    (
        "absent assistant content is sent as null",
        {
            "model": "m",
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                }
            ],
        },
        {
            "model": "m",
            "messages": [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                }
            ],
        },
    ),
    (
        "integral decimals come back as integers",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "temperature": 1.0,
            "logit_bias": {"1": 2.0},
            "top_k": 40.0,
            "metadata": {"v": -0.0},
        },
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "temperature": 1,
            "logit_bias": {"1": 2},
            "top_k": 40,
            "metadata": {"v": 0},
        },
    ),
    (
        "empty stop list is unset",
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": []},
        {"model": "m", "messages": [{"role": "user", "content": "x"}]},
    ),
    (
        "empty typed arrays and maps are unset",
        {
            "model": "m",
            "messages": [{"role": "assistant", "content": "x", "tool_calls": []}],
            "tools": [],
            "logit_bias": {},
        },
        {"model": "m", "messages": [{"role": "assistant", "content": "x"}]},
    ),
    (
        "null inside typed sub-objects is unset",
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "u", "detail": None}}],
                }
            ],
            "tools": [
                {"type": "function", "function": {"name": "f", "description": None, "strict": None}}
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "n", "schema": {}, "strict": None},
            },
        },
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}
            ],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {}}},
        },
    ),
]


@pytest.mark.parametrize(
    ("name", "sent", "forwarded"), NORMALISED, ids=[n for n, _, _ in NORMALISED]
)
def test_documented_normalisations(
    name: str, sent: dict[str, Any], forwarded: dict[str, Any]
) -> None:
    assert canonical(roundtrip(sent)) == canonical(forwarded)


def test_integers_beyond_2_53_are_refused_not_rounded() -> None:
    from rpc_common.status import RpcError

    with pytest.raises(RpcError) as info:
        request_from_json({"model": "m", "messages": [], "metadata": {"id": 2**53 + 1}})
    assert info.value.metadata == {"param": "metadata.id", "code": "invalid_value"}


def test_schema_properties_follow_required_order_after_the_grpc_hop() -> None:
    # Struct is a map: key order is lost on the wire. Structured output is generated in property
    # order, so `properties` is restored from `required` (strict schemas list every property).
    names = ["zeta_reasoning", "alpha_answer", "mid", "beta"]
    schema = {
        "type": "object",
        "properties": {n: {"type": "string"} for n in names},
        "required": names,
    }
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}],
    }
    out = roundtrip(body)
    assert list(out["response_format"]["json_schema"]["schema"]["properties"]) == names
    assert list(out["tools"][0]["function"]["parameters"]["properties"]) == names


def test_other_struct_keys_come_back_sorted() -> None:
    # Deterministic bytes for the same request keep upstream prompt caches warm.
    out = roundtrip(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "metadata": {"b": "1", "c": "2", "a": "3"},
        }
    )
    assert list(out["metadata"]) == ["a", "b", "c"]


def nested(levels: int, as_list: bool = False) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = [value] if as_list else {"a": value}
    return value


def deep_bodies(levels: int, as_list: bool) -> list[tuple[dict[str, Any], str]]:
    """A body per Struct-carried place, with JSON nested `levels` deep there, and its param."""
    deep = nested(levels, as_list)
    base: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    return [
        ({**base, "metadata": deep}, "metadata"),
        (
            {**base, "messages": [{"role": "user", "content": "x", "audio": deep}]},
            "messages[0].audio",
        ),
        (
            {
                **base,
                "messages": [
                    {"role": "user", "content": [{"type": "video_url", "video_url": deep}]}
                ],
            },
            "messages[0].content[0].video_url",
        ),
        (
            {
                **base,
                "tools": [
                    {"type": "function", "function": {"name": "f", "parameters": {"p": deep}}}
                ],
            },
            "tools[0].function.parameters.p",
        ),
        (
            {
                **base,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "n", "schema": {"p": deep}},
                },
            },
            "response_format.json_schema.schema.p",
        ),
    ]


@pytest.mark.parametrize("as_list", [False, True], ids=["objects", "arrays"])
def test_deepest_allowed_nesting_survives_the_grpc_hop(as_list: bool) -> None:
    # protobuf refuses to decode messages nested beyond 100 levels; what we accept must decode.
    for body, _ in deep_bodies(MAX_NESTING, as_list):
        assert canonical(roundtrip(body)) == canonical(body)


@pytest.mark.parametrize("as_list", [False, True], ids=["objects", "arrays"])
def test_deeper_nesting_is_refused_naming_the_place(as_list: bool) -> None:
    from rpc_common.status import RpcError

    for body, param in deep_bodies(MAX_NESTING + 1, as_list):
        with pytest.raises(RpcError) as info:
            request_from_json(body)
        assert info.value.metadata["code"] == "invalid_value"
        assert info.value.metadata["param"].startswith(param)
