"""`Usage` <-> OpenAI `usage` JSON."""

from __future__ import annotations

import math
from typing import Any

from native1api.gateway.v1 import chat_pb2
from rpc_common.openai.upstream import int_of, object_of, string_of


def usage_to_json(usage: chat_pb2.Usage) -> dict[str, Any]:
    """OpenAI `usage`; the `*_details` objects and their keys appear only when set."""
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.HasField("prompt_tokens_details"):
        prompt = usage.prompt_tokens_details
        details: dict[str, Any] = {}
        if prompt.HasField("cached_tokens"):
            details["cached_tokens"] = prompt.cached_tokens
        if prompt.HasField("audio_tokens"):
            details["audio_tokens"] = prompt.audio_tokens
        out["prompt_tokens_details"] = details
    if usage.HasField("completion_tokens_details"):
        completion = usage.completion_tokens_details
        details = {}
        if completion.HasField("reasoning_tokens"):
            details["reasoning_tokens"] = completion.reasoning_tokens
        if completion.HasField("audio_tokens"):
            details["audio_tokens"] = completion.audio_tokens
        out["completion_tokens_details"] = details
    if usage.HasField("cost"):
        out["cost"] = usage.cost  # OpenRouter's field; OpenAI clients ignore unknown keys
    return out


def usage_from_json(raw: Any, usage: chat_pb2.Usage) -> None:
    """Fill `usage` from a provider's `usage` object (tolerant).

    Missing counts are 0 and a missing `total_tokens` is the sum. Together's top-level
    `reasoning_tokens` fills `completion_tokens_details.reasoning_tokens` when that is absent.
    OpenRouter's `cost` is kept. Keys without a proto home (`accepted_prediction_tokens`, ...)
    are ignored.
    """
    body = object_of(raw, "usage")
    usage.prompt_tokens = int_of(body.get("prompt_tokens"), "usage.prompt_tokens")
    usage.completion_tokens = int_of(body.get("completion_tokens"), "usage.completion_tokens")
    total = body.get("total_tokens")
    usage.total_tokens = (
        usage.prompt_tokens + usage.completion_tokens
        if total is None
        else int_of(total, "usage.total_tokens")
    )
    prompt = object_of(body.get("prompt_tokens_details"), "usage.prompt_tokens_details")
    for key in ("cached_tokens", "audio_tokens"):
        if prompt.get(key) is not None:
            setattr(usage.prompt_tokens_details, key, int_of(prompt[key], f"usage.{key}"))
    completion = object_of(body.get("completion_tokens_details"), "usage.completion_tokens_details")
    for key in ("reasoning_tokens", "audio_tokens"):
        if completion.get(key) is not None:
            setattr(usage.completion_tokens_details, key, int_of(completion[key], f"usage.{key}"))
    cost = body.get("cost")
    if isinstance(cost, int | float) and not isinstance(cost, bool) and math.isfinite(cost):
        usage.cost = float(cost)
    reasoning = body.get("reasoning_tokens")
    if reasoning is not None and not usage.completion_tokens_details.HasField("reasoning_tokens"):
        usage.completion_tokens_details.reasoning_tokens = int_of(
            reasoning, "usage.reasoning_tokens"
        )


def fill_envelope(
    message: chat_pb2.ChatCompletion | chat_pb2.ChatCompletionChunk, data: dict[str, Any]
) -> None:
    """The fields a completion and a chunk share: id, created, model, fingerprint, usage."""
    message.id = string_of(data.get("id")) or ""
    message.created = int_of(data.get("created"), "created")
    message.model = string_of(data.get("model")) or ""
    fingerprint = data.get("system_fingerprint")
    if isinstance(fingerprint, str):
        message.system_fingerprint = fingerprint
    if data.get("usage") is not None:
        usage_from_json(data["usage"], message.usage)
