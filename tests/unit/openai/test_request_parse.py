"""request_from_json: where each piece of a body lands, and type errors naming the right param."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from native1api.gateway.v1 import chat_pb2
from rpc_common.openai import request_from_json
from rpc_common.openai.jsonvalue import struct_to_json
from rpc_common.status import RpcError
from tests.unit.openai.jsonutil import base_body


def parse_error(body: Any) -> RpcError:
    with pytest.raises(RpcError) as info:
        request_from_json(body)
    return info.value


def test_typed_fields_land_in_typed_fields() -> None:
    request = request_from_json(
        base_body(
            temperature=0.5, max_tokens=10, logit_bias={"7": -1}, tool_choice="auto", user="u"
        )
    ).request
    assert request.temperature == 0.5
    assert request.max_tokens == 10
    assert dict(request.logit_bias) == {"7": -1.0}
    assert request.tool_choice.mode == "auto"
    assert request.user == "u"
    assert not request.extra_fields.fields


def test_unknown_top_level_keys_go_to_extra_fields_verbatim() -> None:
    request = request_from_json(
        base_body(reasoning_effort="high", provider={"order": ["a"]}, top_k=40, store=True)
    ).request
    assert struct_to_json(request.extra_fields) == {
        "provider": {"order": ["a"]},
        "reasoning_effort": "high",
        "store": True,
        "top_k": 40,
    }


def test_unknown_message_keys_go_to_the_message_extra_fields() -> None:
    body = base_body(
        messages=[{"role": "assistant", "content": "x", "reasoning": "r", "annotations": []}]
    )
    message = request_from_json(body).request.messages[0]
    assert struct_to_json(message.extra_fields) == {"annotations": [], "reasoning": "r"}


@pytest.mark.parametrize(
    ("part", "case"),
    [
        ({"type": "text", "text": "t"}, "text"),
        ({"type": "refusal", "refusal": "no"}, "refusal"),
        ({"type": "image_url", "image_url": {"url": "u"}}, "image_url"),
        ({"type": "input_audio", "input_audio": {"data": "d", "format": "mp3"}}, "input_audio"),
        ({"type": "file", "file": {"file_id": "f"}}, "file"),
        ({"type": "video_url", "video_url": {"url": "v"}}, "other"),
        ({"type": "text", "text": "t", "cache_control": {"type": "ephemeral"}}, "other"),
        ({"type": "image_url", "image_url": {"url": "u", "format": "image/png"}}, "other"),
    ],
)
def test_content_parts_land_in_their_case(part: dict[str, Any], case: str) -> None:
    body = base_body(messages=[{"role": "user", "content": [part]}])
    parsed_part = request_from_json(body).request.messages[0].parts.parts[0]
    assert parsed_part.WhichOneof("part") == case
    if case == "other":
        assert struct_to_json(parsed_part.other) == part


def test_null_content_is_unset_and_empty_array_is_kept() -> None:
    null = request_from_json(base_body(messages=[{"role": "assistant", "content": None}])).request
    empty = request_from_json(base_body(messages=[{"role": "user", "content": []}])).request
    assert null.messages[0].WhichOneof("content") is None
    assert empty.messages[0].WhichOneof("content") == "parts"


# (name, body, param, code): each body has exactly one problem.
TYPE_ERRORS: list[tuple[str, Any, str | None, str]] = [
    ("body not an object", [], None, "invalid_type"),
    ("model missing", base_body(model=...), "model", "missing_required_parameter"),
    ("messages missing", base_body(messages=...), "messages", "missing_required_parameter"),
    ("model not a string", base_body(model=5), "model", "invalid_type"),
    ("temperature a string", base_body(temperature="hot"), "temperature", "invalid_type"),
    ("temperature a boolean", base_body(temperature=True), "temperature", "invalid_type"),
    ("top_p an array", base_body(top_p=[1]), "top_p", "invalid_type"),
    (
        "presence_penalty a string",
        base_body(presence_penalty="1"),
        "presence_penalty",
        "invalid_type",
    ),
    (
        "frequency_penalty an object",
        base_body(frequency_penalty={}),
        "frequency_penalty",
        "invalid_type",
    ),
    ("n a decimal", base_body(n=1.5), "n", "invalid_type"),
    ("n an integral decimal", base_body(n=1.0), "n", "invalid_type"),
    ("n a boolean", base_body(n=True), "n", "invalid_type"),
    ("max_tokens a string", base_body(max_tokens="10"), "max_tokens", "invalid_type"),
    (
        "max_completion_tokens a decimal",
        base_body(max_completion_tokens=2.5),
        "max_completion_tokens",
        "invalid_type",
    ),
    ("seed beyond int64", base_body(seed=2**63), "seed", "invalid_value"),
    ("top_logprobs a boolean", base_body(top_logprobs=False), "top_logprobs", "invalid_type"),
    ("messages an object", base_body(messages={}), "messages", "invalid_type"),
    ("message not an object", base_body(messages=["hi"]), "messages[0]", "invalid_type"),
    (
        "role unknown",
        base_body(messages=[{"role": "bot", "content": "x"}]),
        "messages[0].role",
        "invalid_value",
    ),
    (
        "role not a string",
        base_body(messages=[{"role": 3, "content": "x"}]),
        "messages[0].role",
        "invalid_type",
    ),
    (
        "content a number",
        base_body(messages=[{"role": "user", "content": 5}]),
        "messages[0].content",
        "invalid_type",
    ),
    (
        "content an object",
        base_body(messages=[{"role": "user", "content": {"text": "x"}}]),
        "messages[0].content",
        "invalid_type",
    ),
    (
        "name a number",
        base_body(messages=[{"role": "user", "content": "x", "name": 1}]),
        "messages[0].name",
        "invalid_type",
    ),
    (
        "part not an object",
        base_body(messages=[{"role": "user", "content": ["x"]}]),
        "messages[0].content[0]",
        "invalid_type",
    ),
    (
        "part without type",
        base_body(messages=[{"role": "user", "content": [{"text": "x"}]}]),
        "messages[0].content[0].type",
        "missing_required_parameter",
    ),
    (
        "text part without text",
        base_body(messages=[{"role": "user", "content": [{"type": "text"}]}]),
        "messages[0].content[0].text",
        "missing_required_parameter",
    ),
    (
        "text part text a number",
        base_body(messages=[{"role": "user", "content": [{"type": "text", "text": 1}]}]),
        "messages[0].content[0].text",
        "invalid_type",
    ),
    (
        "image part url missing",
        base_body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
        "messages[0].content[0].image_url.url",
        "missing_required_parameter",
    ),
    (
        "image part image_url a string",
        base_body(
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": "u"}]}]
        ),
        "messages[0].content[0].image_url",
        "invalid_type",
    ),
    (
        "audio part format missing",
        base_body(
            messages=[
                {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "d"}}]}
            ]
        ),
        "messages[0].content[0].input_audio.format",
        "missing_required_parameter",
    ),
    (
        "file part filename a number",
        base_body(
            messages=[{"role": "user", "content": [{"type": "file", "file": {"filename": 1}}]}]
        ),
        "messages[0].content[0].file.filename",
        "invalid_type",
    ),
    (
        "tool_calls an object",
        base_body(messages=[{"role": "assistant", "tool_calls": {}}]),
        "messages[0].tool_calls",
        "invalid_type",
    ),
    (
        "tool call arguments an object",
        base_body(
            messages=[
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}
                    ],
                }
            ]
        ),
        "messages[0].tool_calls[0].function.arguments",
        "invalid_type",
    ),
    (
        "tool call unknown key",
        base_body(messages=[{"role": "assistant", "tool_calls": [{"index": 0, "id": "c"}]}]),
        "messages[0].tool_calls[0].index",
        "unknown_parameter",
    ),
    ("stop a number", base_body(stop=5), "stop", "invalid_type"),
    ("stop item a number", base_body(stop=["a", 5]), "stop[1]", "invalid_type"),
    ("logit_bias an array", base_body(logit_bias=[1]), "logit_bias", "invalid_type"),
    (
        "logit_bias value a string",
        base_body(logit_bias={"50256": "x"}),
        "logit_bias.50256",
        "invalid_type",
    ),
    ("logprobs an integer", base_body(logprobs=1), "logprobs", "invalid_type"),
    (
        "parallel_tool_calls a string",
        base_body(parallel_tool_calls="yes"),
        "parallel_tool_calls",
        "invalid_type",
    ),
    ("user a number", base_body(user=1), "user", "invalid_type"),
    ("tools an object", base_body(tools={}), "tools", "invalid_type"),
    ("tool not an object", base_body(tools=["f"]), "tools[0]", "invalid_type"),
    (
        "tool unknown key",
        base_body(tools=[{"type": "function", "function": {"name": "f"}, "cache_control": {}}]),
        "tools[0].cache_control",
        "unknown_parameter",
    ),
    (
        "tool function unknown key",
        base_body(tools=[{"type": "function", "function": {"name": "f", "examples": []}}]),
        "tools[0].function.examples",
        "unknown_parameter",
    ),
    (
        "tool parameters an array",
        base_body(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]),
        "tools[0].function.parameters",
        "invalid_type",
    ),
    (
        "tool strict a string",
        base_body(tools=[{"type": "function", "function": {"name": "f", "strict": "true"}}]),
        "tools[0].function.strict",
        "invalid_type",
    ),
    ("tool_choice a number", base_body(tool_choice=1), "tool_choice", "invalid_type"),
    (
        "tool_choice allowed_tools",
        base_body(tool_choice={"type": "allowed_tools", "allowed_tools": {}}),
        "tool_choice.allowed_tools",
        "unknown_parameter",
    ),
    (
        "tool_choice custom type",
        base_body(tool_choice={"type": "custom"}),
        "tool_choice.type",
        "invalid_value",
    ),
    (
        "tool_choice without name",
        base_body(tool_choice={"type": "function", "function": {}}),
        "tool_choice.function.name",
        "missing_required_parameter",
    ),
    (
        "response_format a string",
        base_body(response_format="json"),
        "response_format",
        "invalid_type",
    ),
    (
        "response_format Together schema",
        base_body(response_format={"type": "json_object", "schema": {}}),
        "response_format.schema",
        "unknown_parameter",
    ),
    (
        "json_schema schema an array",
        base_body(
            response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": []}}
        ),
        "response_format.json_schema.schema",
        "invalid_type",
    ),
    ("stream a string", base_body(stream="true"), "stream", "invalid_type"),
    (
        "stream_options without stream",
        base_body(stream_options={"include_usage": True}),
        "stream_options",
        "invalid_value",
    ),
    (
        "stream_options unknown key",
        base_body(stream=True, stream_options={"chunk_size": 1}),
        "stream_options.chunk_size",
        "unknown_parameter",
    ),
    (
        "stream_options include_usage a string",
        base_body(stream=True, stream_options={"include_usage": "y"}),
        "stream_options.include_usage",
        "invalid_type",
    ),
    (
        "extra with a huge integer",
        base_body(metadata={"n": [1, 2**60]}),
        "metadata.n[1]",
        "invalid_value",
    ),
    (
        "message extra with a huge integer",
        base_body(messages=[{"role": "user", "content": "x", "audio": {"id": -(2**54)}}]),
        "messages[0].audio.id",
        "invalid_value",
    ),
]


@pytest.mark.parametrize(
    ("name", "body", "param", "code"), TYPE_ERRORS, ids=[t[0] for t in TYPE_ERRORS]
)
def test_type_errors_name_the_param(name: str, body: Any, param: str, code: str) -> None:
    error = parse_error(body)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_REQUEST"
    expected = {"code": code} if param is None else {"param": param, "code": code}
    assert error.metadata == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            base_body(temperature="hot"),
            "Invalid type for 'temperature': expected a number, but got a string instead.",
        ),
        (
            base_body(messages={}),
            "Invalid type for 'messages': expected an array, but got an object instead.",
        ),
        (
            base_body(n=1.5),
            "Invalid type for 'n': expected an integer, but got a decimal number instead.",
        ),
        (
            base_body(max_tokens=False),
            "Invalid type for 'max_tokens': expected an integer, but got a boolean instead.",
        ),
        (
            base_body(messages=[{"role": "bot", "content": "x"}]),
            "Invalid value for 'messages[0].role': 'bot'. Supported values are: 'system', 'developer', "
            "'user', 'assistant', 'tool', and 'function'.",
        ),
        (base_body(model=...), "Missing required parameter: 'model'."),
    ],
)
def test_messages_read_like_openai(body: Any, message: str) -> None:
    assert parse_error(body).message == message


def test_long_values_are_not_echoed_in_full() -> None:
    error = parse_error(base_body(messages=[{"role": "x" * 10_000, "content": "x"}]))
    assert len(error.message) < 300


def test_every_role_parses() -> None:
    roles = ["system", "developer", "user", "assistant", "tool", "function"]
    body = base_body(messages=[{"role": role, "content": "x"} for role in roles])
    parsed = request_from_json(body).request
    assert [m.role for m in parsed.messages] == [
        chat_pb2.ROLE_SYSTEM,
        chat_pb2.ROLE_DEVELOPER,
        chat_pb2.ROLE_USER,
        chat_pb2.ROLE_ASSISTANT,
        chat_pb2.ROLE_TOOL,
        chat_pb2.ROLE_FUNCTION,
    ]
