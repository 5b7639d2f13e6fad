"""Driving a gateway with a usage ledger: mixed completions over gRPC, and reading the ledger."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from gateway_service.ledger import LedgerEntry, UsageSettings, open_usage_store
from gateway_service.limits.settings import LimitsSettings
from gateway_service.limits.tiers import Tier, TierTable
from gateway_service.upstream_http import HttpSettings
from native1api.gateway.v1 import chat_pb2, gateway_service_pb2
from tests.support.stack import Stack, running_stack
from tests.support.tokens import TokenFactory, bearer
from vault_service.crypto import KeyRing

LLAMA = "@cf/meta/llama-3.2-3b-instruct"
OPENROUTER_LLAMA = "meta-llama/llama-3.2-3b-instruct"
TIERS = TierTable({"default": Tier("default", requests_per_minute=10_000)}, source="tests")


def chat(prompt: str, model: str = LLAMA) -> chat_pb2.ChatCompletionRequest:
    return chat_pb2.ChatCompletionRequest(
        model=model, messages=[chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, text=prompt)]
    )


@contextlib.asynccontextmanager
async def ledger_stack(
    tmp_path: Path, tokens: TokenFactory, keyring: KeyRing, usage: UsageSettings
) -> AsyncIterator[Stack]:
    """The in-process stack (fakes, vault, gateway) with limits on and this ledger."""
    async with running_stack(
        tmp_path,
        tokens,
        keyring,
        limits=LimitsSettings(tiers=TIERS),
        http=HttpSettings(max_retries=0),
        usage=usage,
    ) as stack:
        yield stack


@dataclass
class Outcome:
    """What the client saw of one completion."""

    kind: str
    uid: str
    request_id: str
    status: str  # the gRPC status name
    usage: chat_pb2.Usage | None  # the usage the gateway passed on, when it did


async def complete(stack: Stack, uid: str, kind: str, prompt: str, request_id: str) -> Outcome:
    """Run one completion of a kind: ok, stream, cut, error, cancel (over gRPC)."""
    metadata = (*bearer(stack.tokens.mint(uid)), ("x-request-id", request_id))
    text = {
        "ok": prompt,
        "stream": prompt,
        "cut": f"{prompt} [[fake:cut_after=2,chunks=8]]",
        "error": f"{prompt} [[fake:status=500]]",
        "cancel": f"{prompt} [[fake:chunk_delay=0.05,chunks=40]]",
    }[kind]
    request = chat(text)
    if kind in ("ok", "error"):
        try:
            reply = await stack.gateway.CreateChatCompletion(
                gateway_service_pb2.CreateChatCompletionRequest(request=request),
                metadata=metadata,
                timeout=20,
            )
        except grpc.aio.AioRpcError as error:
            return Outcome(kind, uid, request_id, error.code().name, None)
        return Outcome(kind, uid, request_id, "OK", reply.completion.usage)
    call = stack.gateway.StreamChatCompletion(
        gateway_service_pb2.StreamChatCompletionRequest(request=request),
        metadata=metadata,
        timeout=20,
    )
    usage: chat_pb2.Usage | None = None
    try:
        seen = 0
        async for message in call:
            seen += 1
            if message.chunk.HasField("usage"):
                usage = message.chunk.usage
            if kind == "cancel" and seen == 3:
                call.cancel()
                await asyncio.sleep(0)
    except asyncio.CancelledError:
        return Outcome(kind, uid, request_id, "CANCELLED", None)
    except grpc.aio.AioRpcError as error:
        return Outcome(kind, uid, request_id, error.code().name, None)
    return Outcome(kind, uid, request_id, "OK", usage)


async def read_all(url: str, first: dt.date, last: dt.date, uid: str | None = None) -> list[Any]:
    """Every ledger record of those days (one user's with `uid`), in the order written."""
    store = await open_usage_store(url)
    try:
        entries: list[LedgerEntry] = []
        after = 0
        while page := await store.export(first, last, uid, after, 1000):
            entries += [entry for _, entry in page]
            after = page[-1][0]
        return entries
    finally:
        await store.aclose()


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()
