"""Shared helpers for the Workers AI adapter tests (test_workers_ai*.py).

A plain module rather than a conftest so that fixtures of other providers' tests in this folder
cannot collide with these; each test module declares its own small fixtures on top.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from fakes import workers_ai as fake_workers_ai
from fakes.app import FakeApp
from fakes.control import FakeControl, RequestRecord
from fakes.server import serve_in_thread
from gateway_service.providers.base import UpstreamCall
from gateway_service.providers.workers_ai import WorkersAI
from gateway_service.upstream_http import HttpSettings, UpstreamClient, make_client
from native1api.gateway.v1 import chat_pb2
from rpc_common.openai import FINISH_REASON_NAMES, request_from_json, validate_request

TOKEN = "cf-test-token-0123456789abcdef"
ACCT = "acct0123"
CHUNKS = 6
LLAMA = "@cf/meta/llama-3.2-3b-instruct"
SCOUT = "@cf/meta/llama-4-scout-17b-16e-instruct"
VISION = "@cf/meta/llama-3.2-11b-vision-instruct"
QWEN3 = "@cf/qwen/qwen3-30b-a3b-fp8"
GPT_OSS = "@cf/openai/gpt-oss-20b"
RUN = f"/client/v4/accounts/{ACCT}/ai/run/"
V1 = f"/client/v4/accounts/{ACCT}/ai/v1/chat/completions"
SEARCH = f"/client/v4/accounts/{ACCT}/ai/models/search"
SETTINGS = HttpSettings(
    connect_timeout_seconds=2,
    read_timeout_seconds=5,
    total_timeout_seconds=10,
    retry_after_cap_seconds=2,
)
SQRT_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "square_root",
        "description": "sqrt",
        "parameters": {
            "type": "object",
            "properties": {"number": {"type": "number"}},
            "required": ["number"],
        },
    },
}
FRUIT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"is_fruit": {"type": "boolean"}},
    "required": ["is_fruit"],
}


def start_fake() -> Iterator[tuple[FakeApp, str]]:
    """The Workers AI fake on a loopback port (for a module-scoped fixture)."""
    app = fake_workers_ai.create_app(
        tokens=[TOKEN], account_id=ACCT, chunks=CHUNKS, strict_models=True
    )
    with serve_in_thread(app) as base_url:
        yield app, base_url


@dataclass
class Env:
    """One test's view: the fake, the pooled client and the adapter under test."""

    app: FakeApp
    base_url: str
    http: UpstreamClient
    provider: WorkersAI

    @property
    def control(self) -> FakeControl:
        return self.app.control

    def adapter(self, settings: HttpSettings = SETTINGS, **kwargs: Any) -> WorkersAI:
        """Another adapter on the same client (other settings or constructor arguments)."""
        return WorkersAI(self.http, settings, self.base_url, ACCT, **kwargs)

    def chat_requests(self) -> list[RequestRecord]:
        return [r for r in self.control.requests if "/ai/run/" in r.path or "/ai/v1/" in r.path]


async def make_env(fake: tuple[FakeApp, str]) -> AsyncIterator[Env]:
    """A fresh client and adapter against the shared fake, with its record reset."""
    app, base_url = fake
    app.control.reset()
    async with make_client(SETTINGS) as http:
        yield Env(app, base_url, http, WorkersAI(http, SETTINGS, base_url, ACCT))


def body(text: str, model: str = LLAMA, **extra: Any) -> dict[str, Any]:
    """An OpenAI request body with one user message."""
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def make_call(
    request_body: dict[str, Any], *, model: str | None = None, api_key: str = TOKEN
) -> UpstreamCall:
    """Parse and validate a REST body exactly as the bridge and servicer would."""
    request = request_from_json(request_body).request
    validate_request(request)
    return UpstreamCall(
        request=request,
        model=model or request.model,
        api_key=api_key,
        byok=False,
        request_id="test-request",
    )


async def collect(provider: WorkersAI, call: UpstreamCall) -> list[chat_pb2.ChatCompletionChunk]:
    return [chunk async for chunk in provider.stream(call)]


async def drain(
    provider: WorkersAI,
    call: UpstreamCall,
    sink: list[chat_pb2.ChatCompletionChunk],
    *,
    stream: bool = True,
) -> None:
    """Run `call` (streamed into `sink`, or as one completion), for `pytest.raises` blocks."""
    if not stream:
        await provider.complete(call)
        return
    async for chunk in provider.stream(call):
        sink.append(chunk)


def content_of(chunks: list[chat_pb2.ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content for c in chunks if c.choices)


def finishes(chunks: list[chat_pb2.ChatCompletionChunk]) -> list[str]:
    return [
        FINISH_REASON_NAMES[choice.finish_reason]
        for chunk in chunks
        for choice in chunk.choices
        if choice.finish_reason
    ]


def usage_chunks(chunks: list[chat_pb2.ChatCompletionChunk]) -> list[chat_pb2.Usage]:
    return [chunk.usage for chunk in chunks if chunk.HasField("usage")]


def tool_arguments(chunks: list[chat_pb2.ChatCompletionChunk]) -> dict[int, dict[str, str]]:
    """Streamed tool-call fragments assembled per index: id, name, arguments."""
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                if delta.HasField("id"):
                    call["id"] = delta.id
                if delta.HasField("name"):
                    call["name"] += delta.name
                if delta.HasField("arguments"):
                    call["arguments"] += delta.arguments
    return calls


def sent_body(record: RequestRecord) -> dict[str, Any]:
    """The JSON body the adapter sent (parsed from the raw bytes the fake received)."""
    parsed = orjson.loads(record.raw_body)
    assert isinstance(parsed, dict)
    return parsed
