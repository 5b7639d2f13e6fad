"""The semantic rules of a Chat Completions request (SPEC §2), for REST and gRPC callers alike.

`validate_request` raises the first violation as INVALID_ARGUMENT with OpenAI's `param` (a path
such as `messages[1].content[0].type`) and `code` (`decimal_above_max_value`, ...), worded like
OpenAI's own errors so clients that show them read naturally.
"""

from __future__ import annotations

import math
import re
from typing import Final

from google.protobuf import struct_pb2

from native1api.gateway.v1 import chat_pb2
from rpc_common.openai.errors import invalid, invalid_value, missing, number_text
from rpc_common.openai.jsonvalue import first_non_finite
from rpc_common.openai.names import ROLE_NAMES
from rpc_common.openai.request import TYPED_MESSAGE_FIELDS, TYPED_REQUEST_FIELDS

MAX_STOP_SEQUENCES: Final = 4
# OpenAI's own limit; also bounds the work one request makes (each message is validated,
# converted and forwarded) for REST and gRPC callers alike.
MAX_MESSAGES: Final = 2048
TOOL_CHOICE_MODES: Final = ("none", "auto", "required")
RESPONSE_FORMAT_TYPES: Final = ("text", "json_object", "json_schema")

_TEXT_ONLY: Final = ("text",)
# Which content part types each role may send (wire-formats §1.2). Part types we have no typed
# home for (Together's `video_url`, ...) are media, so only user messages may carry them; the
# provider adapter then forwards them or refuses the request naming the part.
_PARTS_BY_ROLE: Final[dict[chat_pb2.Role.ValueType, tuple[str, ...]]] = {
    chat_pb2.ROLE_SYSTEM: _TEXT_ONLY,
    chat_pb2.ROLE_DEVELOPER: _TEXT_ONLY,
    chat_pb2.ROLE_TOOL: _TEXT_ONLY,
    chat_pb2.ROLE_FUNCTION: _TEXT_ONLY,
    chat_pb2.ROLE_ASSISTANT: ("text", "refusal"),
    chat_pb2.ROLE_USER: ("text", "image_url", "input_audio", "file"),
}
_MODEL_ID: Final = re.compile(r"[!-~]{1,256}")
_KNOWN_PART_TYPES: Final = frozenset(("text", "refusal", "image_url", "input_audio", "file"))
# Roles whose `content` OpenAI requires; assistant (tool calls) and function may send null.
_CONTENT_REQUIRED: Final = frozenset(
    (chat_pb2.ROLE_SYSTEM, chat_pb2.ROLE_DEVELOPER, chat_pb2.ROLE_USER, chat_pb2.ROLE_TOOL)
)


def validate_request(req: chat_pb2.ChatCompletionRequest) -> None:
    """Raise INVALID_ARGUMENT (with `param` and `code`) for the first rule `req` breaks."""
    if not req.model:
        raise missing("model")
    if not _MODEL_ID.fullmatch(req.model):
        # Model ids go into upstream URLs, logs and metric labels: printable ASCII, no spaces.
        raise invalid(
            "Invalid 'model': a model id is 1 to 256 printable ASCII characters without spaces.",
            "model",
            "invalid_value",
        )
    if not req.messages:
        raise _empty_array("messages")
    if len(req.messages) > MAX_MESSAGES:
        raise invalid(
            f"Invalid 'messages': array too long. Expected an array with maximum length "
            f"{MAX_MESSAGES}, but got an array with length {len(req.messages)} instead.",
            "messages",
            "array_above_max_length",
        )
    for index, message in enumerate(req.messages):
        _check_message(message, f"messages[{index}]")

    if req.HasField("temperature"):
        _check_decimal(req.temperature, "temperature", 0, 2)
    if req.HasField("top_p"):
        _check_decimal(req.top_p, "top_p", 0, 1)
    if req.HasField("presence_penalty"):
        _check_decimal(req.presence_penalty, "presence_penalty", -2, 2)
    if req.HasField("frequency_penalty"):
        _check_decimal(req.frequency_penalty, "frequency_penalty", -2, 2)
    if req.HasField("n"):
        _check_integer(req.n, "n", 1)
    if req.HasField("max_tokens"):
        _check_integer(req.max_tokens, "max_tokens", 1)
    if req.HasField("max_completion_tokens"):
        _check_integer(req.max_completion_tokens, "max_completion_tokens", 1)
    if req.HasField("top_logprobs"):
        _check_integer(req.top_logprobs, "top_logprobs", 0, 20)
    _check_stop(req)
    bias = req.logit_bias
    for token in sorted(bias):
        _check_decimal(bias[token], f"logit_bias.{token}", -100, 100)
    for index, tool in enumerate(req.tools):
        _check_tool(tool, f"tools[{index}]")
    if req.HasField("tool_choice"):
        _check_tool_choice(req.tool_choice)
    if req.HasField("response_format"):
        _check_response_format(req.response_format)
    _check_extras(req.extra_fields, "", TYPED_REQUEST_FIELDS)


def _empty_array(param: str) -> Exception:
    return invalid(
        f"Invalid '{param}': empty array. Expected an array with minimum length 1, "
        "but got an empty array instead.",
        param,
        "empty_array",
    )


def _check_decimal(value: float, param: str, low: float, high: float) -> None:
    if not math.isfinite(value):
        raise invalid(
            f"Invalid '{param}': expected a finite number, but got {value} instead.",
            param,
            "invalid_value",
        )
    if value < low:
        raise invalid(
            f"Invalid '{param}': decimal below minimum value. Expected a value >= "
            f"{number_text(low)}, but got {number_text(value)} instead.",
            param,
            "decimal_below_min_value",
        )
    if value > high:
        raise invalid(
            f"Invalid '{param}': decimal above maximum value. Expected a value <= "
            f"{number_text(high)}, but got {number_text(value)} instead.",
            param,
            "decimal_above_max_value",
        )


def _check_integer(value: int, param: str, low: int, high: int | None = None) -> None:
    if value < low:
        raise invalid(
            f"Invalid '{param}': integer below minimum value. Expected a value >= {low}, "
            f"but got {value} instead.",
            param,
            "integer_below_min_value",
        )
    if high is not None and value > high:
        raise invalid(
            f"Invalid '{param}': integer above maximum value. Expected a value <= {high}, "
            f"but got {value} instead.",
            param,
            "integer_above_max_value",
        )


def _check_stop(req: chat_pb2.ChatCompletionRequest) -> None:
    if len(req.stop) > MAX_STOP_SEQUENCES:
        raise invalid(
            f"Invalid 'stop': array too long. Expected an array with maximum length "
            f"{MAX_STOP_SEQUENCES}, but got an array with length {len(req.stop)} instead.",
            "stop",
            "array_above_max_length",
        )
    if req.stop_is_string and len(req.stop) != 1:
        raise invalid(
            "Invalid 'stop': 'stop_is_string' requires exactly one stop sequence.",
            "stop",
            "invalid_value",
        )


def _check_tool(tool: chat_pb2.Tool, param: str) -> None:
    if not tool.type:
        raise missing(f"{param}.type")
    if tool.type != "function":
        raise invalid_value(f"{param}.type", tool.type, ("function",))
    if not tool.function.name:
        raise missing(f"{param}.function.name")
    if tool.function.HasField("parameters"):
        _check_finite(tool.function.parameters, f"{param}.function.parameters")


def _check_tool_choice(choice: chat_pb2.ToolChoice) -> None:
    kind = choice.WhichOneof("choice")
    if kind == "mode" and choice.mode not in TOOL_CHOICE_MODES:
        raise invalid_value("tool_choice", choice.mode, TOOL_CHOICE_MODES)
    if kind == "function_name" and not choice.function_name:
        raise missing("tool_choice.function.name")


def _check_response_format(fmt: chat_pb2.ResponseFormat) -> None:
    if not fmt.type:
        raise missing("response_format.type")
    if fmt.type not in RESPONSE_FORMAT_TYPES:
        raise invalid_value("response_format.type", fmt.type, RESPONSE_FORMAT_TYPES)
    if fmt.type != "json_schema":
        return
    if not fmt.HasField("json_schema"):
        raise missing("response_format.json_schema")
    if not fmt.json_schema.name:
        raise missing("response_format.json_schema.name")
    if not fmt.json_schema.HasField("schema"):
        raise missing("response_format.json_schema.schema")
    _check_finite(fmt.json_schema.schema, "response_format.json_schema.schema")


def _check_message(message: chat_pb2.ChatMessage, param: str) -> None:
    role = message.role
    if role == chat_pb2.ROLE_UNSPECIFIED:
        raise missing(f"{param}.role")
    if role not in ROLE_NAMES:
        raise invalid(
            f"Invalid value for '{param}.role': unknown role {role}.",
            f"{param}.role",
            "invalid_value",
        )
    kind = message.WhichOneof("content")
    if kind is None and role in _CONTENT_REQUIRED:
        raise missing(f"{param}.content")
    if kind == "parts":
        parts = message.parts.parts
        if not parts:
            raise _empty_array(f"{param}.content")
        allowed = _PARTS_BY_ROLE[role]
        for index, part in enumerate(parts):
            _check_part(part, f"{param}.content[{index}]", allowed, role)
    if role == chat_pb2.ROLE_TOOL and not message.tool_call_id:
        raise missing(f"{param}.tool_call_id")
    _check_extras(message.extra_fields, f"{param}.", TYPED_MESSAGE_FIELDS)


def _check_part(
    part: chat_pb2.ContentPart, param: str, allowed: tuple[str, ...], role: int
) -> None:
    case = part.WhichOneof("part")
    if case is None:
        raise missing(f"{param}.type")
    kind: str = case
    if case == "other":
        type_value = part.other.fields.get("type")
        if type_value is None or type_value.WhichOneof("kind") != "string_value":
            raise missing(f"{param}.type")
        kind = type_value.string_value
        _check_finite(part.other, param)
        if kind not in _KNOWN_PART_TYPES and role == chat_pb2.ROLE_USER:
            return  # an untyped media part: the provider adapter decides (see _PARTS_BY_ROLE)
    if kind not in allowed:
        raise invalid_value(f"{param}.type", kind, allowed)
    if case == "image_url" and not part.image_url.url:
        raise missing(f"{param}.image_url.url")


def _check_extras(extras: struct_pb2.Struct, prefix: str, typed: frozenset[str]) -> None:
    for key in extras.fields:
        if key in typed:
            # Only gRPC callers can get here: request_from_json routes these keys to typed fields.
            raise invalid(
                f"Invalid 'extra_fields': '{prefix}{key}' has a typed field; set that instead.",
                f"{prefix}{key}",
                "invalid_value",
            )
    _check_finite(extras, prefix.rstrip("."))


def _check_finite(struct: struct_pb2.Struct, param: str) -> None:
    found = first_non_finite(struct)
    if found is not None:
        path = f"{param}{found}" if param else found.lstrip(".")
        raise invalid(f"Invalid '{path}': expected a finite number.", path, "invalid_value")
