"""OpenAI request JSON -> `ChatCompletionRequest` (the REST bridge's side).

`request_from_json` checks types only; the value rules (ranges, roles, parts per role) are in
`validate.py` because the gateway applies them to gRPC callers too. What goes where:

- every OpenAI field with a typed proto home goes there; JSON `null` means "not set";
- any other top-level key travels verbatim in `extra_fields` (nulls are "not set" there too);
  the gateway forwards it or refuses the request naming it (SPEC §2: nothing is dropped);
- unknown message keys go to that message's `extra_fields`; content parts whose type (or shape,
  e.g. a text part with `cache_control`) has no typed home go to `ContentPart.other` verbatim;
- an unknown key inside a typed object (a tool, `tool_choice`, `response_format`, ...) has
  nowhere to go in the protos, so it is refused with `unknown_parameter` rather than dropped;
- `stream` is not part of the proto (the RPC chosen says it); it is returned beside the request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from native1api.gateway.v1 import chat_pb2
from rpc_common.openai.errors import (
    describe,
    invalid,
    invalid_type,
    invalid_value,
    missing,
    unknown_parameter,
)
from rpc_common.openai.jsonvalue import fill_struct, fill_value
from rpc_common.openai.names import ROLE_VALUES

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A parsed REST body: the proto request plus `stream`, which the proto does not carry.

    A dataclass rather than a tuple so call sites read `parsed.stream`, not `parsed[1]`.
    """

    request: chat_pb2.ChatCompletionRequest
    stream: bool


def request_from_json(body: Any) -> ParsedRequest:
    """Convert a parsed OpenAI Chat Completions body; type errors raise INVALID_ARGUMENT."""
    if not isinstance(body, dict):
        raise invalid(
            f"Invalid request body: expected a JSON object, but got {describe(body)} instead.",
            None,
            "invalid_type",
        )
    request = chat_pb2.ChatCompletionRequest()
    stream = False
    for key, value in body.items():
        if value is None:
            continue  # JSON null = not set, for typed and extra fields alike
        if key == "stream":
            stream = _boolean(value, key)
            continue
        parse = _TOP_LEVEL.get(key)
        if parse is not None:
            parse(request, value, key)
        else:
            fill_value(request.extra_fields.fields[key], value, key)
    if body.get("model") is None:
        raise missing("model")
    if body.get("messages") is None:
        raise missing("messages")
    if request.HasField("stream_options") and not stream:
        # OpenAI refuses this too; accepting it would silently ignore what the client asked for.
        raise invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
            "invalid_value",
        )
    return ParsedRequest(request, stream)


# Scalars ------------------------------------------------------------------------------------


def _string(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise invalid_type(param, "a string", value)
    return value


def _boolean(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise invalid_type(param, "a boolean", value)
    return value


def _number(value: Any, param: str) -> float:
    # bool is an int subclass; OpenAI refuses `true` for a number, so do we.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_type(param, "a number", value)
    try:
        return float(value)
    except OverflowError:
        raise invalid(f"Invalid '{param}': number out of range.", param, "invalid_value") from None


def _integer(value: Any, param: str) -> int:
    # A decimal such as 1.0 is refused like OpenAI does, so the upstream sees what was sent.
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_type(param, "an integer", value)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise invalid(f"Invalid '{param}': integer out of range.", param, "invalid_value")
    return value


def _object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    return value


def _array(value: Any, param: str) -> list[Any]:
    if not isinstance(value, list):
        raise invalid_type(param, "an array", value)
    return value


# Top-level fields ---------------------------------------------------------------------------

_Parse = Callable[[chat_pb2.ChatCompletionRequest, Any, str], None]


def _set_model(req: chat_pb2.ChatCompletionRequest, value: Any, param: str) -> None:
    req.model = _string(value, param)


def _set_messages(req: chat_pb2.ChatCompletionRequest, value: Any, param: str) -> None:
    for index, raw in enumerate(_array(value, param)):
        _parse_message(req.messages.add(), raw, f"{param}[{index}]")


def _set_stop(req: chat_pb2.ChatCompletionRequest, value: Any, param: str) -> None:
    if isinstance(value, str):
        req.stop.append(value)
        req.stop_is_string = True  # forwarded as a string again, exactly as sent
    elif isinstance(value, list):
        req.stop.extend(_string(item, f"{param}[{i}]") for i, item in enumerate(value))
    else:
        raise invalid_type(param, "a string or an array of strings", value)


def _set_logit_bias(req: chat_pb2.ChatCompletionRequest, value: Any, param: str) -> None:
    bias = req.logit_bias
    for token, weight in _object(value, param).items():
        bias[token] = _number(weight, f"{param}.{token}")


def _set_tools(req: chat_pb2.ChatCompletionRequest, value: Any, param: str) -> None:
    for index, raw in enumerate(_array(value, param)):
        _parse_tool(req.tools.add(), raw, f"{param}[{index}]")


def _set_tool_choice(req: chat_pb2.ChatCompletionRequest, value: Any, param: str) -> None:
    choice = req.tool_choice
    if isinstance(value, str):
        choice.mode = value  # the mode's value is checked by validate_request
        return
    raw = _object(value, param)
    for key in raw:
        if key not in ("type", "function"):
            raise unknown_parameter(f"{param}.{key}")
    kind = raw.get("type")
    if kind is None:
        raise missing(f"{param}.type")
    if _string(kind, f"{param}.type") != "function":
        # `allowed_tools` / `custom` choices have no home in ToolChoice (see the report).
        raise invalid_value(f"{param}.type", kind, ("function",))
    function = _object(raw.get("function"), f"{param}.function")
    for key in function:
        if key != "name":
            raise unknown_parameter(f"{param}.function.{key}")
    name = function.get("name")
    if name is None:
        raise missing(f"{param}.function.name")
    choice.function_name = _string(name, f"{param}.function.name")


def _set_response_format(req: chat_pb2.ChatCompletionRequest, value: Any, param: str) -> None:
    fmt = req.response_format
    fmt.SetInParent()
    for key, item in _object(value, param).items():
        if item is None:
            continue
        if key == "type":
            fmt.type = _string(item, f"{param}.type")
        elif key == "json_schema":
            _parse_json_schema(fmt.json_schema, item, f"{param}.json_schema")
        else:
            raise unknown_parameter(f"{param}.{key}")


def _parse_json_schema(target: chat_pb2.JsonSchemaFormat, value: Any, param: str) -> None:
    target.SetInParent()
    for key, item in _object(value, param).items():
        if item is None:
            continue
        if key == "name":
            target.name = _string(item, f"{param}.name")
        elif key == "description":
            target.description = _string(item, f"{param}.description")
        elif key == "schema":
            target.schema.SetInParent()
            fill_struct(target.schema, _object(item, f"{param}.schema"), f"{param}.schema")
        elif key == "strict":
            target.strict = _boolean(item, f"{param}.strict")
        else:
            raise unknown_parameter(f"{param}.{key}")


def _set_stream_options(req: chat_pb2.ChatCompletionRequest, value: Any, param: str) -> None:
    options = req.stream_options
    options.SetInParent()
    for key, item in _object(value, param).items():
        if item is None:
            continue
        if key == "include_usage":
            options.include_usage = _boolean(item, f"{param}.{key}")
        elif key == "include_obfuscation":
            options.include_obfuscation = _boolean(item, f"{param}.{key}")
        else:
            raise unknown_parameter(f"{param}.{key}")


def _setter(field: str, convert: Callable[[Any, str], Any]) -> _Parse:
    """A parser that stores `convert(value)` in the scalar field `field`."""

    def parse(req: chat_pb2.ChatCompletionRequest, value: Any, param: str) -> None:
        setattr(req, field, convert(value, param))

    return parse


_TOP_LEVEL: Final[dict[str, _Parse]] = {
    "model": _set_model,
    "messages": _set_messages,
    "temperature": _setter("temperature", _number),
    "top_p": _setter("top_p", _number),
    "max_tokens": _setter("max_tokens", _integer),
    "max_completion_tokens": _setter("max_completion_tokens", _integer),
    "n": _setter("n", _integer),
    "stop": _set_stop,
    "seed": _setter("seed", _integer),
    "presence_penalty": _setter("presence_penalty", _number),
    "frequency_penalty": _setter("frequency_penalty", _number),
    "logit_bias": _set_logit_bias,
    "logprobs": _setter("logprobs", _boolean),
    "top_logprobs": _setter("top_logprobs", _integer),
    "tools": _set_tools,
    "tool_choice": _set_tool_choice,
    "parallel_tool_calls": _setter("parallel_tool_calls", _boolean),
    "response_format": _set_response_format,
    "user": _setter("user", _string),
    "stream_options": _set_stream_options,
}

# The JSON names with a typed home (plus `stream`): `extra_fields` must never hold one of these,
# or a gRPC caller could smuggle a second `model` or a `stream` past the typed checks.
TYPED_REQUEST_FIELDS: Final = frozenset([*_TOP_LEVEL, "stream"])


# Tools ----------------------------------------------------------------------------------------


def _parse_tool(tool: chat_pb2.Tool, raw: Any, param: str) -> None:
    for key, value in _object(raw, param).items():
        if value is None:
            continue
        if key == "type":
            tool.type = _string(value, f"{param}.type")
        elif key == "function":
            _parse_function(tool.function, value, f"{param}.function")
        else:
            raise unknown_parameter(f"{param}.{key}")


def _parse_function(function: chat_pb2.FunctionDefinition, raw: Any, param: str) -> None:
    function.SetInParent()
    for key, value in _object(raw, param).items():
        if value is None:
            continue
        if key == "name":
            function.name = _string(value, f"{param}.name")
        elif key == "description":
            function.description = _string(value, f"{param}.description")
        elif key == "parameters":
            function.parameters.SetInParent()  # `{}` (no arguments) is common and must survive
            fill_struct(
                function.parameters, _object(value, f"{param}.parameters"), f"{param}.parameters"
            )
        elif key == "strict":
            function.strict = _boolean(value, f"{param}.strict")
        else:
            raise unknown_parameter(f"{param}.{key}")


# Messages -------------------------------------------------------------------------------------

_ROLES_LISTED: Final = ("system", "developer", "user", "assistant", "tool", "function")


def _parse_message(message: chat_pb2.ChatMessage, raw: Any, param: str) -> None:
    for key, value in _object(raw, param).items():
        if value is None:
            continue  # `content: null` on a tool-calling assistant message = no content
        field_param = f"{param}.{key}"
        if key == "role":
            role = ROLE_VALUES.get(_string(value, field_param))
            if role is None:
                raise invalid_value(field_param, value, _ROLES_LISTED)
            message.role = role
        elif key == "content":
            _parse_content(message, value, field_param)
        elif key == "name":
            message.name = _string(value, field_param)
        elif key == "tool_calls":
            for index, call in enumerate(_array(value, field_param)):
                _parse_tool_call(message.tool_calls.add(), call, f"{field_param}[{index}]")
        elif key == "tool_call_id":
            message.tool_call_id = _string(value, field_param)
        elif key == "refusal":
            message.refusal = _string(value, field_param)
        else:
            fill_value(message.extra_fields.fields[key], value, field_param)


TYPED_MESSAGE_FIELDS: Final = frozenset(
    ("role", "content", "name", "tool_calls", "tool_call_id", "refusal")
)


def _parse_tool_call(call: chat_pb2.ToolCall, raw: Any, param: str) -> None:
    for key, value in _object(raw, param).items():
        if value is None:
            continue
        if key == "id":
            call.id = _string(value, f"{param}.id")
        elif key == "type":
            call.type = _string(value, f"{param}.type")
        elif key == "function":
            function = call.function
            function.SetInParent()
            for name, item in _object(value, f"{param}.function").items():
                if item is None:
                    continue
                if name == "name":
                    function.name = _string(item, f"{param}.function.name")
                elif name == "arguments":
                    function.arguments = _string(item, f"{param}.function.arguments")
                else:
                    raise unknown_parameter(f"{param}.function.{name}")
        else:
            raise unknown_parameter(f"{param}.{key}")


def _parse_content(message: chat_pb2.ChatMessage, value: Any, param: str) -> None:
    if isinstance(value, str):
        message.text = value
        return
    if not isinstance(value, list):
        raise invalid_type(param, "a string or an array of content parts", value)
    parts = message.parts
    parts.SetInParent()  # `[]` stays a (rejected later) empty array rather than vanishing
    for index, raw in enumerate(value):
        _parse_part(parts.parts.add(), raw, f"{param}[{index}]")


# Content parts --------------------------------------------------------------------------------


def _parse_part(part: chat_pb2.ContentPart, raw: Any, param: str) -> None:
    obj = _object(raw, param)
    kind = obj.get("type")
    if kind is None:
        raise missing(f"{param}.type")
    parse = _PARTS.get(_string(kind, f"{param}.type"))
    if parse is None or not parse(part, obj, param):
        # An unknown type, or a known type with keys the typed case cannot hold (e.g.
        # `cache_control` for Anthropic via OpenRouter): keep the whole part verbatim.
        part.Clear()
        fill_struct(part.other, obj, param)


def _payload(obj: Mapping[str, Any], key: str, param: str) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        raise missing(f"{param}.{key}")
    return _object(value, f"{param}.{key}")


def _optional_strings(obj: Mapping[str, Any], keys: tuple[str, ...], param: str) -> bool:
    """Type-check `keys` of `obj`; True when `obj` has no other keys (fits the typed case)."""
    for key in keys:
        value = obj.get(key)
        if value is not None:
            _string(value, f"{param}.{key}")
    return all(key in keys for key in obj)


def _required_string(obj: Mapping[str, Any], key: str, param: str) -> str:
    value = obj.get(key)
    if value is None:
        raise missing(f"{param}.{key}")
    return _string(value, f"{param}.{key}")


def _text_part(part: chat_pb2.ContentPart, obj: dict[str, Any], param: str) -> bool:
    part.text = _required_string(obj, "text", param)
    return obj.keys() <= {"type", "text"}


def _refusal_part(part: chat_pb2.ContentPart, obj: dict[str, Any], param: str) -> bool:
    part.refusal = _required_string(obj, "refusal", param)
    return obj.keys() <= {"type", "refusal"}


def _image_part(part: chat_pb2.ContentPart, obj: dict[str, Any], param: str) -> bool:
    image = _payload(obj, "image_url", param)
    inner = f"{param}.image_url"
    fits = _optional_strings(image, ("url", "detail"), inner)
    part.image_url.url = _required_string(image, "url", inner)
    if image.get("detail") is not None:
        part.image_url.detail = image["detail"]
    return fits and obj.keys() <= {"type", "image_url"}


def _audio_part(part: chat_pb2.ContentPart, obj: dict[str, Any], param: str) -> bool:
    audio = _payload(obj, "input_audio", param)
    inner = f"{param}.input_audio"
    fits = _optional_strings(audio, ("data", "format"), inner)
    part.input_audio.data = _required_string(audio, "data", inner)
    part.input_audio.format = _required_string(audio, "format", inner)
    return fits and obj.keys() <= {"type", "input_audio"}


def _file_part(part: chat_pb2.ContentPart, obj: dict[str, Any], param: str) -> bool:
    file = _payload(obj, "file", param)
    fields = ("file_data", "file_id", "filename")
    fits = _optional_strings(file, fields, f"{param}.file")
    target = part.file
    target.SetInParent()
    for key in fields:
        if file.get(key) is not None:
            setattr(target, key, file[key])
    return fits and obj.keys() <= {"type", "file"}


_PARTS: Final[dict[str, Callable[[chat_pb2.ContentPart, dict[str, Any], str], bool]]] = {
    "text": _text_part,
    "refusal": _refusal_part,
    "image_url": _image_part,
    "input_audio": _audio_part,
    "file": _file_part,
}
