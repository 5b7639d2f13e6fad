"""`ChatCompletionRequest` -> OpenAI request JSON (the gateway's upstream body).

The inverse of `request_from_json`. What does and does not come back exactly is pinned by
tests/unit/openai/test_request_roundtrip.py:

- exact: every field and value the client sent, integers as integers, `stop` as a string or a
  list as sent, empty objects (`parameters: {}`), extra fields nested up to 28 levels (deeper
  JSON is refused: protobuf cannot decode it, see `jsonvalue.MAX_NESTING`);
- normalised: a JSON `null` on a typed or top-level/message-level field is omitted (it meant
  "not set"); an unset message `content` is sent as `null`; empty `stop`, `tools`,
  `tool_calls` and `logit_bias` are omitted (protobuf cannot tell empty from absent); an
  integral decimal such as `1.0` is sent as `1`; object keys inside Structs come back sorted,
  except JSON Schema `properties`, which follow their `required` list (see `jsonvalue`);
- never emitted: `stream` and `stream_options`. The gateway sets both itself, per RPC and per
  provider (it always asks for usage, for its own metering).
"""

from __future__ import annotations

from typing import Any

from native1api.gateway.v1 import chat_pb2
from rpc_common.openai.jsonvalue import number_to_json, struct_to_json
from rpc_common.openai.names import ROLE_NAMES


def request_to_json(req: chat_pb2.ChatCompletionRequest) -> dict[str, Any]:
    """The OpenAI body for `req`, without `stream`/`stream_options`."""
    out: dict[str, Any] = {
        "model": req.model,
        "messages": [message_to_json(message) for message in req.messages],
    }
    if req.HasField("temperature"):
        out["temperature"] = number_to_json(req.temperature)
    if req.HasField("top_p"):
        out["top_p"] = number_to_json(req.top_p)
    if req.HasField("max_tokens"):
        out["max_tokens"] = req.max_tokens
    if req.HasField("max_completion_tokens"):
        out["max_completion_tokens"] = req.max_completion_tokens
    if req.HasField("n"):
        out["n"] = req.n
    if req.stop:
        if req.stop_is_string and len(req.stop) == 1:
            out["stop"] = req.stop[0]
        else:
            out["stop"] = list(req.stop)
    if req.HasField("seed"):
        out["seed"] = req.seed
    if req.HasField("presence_penalty"):
        out["presence_penalty"] = number_to_json(req.presence_penalty)
    if req.HasField("frequency_penalty"):
        out["frequency_penalty"] = number_to_json(req.frequency_penalty)
    if req.logit_bias:
        bias = req.logit_bias
        out["logit_bias"] = {token: number_to_json(bias[token]) for token in sorted(bias)}
    if req.HasField("logprobs"):
        out["logprobs"] = req.logprobs
    if req.HasField("top_logprobs"):
        out["top_logprobs"] = req.top_logprobs
    if req.tools:
        out["tools"] = [_tool_to_json(tool) for tool in req.tools]
    if req.HasField("tool_choice"):
        choice = _tool_choice_to_json(req.tool_choice)
        if choice is not None:
            out["tool_choice"] = choice
    if req.HasField("parallel_tool_calls"):
        out["parallel_tool_calls"] = req.parallel_tool_calls
    if req.HasField("response_format"):
        out["response_format"] = _response_format_to_json(req.response_format)
    if req.HasField("user"):
        out["user"] = req.user
    if req.extra_fields.fields:
        # setdefault: a typed field always wins over a same-named extra (validate_request
        # refuses such requests anyway).
        for key, value in struct_to_json(req.extra_fields).items():
            out.setdefault(key, value)
    return out


def message_to_json(message: chat_pb2.ChatMessage) -> dict[str, Any]:
    """One OpenAI message object."""
    out: dict[str, Any] = {}
    role = ROLE_NAMES.get(message.role)
    if role is not None:
        out["role"] = role
    kind = message.WhichOneof("content")
    if kind == "text":
        out["content"] = message.text
    elif kind == "parts":
        out["content"] = [part_to_json(part) for part in message.parts.parts]
    else:
        out["content"] = None
    if message.HasField("name"):
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [tool_call_to_json(call) for call in message.tool_calls]
    if message.HasField("tool_call_id"):
        out["tool_call_id"] = message.tool_call_id
    if message.HasField("refusal"):
        out["refusal"] = message.refusal
    if message.extra_fields.fields:
        for key, value in struct_to_json(message.extra_fields).items():
            out.setdefault(key, value)
    return out


def part_to_json(part: chat_pb2.ContentPart) -> dict[str, Any]:
    """One OpenAI content part."""
    kind = part.WhichOneof("part")
    if kind == "text":
        return {"type": "text", "text": part.text}
    if kind == "image_url":
        image: dict[str, Any] = {"url": part.image_url.url}
        if part.image_url.HasField("detail"):
            image["detail"] = part.image_url.detail
        return {"type": "image_url", "image_url": image}
    if kind == "input_audio":
        audio = part.input_audio
        return {"type": "input_audio", "input_audio": {"data": audio.data, "format": audio.format}}
    if kind == "file":
        file = part.file
        payload: dict[str, Any] = {}
        if file.HasField("file_data"):
            payload["file_data"] = file.file_data
        if file.HasField("file_id"):
            payload["file_id"] = file.file_id
        if file.HasField("filename"):
            payload["filename"] = file.filename
        return {"type": "file", "file": payload}
    if kind == "refusal":
        return {"type": "refusal", "refusal": part.refusal}
    if kind == "other":
        return struct_to_json(part.other)
    return {}  # an empty part (gRPC only); validate_request refuses it


def tool_call_to_json(call: chat_pb2.ToolCall) -> dict[str, Any]:
    """One OpenAI tool call (`{"id","type","function":{"name","arguments"}}`)."""
    return {
        "id": call.id,
        "type": call.type,
        "function": {"name": call.function.name, "arguments": call.function.arguments},
    }


def _tool_to_json(tool: chat_pb2.Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"type": tool.type}
    if tool.HasField("function"):
        function = tool.function
        definition: dict[str, Any] = {"name": function.name}
        if function.HasField("description"):
            definition["description"] = function.description
        if function.HasField("parameters"):
            definition["parameters"] = struct_to_json(function.parameters)
        if function.HasField("strict"):
            definition["strict"] = function.strict
        out["function"] = definition
    return out


def _tool_choice_to_json(choice: chat_pb2.ToolChoice) -> str | dict[str, Any] | None:
    kind = choice.WhichOneof("choice")
    if kind == "mode":
        return choice.mode
    if kind == "function_name":
        return {"type": "function", "function": {"name": choice.function_name}}
    return None


def _response_format_to_json(fmt: chat_pb2.ResponseFormat) -> dict[str, Any]:
    out: dict[str, Any] = {"type": fmt.type}
    if fmt.HasField("json_schema"):
        spec = fmt.json_schema
        schema: dict[str, Any] = {"name": spec.name}
        if spec.HasField("description"):
            schema["description"] = spec.description
        if spec.HasField("schema"):
            schema["schema"] = struct_to_json(spec.schema)
        if spec.HasField("strict"):
            schema["strict"] = spec.strict
        out["json_schema"] = schema
    return out
