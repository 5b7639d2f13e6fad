"""`ChatCompletion` <-> OpenAI `chat.completion` JSON.

`completion_to_json` emits exactly what OpenAI emits for the fields the proto carries:
`content`/`refusal`/`logprobs`/`system_fingerprint` are `null` when unset, `tool_calls` and the
usage details appear only when present. The reasoning text, which OpenAI does not have, is sent
as `message.reasoning` (OpenRouter's and vLLM's name) when the provider reported one.

`completion_from_json` reads a provider's OpenAI-shaped body, tolerantly (see `upstream`).
"""

from __future__ import annotations

from typing import Any

from native1api.gateway.v1 import chat_pb2
from rpc_common.openai.jsonvalue import fill_struct_lenient, struct_to_json
from rpc_common.openai.names import FINISH_REASON_NAMES
from rpc_common.openai.request_render import tool_call_to_json
from rpc_common.openai.upstream import (
    arguments_of,
    finish_reason_of,
    int_of,
    list_of,
    object_of,
    raise_reported_error,
    reasoning_of,
    string_of,
    text_of,
)
from rpc_common.openai.usage import fill_envelope, usage_to_json


def completion_to_json(completion: chat_pb2.ChatCompletion) -> dict[str, Any]:
    """The OpenAI `chat.completion` object for `completion`."""
    return {
        "id": completion.id,
        "object": "chat.completion",
        "created": completion.created,
        "model": completion.model,
        "choices": [_choice_to_json(choice) for choice in completion.choices],
        "usage": usage_to_json(completion.usage) if completion.HasField("usage") else None,
        "system_fingerprint": (
            completion.system_fingerprint if completion.HasField("system_fingerprint") else None
        ),
    }


def _choice_to_json(choice: chat_pb2.Choice) -> dict[str, Any]:
    message = choice.message
    out: dict[str, Any] = {
        "role": "assistant",  # the only role a completion's message has
        "content": message.content if message.HasField("content") else None,
        "refusal": message.refusal if message.HasField("refusal") else None,
    }
    if message.tool_calls:
        out["tool_calls"] = [tool_call_to_json(call) for call in message.tool_calls]
    if message.HasField("reasoning"):
        out["reasoning"] = message.reasoning
    return {
        "index": choice.index,
        "message": out,
        "logprobs": struct_to_json(choice.logprobs) if choice.HasField("logprobs") else None,
        # Unknown (newer) enum values read as null rather than inventing a reason.
        "finish_reason": FINISH_REASON_NAMES.get(choice.finish_reason),
    }


def completion_from_json(body: Any) -> chat_pb2.ChatCompletion:
    """Read a provider's OpenAI-shaped `chat.completion` (unknown fields are ignored).

    A choice without a finish reason is read as `tool_calls` when it made tool calls and
    `stop` otherwise: a non-streamed answer is complete, and OpenAI clients require a reason.
    Raises `UpstreamReportedError` for a body carrying `error` (or `finish_reason: "error"`)
    and `UpstreamFormatError` for a body that is not a completion.
    """
    data = object_of(body, "completion")
    raise_reported_error(data)
    completion = chat_pb2.ChatCompletion()
    fill_envelope(completion, data)
    for position, raw in enumerate(list_of(data.get("choices"), "choices")):
        _choice_from_json(completion.choices.add(), object_of(raw, "choice"), position)
    return completion


def _choice_from_json(choice: chat_pb2.Choice, raw: dict[str, Any], position: int) -> None:
    choice.index = int_of(raw.get("index"), "choices[].index", position)
    message = choice.message
    message.role = chat_pb2.ROLE_ASSISTANT
    body = object_of(raw.get("message"), "choices[].message")
    content = text_of(body.get("content"), "message.content")
    if content is not None:
        message.content = content
    refusal = body.get("refusal")
    if isinstance(refusal, str):
        message.refusal = refusal
    reasoning = reasoning_of(body)
    if reasoning is not None:
        message.reasoning = reasoning
    for call_raw in list_of(body.get("tool_calls"), "message.tool_calls"):
        call_body = object_of(call_raw, "tool call")
        function = object_of(call_body.get("function"), "tool call function")
        call = message.tool_calls.add(
            id=string_of(call_body.get("id")) or "",
            type=string_of(call_body.get("type")) or "function",
        )
        call.function.name = string_of(function.get("name")) or ""
        call.function.arguments = arguments_of(function.get("arguments")) or ""
    reason = finish_reason_of(raw.get("finish_reason"))
    if reason == chat_pb2.FINISH_REASON_UNSPECIFIED:
        reason = (
            chat_pb2.FINISH_REASON_TOOL_CALLS if message.tool_calls else chat_pb2.FINISH_REASON_STOP
        )
    choice.finish_reason = reason
    logprobs = raw.get("logprobs")
    if isinstance(logprobs, dict):
        choice.logprobs.SetInParent()
        fill_struct_lenient(choice.logprobs, logprobs)
