"""OpenAI-shaped objects shared by the fakes (chat.completion, chunks, tool calls, error envelope).

Workers AI's ``/ai/v1`` endpoint and its vLLM-served models, OpenRouter and Together all speak
variations of these; each fake adds its provider's extra fields through the `extra` arguments.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping
from typing import Any

from fakes.content import Completion, ToolCall, split_text

__all__ = [
    "chat_completion",
    "chunk",
    "message_tool_calls",
    "openai_error",
    "random_alnum",
    "random_id",
    "tool_call_deltas",
]


def random_id(prefix: str, nbytes: int = 12) -> str:
    """``prefix`` + random hex; ids only need to be unique, not deterministic."""
    return prefix + secrets.token_hex(nbytes)


_ALNUM = string.ascii_letters + string.digits


def random_alnum(length: int) -> str:
    """Random letters and digits (OpenRouter and Together id parts)."""
    return "".join(secrets.choice(_ALNUM) for _ in range(length))


def message_tool_calls(call: ToolCall) -> list[dict[str, Any]]:
    """``message.tool_calls`` of a non-streaming reply (arguments as a JSON string)."""
    return [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments_json},
        }
    ]


def tool_call_deltas(call: ToolCall, parts: int = 2) -> list[list[dict[str, Any]]]:
    """``delta.tool_calls`` lists of a stream: a header with id and name, then argument pieces."""
    head = [
        {
            "index": 0,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
    ]
    pieces = [
        [{"index": 0, "function": {"arguments": piece}}]
        for piece in split_text(call.arguments_json, parts)
    ]
    return [head, *pieces]


def chat_completion(
    cid: str,
    created: int,
    model: str,
    completion: Completion,
    *,
    finish: str | None = None,
    message_extra: dict[str, Any] | None = None,
    choice_extra: dict[str, Any] | None = None,
    usage: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``chat.completion`` object for `completion` (tool call or text)."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if completion.tool_call else completion.text,
    }
    if completion.tool_call is not None:
        message["tool_calls"] = message_tool_calls(completion.tool_call)
    if message_extra:
        message.update(message_extra)
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": finish or completion.finish,
    }
    if choice_extra:
        choice.update(choice_extra)
    obj: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage if usage is not None else completion.usage(),
    }
    if extra:
        obj.update(extra)
    return obj


def chunk(
    cid: str,
    created: int,
    model: str,
    delta: dict[str, Any] | None,
    *,
    finish: str | None = None,
    choice_extra: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``chat.completion.chunk``; `delta=None` gives the ``choices: []`` usage-chunk form."""
    choices: list[dict[str, Any]] = []
    if delta is not None:
        choice: dict[str, Any] = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish,
        }
        if choice_extra:
            choice.update(choice_extra)
        choices.append(choice)
    obj: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if extra:
        obj.update(extra)
    return obj


def openai_error(
    message: str, type_: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    """The OpenAI error envelope ``{"error": {message, type, param, code}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def json_schema_of(body: Mapping[str, Any]) -> Any:
    """The schema of an OpenAI `response_format: {"type": "json_schema", "json_schema": {...}}`.

    `{}` for a json_schema format without one, None when the request asks for no schema.
    """
    fmt = body.get("response_format")
    if not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema":
        return None
    nested = fmt.get("json_schema")
    return (nested.get("schema") if isinstance(nested, Mapping) else None) or {}
