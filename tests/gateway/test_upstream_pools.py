"""One connection pool per provider: a flood to one provider starves no one else, and a full
pool answers 503 `upstream_overloaded` within about a second, never a provider timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway_service.upstream_http import HttpSettings
from native1api.gateway.v1 import chat_pb2, gateway_service_pb2
from tests.bridge.support import bridge_settings, chat_body, serve_bridge
from tests.support.rpc import error_details
from tests.support.stack import OPENROUTER_KEY, Stack, running_stack
from tests.support.tokens import TokenFactory
from vault_service.crypto import KeyRing

POOL = 4


@pytest.fixture
async def stack(tmp_path: Path, tokens: TokenFactory, keyring: KeyRing) -> AsyncIterator[Stack]:
    settings = HttpSettings(max_connections=POOL, max_retries=0, pool_timeout_seconds=1.0)
    async with running_stack(tmp_path, tokens, keyring, http=settings) as running:
        yield running


def request(prompt: str, model: str = "@cf/meta/llama-3.2-3b-instruct") -> Any:
    return gateway_service_pb2.CreateChatCompletionRequest(
        request=chat_pb2.ChatCompletionRequest(
            model=model, messages=[chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, text=prompt)]
        )
    )


async def test_a_full_pool_is_503_and_other_providers_are_unaffected(stack: Stack) -> None:
    flooder = stack.user("flooder")
    slow = [
        asyncio.ensure_future(
            stack.gateway.CreateChatCompletion(
                request(f"slow {i} [[fake:delay_first=4]]"), metadata=flooder, timeout=20
            )
        )
        for i in range(3 * POOL)
    ]
    await asyncio.sleep(0.3)  # the first POOL requests now hold every Workers AI connection
    # Another user on another provider: served at once.
    await stack.save_key("byok-user", OPENROUTER_KEY)
    started = time.monotonic()
    reply = await stack.gateway.CreateChatCompletion(
        request("mine", model="openai/gpt-4o-mini"), metadata=stack.user("byok-user"), timeout=5
    )
    assert reply.provider == gateway_service_pb2.PROVIDER_OPENROUTER
    assert time.monotonic() - started < 1.0
    # Another user on the same provider: 503 upstream_overloaded after about a second.
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.gateway.CreateChatCompletion(
            request("me too"), metadata=stack.user("other"), timeout=10
        )
    waited = time.monotonic() - started
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_details(caught.value)
    assert (info.reason, info.metadata["code"], info.metadata["retry_after"]) == (
        "UPSTREAM_OVERLOADED",
        "upstream_overloaded",
        "1",
    )
    assert 0.9 <= waited < 2.5
    outcomes = await asyncio.gather(*slow, return_exceptions=True)
    served = [o for o in outcomes if not isinstance(o, BaseException)]
    overloaded = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(served) == POOL  # the pool's connections, no more at once
    assert {error_details(e).reason for e in overloaded} == {"UPSTREAM_OVERLOADED"}


async def test_the_bridge_answers_503_with_retry_after(stack: Stack) -> None:
    flooder = stack.user("flooder-rest")
    slow = [
        asyncio.ensure_future(
            stack.gateway.CreateChatCompletion(
                request(f"slow {i} [[fake:delay_first=3]]"), metadata=flooder, timeout=20
            )
        )
        for i in range(POOL)
    ]
    await asyncio.sleep(0.3)
    settings = bridge_settings(stack.gateway_address, stack.vault_address)
    async with serve_bridge(settings) as bridge, bridge.client(stack.tokens.mint("rest")) as http:
        response = await http.post("/v1/chat/completions", json=chat_body("hi", stream=True))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("service_unavailable_error", "upstream_overloaded")
    await asyncio.gather(*slow, return_exceptions=True)
