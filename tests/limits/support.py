"""The gRPC back end with admission control on, for the limits tests."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from gateway_service.limits.settings import LimitsSettings
from gateway_service.limits.tiers import Tier, TierTable
from gateway_service.upstream_http import HttpSettings
from native1api.gateway.v1 import chat_pb2, gateway_service_pb2
from tests.support.stack import Stack, running_stack
from tests.support.tokens import TokenFactory, bearer
from vault_service.crypto import KeyRing

LLAMA = "@cf/meta/llama-3.2-3b-instruct"
SLOW = "[[fake:chunk_delay=0.1,chunks=10]]"  # a stream of about one second

# One table for the suite; each test picks its tier with the `tier` custom claim.
TIERS = TierTable(
    {
        "default": Tier("default", requests_per_minute=1000, max_concurrent_requests=50),
        "anonymous": Tier("anonymous", requests_per_minute=7),
        "rpm30": Tier("rpm30", requests_per_minute=30),
        "conc4": Tier("conc4", max_concurrent_requests=4),
        "conc1": Tier("conc1", max_concurrent_requests=1),
        "tokens": Tier("tokens", tokens_per_day=3000),
        "zero": Tier("zero", requests_per_minute=0),
        "notokens": Tier("notokens", tokens_per_day=0),
        "all": Tier(
            "all", requests_per_minute=20, tokens_per_day=100_000, max_concurrent_requests=3
        ),
        "pro": Tier("pro"),
    },
    source="tests",
)


def uid() -> str:
    return f"lim-{uuid.uuid4().hex[:12]}"


def chat(
    prompt: str = "hello", model: str = LLAMA, **fields: Any
) -> chat_pb2.ChatCompletionRequest:
    return chat_pb2.ChatCompletionRequest(
        model=model,
        messages=[chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, text=prompt)],
        **fields,
    )


class Caller:
    """One user with one tier, calling the gateway over gRPC."""

    def __init__(self, stack: Stack, tier: str | None = None, **claims: Any) -> None:
        self.stack = stack
        self.uid = uid()
        if tier is not None:
            claims["tier"] = tier
        self.metadata = bearer(stack.tokens.mint(self.uid, **claims))

    async def complete(
        self, request: chat_pb2.ChatCompletionRequest | None = None, **kwargs: Any
    ) -> gateway_service_pb2.CreateChatCompletionResponse:
        kwargs.setdefault("timeout", 10)
        return await self.stack.gateway.CreateChatCompletion(
            gateway_service_pb2.CreateChatCompletionRequest(request=request or chat()),
            metadata=self.metadata,
            **kwargs,
        )

    def stream(self, request: chat_pb2.ChatCompletionRequest | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", 20)
        return self.stack.gateway.StreamChatCompletion(
            gateway_service_pb2.StreamChatCompletionRequest(request=request or chat()),
            metadata=self.metadata,
            **kwargs,
        )

    async def usage(self) -> gateway_service_pb2.GetUsageResponse:
        return await self.stack.gateway.GetUsage(
            gateway_service_pb2.GetUsageRequest(), metadata=self.metadata, timeout=5
        )


@contextlib.asynccontextmanager
async def limited_stack(
    tmp_path: Path,
    tokens: TokenFactory,
    keyring: KeyRing,
    *,
    redis_url: str = "",
    on_store_error: str = "deny",
    tiers: TierTable = TIERS,
) -> AsyncIterator[Stack]:
    limits = LimitsSettings(
        tiers=tiers,
        redis_url=redis_url,
        on_store_error="allow" if on_store_error == "allow" else "deny",
    )
    async with running_stack(
        tmp_path, tokens, keyring, limits=limits, http=HttpSettings(max_retries=0)
    ) as stack:
        yield stack


def status_of(error: grpc.aio.AioRpcError) -> grpc.StatusCode:
    return error.code()
