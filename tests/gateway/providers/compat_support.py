"""Helpers shared by the OpenAI-compatible provider suites (OpenRouter, Together)."""

from __future__ import annotations

from typing import Any

from gateway_service.providers.base import Provider, UpstreamCall
from native1api.gateway.v1 import chat_pb2
from rpc_common.openai import request_from_json, validate_request


def make_call(
    prompt: str, *, client_model: str, model: str, key: str, **extra: Any
) -> UpstreamCall:
    """A validated BYOK call for `prompt`, as the servicer would hand it to the adapter."""
    body = {"model": client_model, "messages": [{"role": "user", "content": prompt}], **extra}
    request = request_from_json(body).request
    validate_request(request)
    return UpstreamCall(request=request, model=model, api_key=key, byok=True, request_id="req-1")


async def collect(
    provider: Provider, upstream_call: UpstreamCall
) -> list[chat_pb2.ChatCompletionChunk]:
    return [chunk async for chunk in provider.stream(upstream_call)]


async def drain(
    provider: Provider, upstream_call: UpstreamCall, sink: list[chat_pb2.ChatCompletionChunk]
) -> None:
    """Stream into `sink`, so a test can look at what arrived before an error."""
    async for chunk in provider.stream(upstream_call):
        sink.append(chunk)


async def run(provider: Provider, upstream_call: UpstreamCall, *, stream: bool) -> None:
    if stream:
        await collect(provider, upstream_call)
    else:
        await provider.complete(upstream_call)


def content(chunks: list[chat_pb2.ChatCompletionChunk]) -> str:
    return "".join(choice.delta.content for chunk in chunks for choice in chunk.choices)


def finishes(chunks: list[chat_pb2.ChatCompletionChunk]) -> list[int]:
    return [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]
