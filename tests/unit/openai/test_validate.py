"""validate_request: each rule accepts its boundary value and refuses the value just outside,
naming the right `param` and OpenAI `code`. Requests come through request_from_json (REST) or
are built as protos (what only gRPC callers can send)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from native1api.gateway.v1 import chat_pb2
from rpc_common.openai import request_from_json, validate_request
from rpc_common.status import RpcError
from tests.unit.openai.jsonutil import base_body, rejection


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def tool(name: str = "f", kind: str = "function") -> dict[str, Any]:
    return {"type": kind, "function": {"name": name, "parameters": {"type": "object"}}}


def schema_format(**json_schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": json_schema}


TEXT = {"type": "text", "text": "t"}
IMAGE = {"type": "image_url", "image_url": {"url": "https://e.com/i.png"}}
AUDIO = {"type": "input_audio", "input_audio": {"data": "d", "format": "wav"}}
FILE = {"type": "file", "file": {"file_id": "file-1"}}
REFUSAL = {"type": "refusal", "refusal": "no"}
VIDEO = {"type": "video_url", "video_url": {"url": "v"}}

# (rule, accepted body, refused body, param, code)
RULES: list[tuple[str, dict[str, Any], dict[str, Any], str, str]] = [
    (
        "model non-empty",
        base_body(model="m"),
        base_body(model=""),
        "model",
        "missing_required_parameter",
    ),
    ("messages non-empty", base_body(), base_body(messages=[]), "messages", "empty_array"),
    (
        "temperature max 2",
        base_body(temperature=2),
        base_body(temperature=2.01),
        "temperature",
        "decimal_above_max_value",
    ),
    (
        "temperature min 0",
        base_body(temperature=0),
        base_body(temperature=-0.01),
        "temperature",
        "decimal_below_min_value",
    ),
    ("top_p max 1", base_body(top_p=1), base_body(top_p=1.001), "top_p", "decimal_above_max_value"),
    ("top_p min 0", base_body(top_p=0), base_body(top_p=-0.1), "top_p", "decimal_below_min_value"),
    ("n min 1", base_body(n=1), base_body(n=0), "n", "integer_below_min_value"),
    (
        "max_tokens min 1",
        base_body(max_tokens=1),
        base_body(max_tokens=0),
        "max_tokens",
        "integer_below_min_value",
    ),
    (
        "max_completion_tokens min 1",
        base_body(max_completion_tokens=1),
        base_body(max_completion_tokens=-5),
        "max_completion_tokens",
        "integer_below_min_value",
    ),
    (
        "presence_penalty max 2",
        base_body(presence_penalty=2),
        base_body(presence_penalty=2.5),
        "presence_penalty",
        "decimal_above_max_value",
    ),
    (
        "presence_penalty min -2",
        base_body(presence_penalty=-2),
        base_body(presence_penalty=-2.1),
        "presence_penalty",
        "decimal_below_min_value",
    ),
    (
        "frequency_penalty max 2",
        base_body(frequency_penalty=2.0),
        base_body(frequency_penalty=3),
        "frequency_penalty",
        "decimal_above_max_value",
    ),
    (
        "frequency_penalty min -2",
        base_body(frequency_penalty=-2),
        base_body(frequency_penalty=-3),
        "frequency_penalty",
        "decimal_below_min_value",
    ),
    (
        "stop at most 4",
        base_body(stop=["a", "b", "c", "d"]),
        base_body(stop=["a", "b", "c", "d", "e"]),
        "stop",
        "array_above_max_length",
    ),
    (
        "top_logprobs max 20",
        base_body(logprobs=True, top_logprobs=20),
        base_body(logprobs=True, top_logprobs=21),
        "top_logprobs",
        "integer_above_max_value",
    ),
    (
        "top_logprobs min 0",
        base_body(logprobs=True, top_logprobs=0),
        base_body(logprobs=True, top_logprobs=-1),
        "top_logprobs",
        "integer_below_min_value",
    ),
    (
        "logit_bias max 100",
        base_body(logit_bias={"1": 100}),
        base_body(logit_bias={"1": 0, "2": 100.5}),
        "logit_bias.2",
        "decimal_above_max_value",
    ),
    (
        "logit_bias min -100",
        base_body(logit_bias={"1": -100}),
        base_body(logit_bias={"9": -101}),
        "logit_bias.9",
        "decimal_below_min_value",
    ),
    (
        "tool type function",
        base_body(tools=[tool()]),
        base_body(tools=[tool(), tool(kind="custom")]),
        "tools[1].type",
        "invalid_value",
    ),
    (
        "tool type present",
        base_body(tools=[tool()]),
        base_body(tools=[{"function": {"name": "f"}}]),
        "tools[0].type",
        "missing_required_parameter",
    ),
    (
        "tool name non-empty",
        base_body(tools=[tool("a")]),
        base_body(tools=[tool("")]),
        "tools[0].function.name",
        "missing_required_parameter",
    ),
    (
        "tool function present",
        base_body(tools=[tool()]),
        base_body(tools=[{"type": "function"}]),
        "tools[0].function.name",
        "missing_required_parameter",
    ),
    (
        "tool_choice none",
        base_body(tool_choice="none"),
        base_body(tool_choice="any"),
        "tool_choice",
        "invalid_value",
    ),
    (
        "tool_choice auto",
        base_body(tool_choice="auto"),
        base_body(tool_choice="Auto"),
        "tool_choice",
        "invalid_value",
    ),
    (
        "tool_choice required",
        base_body(tool_choice="required"),
        base_body(tool_choice=""),
        "tool_choice",
        "invalid_value",
    ),
    (
        "tool_choice function name non-empty",
        base_body(tool_choice={"type": "function", "function": {"name": "f"}}),
        base_body(tool_choice={"type": "function", "function": {"name": ""}}),
        "tool_choice.function.name",
        "missing_required_parameter",
    ),
    (
        "response_format text",
        base_body(response_format={"type": "text"}),
        base_body(response_format={"type": "xml"}),
        "response_format.type",
        "invalid_value",
    ),
    (
        "response_format json_object",
        base_body(response_format={"type": "json_object"}),
        base_body(response_format={}),
        "response_format.type",
        "missing_required_parameter",
    ),
    (
        "json_schema needs json_schema",
        base_body(response_format=schema_format(name="n", schema={})),
        base_body(response_format={"type": "json_schema"}),
        "response_format.json_schema",
        "missing_required_parameter",
    ),
    (
        "json_schema needs a name",
        base_body(response_format=schema_format(name="n", schema={})),
        base_body(response_format=schema_format(schema={})),
        "response_format.json_schema.name",
        "missing_required_parameter",
    ),
    (
        "json_schema needs a schema",
        base_body(response_format=schema_format(name="n", schema={"type": "object"})),
        base_body(response_format=schema_format(name="n")),
        "response_format.json_schema.schema",
        "missing_required_parameter",
    ),
    (
        "tool message needs tool_call_id",
        base_body(messages=[{"role": "tool", "tool_call_id": "c", "content": "r"}]),
        base_body(messages=[user("q"), {"role": "tool", "content": "r"}]),
        "messages[1].tool_call_id",
        "missing_required_parameter",
    ),
    (
        "user content required",
        base_body(messages=[user("")]),
        base_body(messages=[{"role": "user"}]),
        "messages[0].content",
        "missing_required_parameter",
    ),
    (
        "assistant content optional, system required",
        base_body(messages=[{"role": "assistant", "content": None}]),
        base_body(messages=[{"role": "system", "content": None}]),
        "messages[0].content",
        "missing_required_parameter",
    ),
    (
        "parts non-empty",
        base_body(messages=[user([TEXT])]),
        base_body(messages=[user([])]),
        "messages[0].content",
        "empty_array",
    ),
    (
        "system parts: text only",
        base_body(messages=[{"role": "system", "content": [TEXT, TEXT]}]),
        base_body(messages=[{"role": "system", "content": [TEXT, IMAGE]}]),
        "messages[0].content[1].type",
        "invalid_value",
    ),
    (
        "developer parts: text only",
        base_body(messages=[{"role": "developer", "content": [TEXT]}]),
        base_body(messages=[{"role": "developer", "content": [REFUSAL]}]),
        "messages[0].content[0].type",
        "invalid_value",
    ),
    (
        "tool parts: text only",
        base_body(messages=[{"role": "tool", "tool_call_id": "c", "content": [TEXT]}]),
        base_body(messages=[{"role": "tool", "tool_call_id": "c", "content": [FILE]}]),
        "messages[0].content[0].type",
        "invalid_value",
    ),
    (
        "assistant parts: text and refusal",
        base_body(messages=[{"role": "assistant", "content": [TEXT, REFUSAL]}]),
        base_body(messages=[{"role": "assistant", "content": [TEXT, AUDIO]}]),
        "messages[0].content[1].type",
        "invalid_value",
    ),
    (
        "user parts: text, image, audio, file (and untyped media)",
        base_body(messages=[user([TEXT, IMAGE, AUDIO, FILE, VIDEO])]),
        base_body(messages=[user([TEXT, REFUSAL])]),
        "messages[0].content[1].type",
        "invalid_value",
    ),
    (
        "untyped media only in user messages",
        base_body(messages=[user([VIDEO])]),
        base_body(messages=[{"role": "system", "content": [VIDEO]}]),
        "messages[0].content[0].type",
        "invalid_value",
    ),
    (
        "a text part with extra keys is still a text part",
        base_body(
            messages=[
                {"role": "system", "content": [{**TEXT, "cache_control": {"type": "ephemeral"}}]}
            ]
        ),
        base_body(
            messages=[
                {"role": "system", "content": [{**IMAGE, "cache_control": {"type": "ephemeral"}}]}
            ]
        ),
        "messages[0].content[0].type",
        "invalid_value",
    ),
    (
        "image url non-empty",
        base_body(messages=[user([IMAGE])]),
        base_body(messages=[user([{"type": "image_url", "image_url": {"url": ""}}])]),
        "messages[0].content[0].image_url.url",
        "missing_required_parameter",
    ),
]


@pytest.mark.parametrize(("rule", "ok", "bad", "param", "code"), RULES, ids=[r[0] for r in RULES])
def test_boundary_accepted(
    rule: str, ok: dict[str, Any], bad: dict[str, Any], param: str, code: str
) -> None:
    validate_request(request_from_json(ok).request)


@pytest.mark.parametrize(("rule", "ok", "bad", "param", "code"), RULES, ids=[r[0] for r in RULES])
def test_just_outside_refused(
    rule: str, ok: dict[str, Any], bad: dict[str, Any], param: str, code: str
) -> None:
    error = rejection(bad)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_REQUEST"
    assert error.metadata == {"param": param, "code": code}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            base_body(temperature=3),
            "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 3 instead.",
        ),
        (
            base_body(top_p=-0.5),
            "Invalid 'top_p': decimal below minimum value. Expected a value >= 0, but got -0.5 instead.",
        ),
        (
            base_body(n=0),
            "Invalid 'n': integer below minimum value. Expected a value >= 1, but got 0 instead.",
        ),
        (
            base_body(stop=list("abcde")),
            "Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array with length 5 instead.",
        ),
        (
            base_body(messages=[]),
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        ),
        (
            base_body(tool_choice="any"),
            "Invalid value for 'tool_choice': 'any'. Supported values are: 'none', 'auto', and 'required'.",
        ),
        (
            base_body(tools=[tool(kind="custom")]),
            "Invalid value for 'tools[0].type': 'custom'. Supported value is: 'function'.",
        ),
    ],
)
def test_messages_read_like_openai(body: dict[str, Any], message: str) -> None:
    assert rejection(body).message == message


# Requests only a gRPC caller can build. (name, request builder, param, code)


def grpc_request(**fields: Any) -> chat_pb2.ChatCompletionRequest:
    request = chat_pb2.ChatCompletionRequest(
        model="m", messages=[chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, text="Hi")]
    )
    for name, value in fields.items():
        setattr(request, name, value)
    return request


def with_message(message: chat_pb2.ChatMessage) -> chat_pb2.ChatCompletionRequest:
    request = grpc_request()
    request.messages.append(message)
    return request


def with_extra(path: list[str], value: float) -> chat_pb2.ChatCompletionRequest:
    request = grpc_request()
    struct = request.extra_fields
    for key in path[:-1]:
        struct = struct.fields[key].struct_value
    struct.fields[path[-1]].number_value = value
    return request


def with_bias(value: float) -> chat_pb2.ChatCompletionRequest:
    request = grpc_request()
    request.logit_bias["42"] = value
    return request


def with_part(
    part: chat_pb2.ContentPart, role: chat_pb2.Role.ValueType = chat_pb2.ROLE_USER
) -> chat_pb2.ChatCompletionRequest:
    return with_message(chat_pb2.ChatMessage(role=role, parts=chat_pb2.ContentParts(parts=[part])))


def other_part(**fields: Any) -> chat_pb2.ContentPart:
    part = chat_pb2.ContentPart()
    part.other.update(fields)
    return part


def with_inf_parameters() -> chat_pb2.ChatCompletionRequest:
    request = grpc_request()
    function = request.tools.add(type="function").function
    function.name = "f"
    function.parameters.fields["maximum"].number_value = math.inf
    return request


def with_two_stops_as_string() -> chat_pb2.ChatCompletionRequest:
    request = grpc_request(stop_is_string=True)
    request.stop.extend(["a", "b"])
    return request


def with_empty_function_choice() -> chat_pb2.ChatCompletionRequest:
    request = grpc_request()
    request.tool_choice.function_name = ""
    return request


def with_message_extra_content() -> chat_pb2.ChatCompletionRequest:
    request = with_message(chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, text="x"))
    request.messages[1].extra_fields.fields["content"].string_value = "smuggled"
    return request


Build = Callable[[], chat_pb2.ChatCompletionRequest]

GRPC_ONLY: list[tuple[str, Build, str, str]] = [
    (
        "role unspecified",
        lambda: with_message(chat_pb2.ChatMessage(text="x")),
        "messages[1].role",
        "missing_required_parameter",
    ),
    (
        "role unknown enum value",
        lambda: with_message(chat_pb2.ChatMessage(role=42, text="x")),  # type: ignore[arg-type]
        "messages[1].role",
        "invalid_value",
    ),
    ("temperature NaN", lambda: grpc_request(temperature=math.nan), "temperature", "invalid_value"),
    ("top_p infinite", lambda: grpc_request(top_p=math.inf), "top_p", "invalid_value"),
    (
        "penalty -infinite",
        lambda: grpc_request(presence_penalty=-math.inf),
        "presence_penalty",
        "invalid_value",
    ),
    ("logit_bias NaN", lambda: with_bias(math.nan), "logit_bias.42", "invalid_value"),
    ("extra_fields NaN", lambda: with_extra(["top_k"], math.nan), "top_k", "invalid_value"),
    (
        "nested extra_fields infinity",
        lambda: with_extra(["provider", "max_price"], math.inf),
        "provider.max_price",
        "invalid_value",
    ),
    (
        "tool parameters infinity",
        with_inf_parameters,
        "tools[0].function.parameters.maximum",
        "invalid_value",
    ),
    ("extra_fields shadowing model", lambda: with_extra(["model"], 1), "model", "invalid_value"),
    ("extra_fields smuggling stream", lambda: with_extra(["stream"], 1), "stream", "invalid_value"),
    (
        "message extra shadowing content",
        with_message_extra_content,
        "messages[1].content",
        "invalid_value",
    ),
    ("stop_is_string with two stops", with_two_stops_as_string, "stop", "invalid_value"),
    (
        "empty content part",
        lambda: with_part(chat_pb2.ContentPart()),
        "messages[1].content[0].type",
        "missing_required_parameter",
    ),
    (
        "other part without type",
        lambda: with_part(other_part(text="x")),
        "messages[1].content[0].type",
        "missing_required_parameter",
    ),
    (
        "other part with NaN",
        lambda: with_part(other_part(type="video_url", n=math.nan)),
        "messages[1].content[0].n",
        "invalid_value",
    ),
    (
        "empty function_name",
        with_empty_function_choice,
        "tool_choice.function.name",
        "missing_required_parameter",
    ),
]


@pytest.mark.parametrize(
    ("name", "build", "param", "code"), GRPC_ONLY, ids=[g[0] for g in GRPC_ONLY]
)
def test_grpc_only_violations(name: str, build: Build, param: str, code: str) -> None:
    with pytest.raises(RpcError) as info:
        validate_request(build())
    assert info.value.metadata == {"param": param, "code": code}


def test_an_empty_tool_choice_is_ignored() -> None:
    request = grpc_request()
    request.tool_choice.SetInParent()
    validate_request(request)


@pytest.mark.parametrize(
    "model",
    ["bad model", "x\nINFO forged log line", "\x00", "m" * 257, "modèle", "tab\tbed"],
)
def test_model_ids_are_printable_ascii_without_spaces(model: str) -> None:
    req = chat_pb2.ChatCompletionRequest(
        model=model, messages=[chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, text="hi")]
    )
    with pytest.raises(RpcError) as info:
        validate_request(req)
    assert info.value.metadata["param"] == "model"


@pytest.mark.parametrize(
    "model",
    [
        "@cf/meta/llama-3.2-3b-instruct",
        "openai/gpt-oss-20b:free",
        "Qwen/Qwen3.5-35B-A3B",
        "m" * 256,
    ],
)
def test_real_model_ids_pass(model: str) -> None:
    req = chat_pb2.ChatCompletionRequest(
        model=model, messages=[chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, text="hi")]
    )
    validate_request(req)


# At most 2,048 messages (OpenAI's limit), for REST bodies and gRPC-built requests alike --------


def grpc_messages(count: int) -> chat_pb2.ChatCompletionRequest:
    return chat_pb2.ChatCompletionRequest(
        model="m",
        messages=[chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, text="hi")] * count,
    )


def test_2048_messages_are_accepted() -> None:
    validate_request(request_from_json(base_body(messages=[user("hi")] * 2048)).request)
    validate_request(grpc_messages(2048))


def test_2049_messages_are_refused_naming_messages() -> None:
    error = rejection(base_body(messages=[user("hi")] * 2049))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.metadata == {"param": "messages", "code": "array_above_max_length"}
    assert error.message == (
        "Invalid 'messages': array too long. Expected an array with maximum length 2048, "
        "but got an array with length 2049 instead."
    )
    with pytest.raises(RpcError) as info:
        validate_request(grpc_messages(2049))
    assert info.value.metadata == {"param": "messages", "code": "array_above_max_length"}


def test_the_message_count_is_checked_before_the_messages() -> None:
    """A huge list is refused for its length, not after validating every message in it."""
    request = chat_pb2.ChatCompletionRequest(
        model="m", messages=[chat_pb2.ChatMessage()] * 5000
    )  # every message lacks its role
    with pytest.raises(RpcError) as info:
        validate_request(request)
    assert info.value.metadata["param"] == "messages"
