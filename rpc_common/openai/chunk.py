"""`ChatCompletionChunk` <-> OpenAI `chat.completion.chunk` JSON, and the SSE hot path.

`chunk_to_json` emits OpenAI's chunk: a `delta` holding only the fields that are set (first
chunk `{"role":"assistant","content":""}`, finish chunk `{}`), `finish_reason` null or a name,
`logprobs`/`system_fingerprint` null when unset, `usage` null except on the usage chunk (which
has `choices: []`). Key order follows recorded OpenAI traffic, so a chunk rebuilt from OpenAI's
bytes serialises to the same bytes.

`chunk_to_json_bytes` is what the REST bridge writes after `data: ` for every chunk.
"""

from __future__ import annotations

from typing import Any

import orjson

from native1api.gateway.v1 import chat_pb2
from rpc_common.openai.jsonvalue import fill_struct_lenient, struct_to_json
from rpc_common.openai.names import FINISH_REASON_NAMES, ROLE_NAMES, ROLE_VALUES
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

_dumps = orjson.dumps


def chunk_to_json(chunk: chat_pb2.ChatCompletionChunk) -> dict[str, Any]:
    """The OpenAI `chat.completion.chunk` object for `chunk`."""
    return {
        "id": chunk.id,
        "object": "chat.completion.chunk",
        "created": chunk.created,
        "model": chunk.model,
        "system_fingerprint": (
            chunk.system_fingerprint if chunk.HasField("system_fingerprint") else None
        ),
        "choices": [_choice_to_json(choice) for choice in chunk.choices],
        "usage": usage_to_json(chunk.usage) if chunk.HasField("usage") else None,
    }


def chunk_to_json_bytes(chunk: chat_pb2.ChatCompletionChunk) -> bytes:
    """`chunk_to_json(chunk)` as compact JSON bytes, for an SSE `data:` frame.

    Nearly every chunk of a stream is one choice carrying only the next piece of content; that
    case is spliced from constant bytes (about 2.3 µs instead of 3.0 µs for the dict + orjson
    route, measured), everything else takes the generic path. Tests pin both paths to identical bytes.
    """
    choices = chunk.choices
    if len(choices) == 1 and not chunk.HasField("usage"):
        choice = choices[0]
        delta = choice.delta
        if (
            delta.HasField("content")
            and not delta.role
            and not choice.finish_reason
            and not delta.HasField("reasoning")
            and not delta.HasField("refusal")
            and not delta.tool_calls
            and not choice.HasField("logprobs")
        ):
            fingerprint = (
                _dumps(chunk.system_fingerprint)
                if chunk.HasField("system_fingerprint")
                else b"null"
            )
            return b"".join(
                (
                    b'{"id":',
                    _dumps(chunk.id),
                    b',"object":"chat.completion.chunk","created":',
                    str(chunk.created).encode(),
                    b',"model":',
                    _dumps(chunk.model),
                    b',"system_fingerprint":',
                    fingerprint,
                    b',"choices":[{"index":',
                    str(choice.index).encode(),
                    b',"delta":{"content":',
                    _dumps(delta.content),
                    b'},"logprobs":null,"finish_reason":null}],"usage":null}',
                )
            )
    return _dumps(chunk_to_json(chunk))


def _choice_to_json(choice: chat_pb2.ChunkChoice) -> dict[str, Any]:
    return {
        "index": choice.index,
        "delta": _delta_to_json(choice.delta),
        "logprobs": struct_to_json(choice.logprobs) if choice.HasField("logprobs") else None,
        "finish_reason": FINISH_REASON_NAMES.get(choice.finish_reason),
    }


def _delta_to_json(delta: chat_pb2.ChoiceDelta) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if delta.role:
        role = ROLE_NAMES.get(delta.role)
        if role is not None:
            out["role"] = role
    if delta.HasField("content"):
        out["content"] = delta.content
    if delta.HasField("reasoning"):
        out["reasoning"] = delta.reasoning
    if delta.HasField("refusal"):
        out["refusal"] = delta.refusal
    if delta.tool_calls:
        out["tool_calls"] = [_tool_call_delta_to_json(call) for call in delta.tool_calls]
    return out


def _tool_call_delta_to_json(call: chat_pb2.ToolCallDelta) -> dict[str, Any]:
    out: dict[str, Any] = {"index": call.index}
    if call.HasField("id"):
        out["id"] = call.id
    if call.HasField("type"):
        out["type"] = call.type
    function: dict[str, Any] = {}
    if call.HasField("name"):
        function["name"] = call.name
    if call.HasField("arguments"):
        function["arguments"] = call.arguments
    if function:
        out["function"] = function
    return out


def chunk_from_json(body: Any) -> chat_pb2.ChatCompletionChunk:
    """Read a provider's OpenAI-shaped chunk (unknown fields are ignored).

    `reasoning`/`reasoning_content` go to `delta.reasoning`, tool-call fragments to
    `tool_calls` (a missing `index` is the fragment's position), finish reasons as in
    `upstream.finish_reason_of`. Raises `UpstreamReportedError` for a chunk carrying `error`
    (OpenRouter's mid-stream failure) and `UpstreamFormatError` for one that is not a chunk.
    Provider quirks that need stream state (OpenRouter repeating `role` and `finish_reason`,
    usage on a chunk with choices) are the gateway's to normalise; this reads one chunk.
    """
    data = object_of(body, "chunk")
    raise_reported_error(data)
    chunk = chat_pb2.ChatCompletionChunk()
    fill_envelope(chunk, data)
    for position, raw in enumerate(list_of(data.get("choices"), "choices")):
        _choice_from_json(chunk.choices.add(), object_of(raw, "choice"), position)
    return chunk


def _choice_from_json(choice: chat_pb2.ChunkChoice, raw: dict[str, Any], position: int) -> None:
    choice.index = int_of(raw.get("index"), "choices[].index", position)
    choice.finish_reason = finish_reason_of(raw.get("finish_reason"))
    delta = choice.delta
    body = object_of(raw.get("delta"), "choices[].delta")
    role = body.get("role")
    if isinstance(role, str):
        delta.role = ROLE_VALUES.get(role, chat_pb2.ROLE_UNSPECIFIED)
    content = text_of(body.get("content"), "delta.content")
    if content is not None:
        delta.content = content
    reasoning = reasoning_of(body)
    if reasoning is not None:
        delta.reasoning = reasoning
    refusal = body.get("refusal")
    if isinstance(refusal, str):
        delta.refusal = refusal
    for position_in_delta, call_raw in enumerate(list_of(body.get("tool_calls"), "tool_calls")):
        call_body = object_of(call_raw, "tool call delta")
        call = delta.tool_calls.add(
            index=int_of(call_body.get("index"), "tool_calls[].index", position_in_delta)
        )
        call_id = string_of(call_body.get("id"))
        if call_id is not None:
            call.id = call_id
        kind = call_body.get("type")
        if isinstance(kind, str):
            call.type = kind
        function = object_of(call_body.get("function"), "tool call function")
        name = function.get("name")
        if isinstance(name, str):
            call.name = name
        arguments = arguments_of(function.get("arguments"))
        if arguments is not None:
            call.arguments = arguments
    logprobs = raw.get("logprobs")
    if isinstance(logprobs, dict):
        choice.logprobs.SetInParent()
        fill_struct_lenient(choice.logprobs, logprobs)
