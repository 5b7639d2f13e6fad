"""Deterministic "model output" for the fakes, derived only from the request.

The reply to a prompt is ``N`` chunks that all carry an 8-hex digest of the last user message
(markers stripped), e.g. for N=3: ``"1a2b3c4d-0"``, ``" 1a2b3c4d-1"``, ``" 1a2b3c4d-2"``. Every
chunk identifies its prompt, so a test running many concurrent streams can assert that each
client got exactly its own content: compare with `reply_text(prompt, chunks)`.

Token counts are just as deterministic: each content chunk is one completion token, and the
prompt costs `count_prompt_tokens(body)` = words of every message + 4 per message + 3.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from fakes.behavior import strip_markers

__all__ = [
    "DEFAULT_CHUNKS",
    "Completion",
    "ToolCall",
    "count_prompt_tokens",
    "digest",
    "last_user_text",
    "max_tokens_of",
    "plan_completion",
    "reply_chunks",
    "reply_text",
    "schema_instance",
    "split_text",
]

DEFAULT_CHUNKS = 6
FinishReason = Literal["stop", "length", "tool_calls"]


def digest(prompt: str) -> str:
    """8 hex chars identifying a prompt (markers stripped first)."""
    return hashlib.sha256(strip_markers(prompt).encode()).hexdigest()[:8]


def reply_chunks(prompt: str, chunks: int = DEFAULT_CHUNKS) -> list[str]:
    """The content chunks a fake streams for `prompt` (before any max_tokens truncation)."""
    tag = digest(prompt)
    return [f"{tag}-0"] + [f" {tag}-{i}" for i in range(1, chunks)] if chunks > 0 else []


def reply_text(prompt: str, chunks: int = DEFAULT_CHUNKS, max_tokens: int | None = None) -> str:
    """The full reply content a client should end up with for `prompt`."""
    pieces = reply_chunks(prompt, chunks)
    return "".join(pieces if max_tokens is None else pieces[:max_tokens])


def _text_of(content: Any) -> str:
    """Text of an OpenAI/Responses message content: a string or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping)
            and part.get("type") in ("text", "input_text", "output_text")
        )
    return ""


def last_user_text(body: Mapping[str, Any]) -> str:
    """The last user message of a chat (``messages``), native (``prompt``) or Responses (``input``) body."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, Mapping) and message.get("role") == "user":
                return _text_of(message.get("content"))
        return ""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    items = body.get("input")
    if isinstance(items, str):
        return items
    if isinstance(items, list):
        for item in reversed(items):
            if isinstance(item, Mapping) and item.get("role") == "user":
                return _text_of(item.get("content"))
    return ""


def count_prompt_tokens(body: Mapping[str, Any]) -> int:
    """Deterministic prompt token count: words per message + 4 per message + 3."""
    messages = body.get("messages")
    if isinstance(messages, list):
        texts = [_text_of(m.get("content")) for m in messages if isinstance(m, Mapping)]
    elif isinstance(body.get("prompt"), str):
        texts = [body["prompt"]]
    else:
        items = body.get("input")
        texts = (
            [items]
            if isinstance(items, str)
            else [_text_of(i.get("content")) for i in items or [] if isinstance(i, Mapping)]
        )
        if isinstance(body.get("instructions"), str):
            texts.append(body["instructions"])
    return sum(len(t.split()) + 4 for t in texts) + 3


def split_text(text: str, parts: int) -> list[str]:
    """Split `text` into at most `parts` contiguous non-empty pieces of similar size."""
    if not text:
        return []
    parts = max(1, min(parts, len(text)))
    size, extra = divmod(len(text), parts)
    out: list[str] = []
    start = 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(text[start:end])
        start = end
    return out


def schema_instance(schema: Any, tag: str) -> Any:
    """A deterministic value that fits a (simple) JSON schema; strings carry the prompt digest."""
    if not isinstance(schema, Mapping):
        return tag
    if "enum" in schema and isinstance(schema["enum"], list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties")
        if not isinstance(props, Mapping):
            return {}
        required = schema.get("required")
        names = [n for n in props if not isinstance(required, list) or n in required] or list(props)
        return {name: schema_instance(props[name], tag) for name in names}
    if kind == "array":
        return [schema_instance(schema.get("items"), tag)]
    if kind == "integer":
        return int(tag[:4], 16)
    if kind == "number":
        return int(tag[:4], 16) + 0.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return tag


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call the fake model decided to make."""

    id: str
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return orjson.dumps(self.arguments).decode()


@dataclass(frozen=True, slots=True)
class Completion:
    """Everything a fake needs to render one reply, in any provider's shape."""

    pieces: tuple[str, ...]  # content chunks, after max_tokens truncation
    finish: FinishReason
    prompt_tokens: int
    completion_tokens: int
    tool_call: ToolCall | None = None
    structured: Any = None  # the object behind a json_schema reply (pieces hold its JSON text)
    max_tokens: int | None = None  # the limit that applied (None: unlimited)

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def _pick_tool(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The tool a model "calls": the forced one, else the first; None when it should answer."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    choice = body.get("tool_choice")
    if choice == "none":
        return None
    messages = body.get("messages")
    if (
        isinstance(messages, list)
        and messages
        and isinstance(messages[-1], Mapping)
        and messages[-1].get("role") == "tool"
    ):
        return None  # the tool result is in: answer with text, as a real model would
    # Workers AI native accepts both {"type":"function","function":{...}} and a bare {"name",...}.
    specs = [t.get("function", t) for t in tools if isinstance(t, Mapping)]
    if isinstance(choice, Mapping):
        wanted = (
            choice.get("function", {}).get("name")
            if isinstance(choice.get("function"), Mapping)
            else None
        )
        for spec in specs:
            if isinstance(spec, Mapping) and spec.get("name") == wanted:
                return spec
    first = specs[0] if specs else None
    return first if isinstance(first, Mapping) else None


def plan_completion(
    body: Mapping[str, Any],
    prompt: str,
    *,
    chunks: int,
    max_tokens: int | None,
    schema: Any = None,
    call_id: str = "call_0",
) -> Completion:
    """Decide the reply: a tool call, a structured object or `chunks` text pieces, cut at max_tokens.

    `prompt` is the last user message with markers already stripped; `schema` is the JSON schema
    of a ``json_schema`` response format as the provider reads it (or None).
    """
    tag = digest(prompt)
    prompt_tokens = count_prompt_tokens(body)
    tool = _pick_tool(body)
    if tool is not None:
        arguments = schema_instance(tool.get("parameters"), tag)
        call = ToolCall(
            call_id, str(tool.get("name", "tool")), arguments if isinstance(arguments, dict) else {}
        )
        # A tool call costs a few tokens, never subject to the chunk knob.
        return Completion(
            (),
            "tool_calls",
            prompt_tokens,
            5 + len(call.arguments),
            tool_call=call,
            max_tokens=max_tokens,
        )
    structured: Any = None
    if schema is not None:
        structured = schema_instance(schema, tag)
        pieces = split_text(orjson.dumps(structured).decode(), max(chunks, 1))
    else:
        pieces = reply_chunks(prompt, chunks)
    finish: FinishReason = "stop"
    if max_tokens is not None and len(pieces) > max_tokens:
        pieces = pieces[:max_tokens]
        finish = "length"
    return Completion(
        tuple(pieces),
        finish,
        prompt_tokens,
        len(pieces),
        structured=structured,
        max_tokens=max_tokens,
    )


def max_tokens_of(body: Mapping[str, Any], *keys: str) -> int | None:
    """The first integer among `keys` of the body (e.g. max_tokens, max_completion_tokens)."""
    for key in keys:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
