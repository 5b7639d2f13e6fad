"""Admission control as REST clients see it: the official openai SDK, headers, GET /v1/usage.

The bridge is the real app under uvicorn in front of the real gateway, with the limiter in Redis.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletionMessageParam

from tests.bridge.support import LLAMA, Bridge, bridge_settings, chat_body, serve_bridge
from tests.limits.support import SLOW, limited_stack, uid
from tests.support.stack import Stack
from tests.support.tokens import TokenFactory
from vault_service.crypto import KeyRing

pytestmark = pytest.mark.asyncio(loop_scope="module")

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello limits"}]
STATE = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory,
    tokens: TokenFactory,
    keyring: KeyRing,
    redis_url: str,
) -> AsyncIterator[Stack]:
    async with limited_stack(
        tmp_path_factory.mktemp("rest-limits"), tokens, keyring, redis_url=redis_url
    ) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bridge(stack: Stack) -> AsyncIterator[Bridge]:
    async with serve_bridge(bridge_settings(stack.gateway_address, stack.vault_address)) as b:
        yield b


def token(stack: Stack, tier: str) -> str:
    return stack.tokens.mint(uid(), tier=tier)


def sdk(bridge: Bridge, api_key: str, retries: int = 0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{bridge.base_url}/v1", api_key=api_key, max_retries=retries
    )


async def test_the_sdk_sees_rate_limit_error_and_its_retries_succeed(
    stack: Stack, bridge: Bridge
) -> None:
    key = token(stack, "rpm30")
    async with sdk(bridge, key) as client:
        for _ in range(30):
            await client.chat.completions.create(model=LLAMA, messages=USER)
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model=LLAMA, messages=USER)
    error = caught.value
    assert error.status_code == 429
    assert error.type == "requests" and error.code == "rate_limit_exceeded"
    assert "30 requests per minute" in error.message
    retry_ms = int(error.response.headers["retry-after-ms"])
    assert 0 < retry_ms <= 2000
    assert int(error.response.headers["retry-after"]) == max(1, -(-retry_ms // 1000))
    # The SDK waits what retry-after-ms says (it reads it before Retry-After) and succeeds.
    async with sdk(bridge, key, retries=2) as client:
        started = time.monotonic()
        completion = await client.chat.completions.create(model=LLAMA, messages=USER)
        waited = time.monotonic() - started
    assert completion.choices[0].message.content
    assert waited >= 0.1  # it did wait before retrying


async def test_token_and_concurrency_refusals_name_their_type(stack: Stack, bridge: Bridge) -> None:
    async with sdk(bridge, token(stack, "tokens")) as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model=LLAMA, messages=USER, max_tokens=5000)
    assert caught.value.type == "tokens"
    async with (
        bridge.client(token(stack, "conc1")) as http,
        http.stream(
            "POST", "/v1/chat/completions", json=chat_body(f"x {SLOW}", stream=True)
        ) as running,
    ):
        assert running.status_code == 200
        second = await http.post("/v1/chat/completions", json=chat_body("y"))
        refused = await http.post("/v1/chat/completions", json=chat_body("z", stream=True))
    for response in (second, refused):
        assert response.status_code == 429
        body = response.json()["error"]
        assert (body["type"], body["code"], body["param"]) == (
            "concurrency",
            "rate_limit_exceeded",
            None,
        )
        assert response.headers["retry-after"] == "1"
        assert response.headers["retry-after-ms"] == "1000"


def state(response: httpx.Response) -> dict[str, str]:
    return {name: response.headers[name] for name in STATE if name in response.headers}


async def test_headers_match_get_usage_after_a_known_sequence(stack: Stack, bridge: Bridge) -> None:
    async with bridge.client(token(stack, "all")) as http:
        for _ in range(2):
            unary = await http.post("/v1/chat/completions", json=chat_body("a", max_tokens=50))
            assert unary.status_code == 200
        async with http.stream(
            "POST", "/v1/chat/completions", json=chat_body("b", max_tokens=50, stream=True)
        ) as streamed:
            head = state(streamed)  # in the head of the stream
            await streamed.aread()
        usage = await http.get("/v1/usage")
    assert set(state(unary)) == set(STATE)
    assert state(unary)["x-ratelimit-remaining-requests"] == "18"
    assert head["x-ratelimit-remaining-requests"] == "17"
    assert head["x-ratelimit-limit-requests"] == "20"
    assert head["x-ratelimit-limit-tokens"] == "100000"
    assert usage.status_code == 200
    assert usage.headers["cache-control"] == "no-store"
    report = usage.json()
    assert report["object"] == "usage" and report["tier"] == "all"
    assert report["limits"] == {
        "requests_per_minute": 20,
        "tokens_per_day": 100000,
        "max_concurrent_requests": 3,
    }
    assert report["remaining"]["requests_per_minute"] == 17
    assert report["remaining"]["max_concurrent_requests"] == 3
    assert report["in_flight"] == 0
    today = report["today"]
    spent = today["prompt_tokens"] + today["completion_tokens"]
    assert today["total_tokens"] == spent > 0
    assert report["remaining"]["tokens_per_day"] == 100000 - spent
    # The stream's header counted its reserve; settling gave back what it did not use.
    assert int(head["x-ratelimit-remaining-tokens"]) < report["remaining"]["tokens_per_day"]
    assert today["requests"] == 3
    assert today["by_provider"]["workers-ai"]["requests"] == 3
    assert today["date"] == time.strftime("%Y-%m-%d", time.gmtime())
    assert set(report["reset_seconds"]) == {"requests_per_minute", "tokens_per_day"}


async def test_usage_of_an_unlimited_tier_has_nulls(stack: Stack, bridge: Bridge) -> None:
    async with bridge.client(token(stack, "pro")) as http:
        completion = await http.post("/v1/chat/completions", json=chat_body("free"))
        report: dict[str, Any] = (await http.get("/v1/usage")).json()
    assert state(completion) == {}
    assert report["limits"] == {
        "requests_per_minute": None,
        "tokens_per_day": None,
        "max_concurrent_requests": None,
    }
    assert report["reset_seconds"] == {"requests_per_minute": None, "tokens_per_day": None}
    assert report["today"]["requests"] == 1


async def test_usage_needs_a_token(bridge: Bridge) -> None:
    async with bridge.client() as http:
        response = await http.get("/v1/usage")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


async def test_cors_exposes_the_limit_headers(stack: Stack) -> None:
    settings = bridge_settings(
        stack.gateway_address, stack.vault_address, cors_origins=("https://app.example",)
    )
    async with (
        serve_bridge(settings) as cors_bridge,
        cors_bridge.client(token(stack, "all")) as http,
    ):
        response = await http.post(
            "/v1/chat/completions",
            json=chat_body("cors"),
            headers={"origin": "https://app.example"},
        )
    exposed = {h.strip() for h in response.headers["access-control-expose-headers"].split(",")}
    assert set(STATE) | {"retry-after-ms"} <= exposed
