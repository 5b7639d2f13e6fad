"""The official openai SDK (sync and async) against the real bridge and stack: to a client, the
bridge must be indistinguishable from the OpenAI API, errors included."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import openai
import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletionMessageParam

from fakes.content import reply_text
from tests.bridge.support import LLAMA, Bridge, bridge_settings, serve_bridge
from tests.support.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello sdk"}]


def async_client(bridge: Bridge, token: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{bridge.base_url}/v1", api_key=token, max_retries=0)


def sync_client(bridge: Bridge, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{bridge.base_url}/v1", api_key=token, max_retries=0)


async def test_async_create_stream_helper_and_models(stack: Stack, bridge: Bridge) -> None:
    async with async_client(bridge, stack.tokens.mint("sdk-async")) as client:
        completion = await client.chat.completions.create(model=LLAMA, messages=USER)
        assert completion.object == "chat.completion"
        assert completion.model == LLAMA
        assert completion.choices[0].message.content == reply_text("hello sdk")
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None and completion.usage.completion_tokens == 6

        stream = await client.chat.completions.create(
            model=LLAMA,
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == reply_text("hello sdk")
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6

        async with client.chat.completions.stream(model=LLAMA, messages=USER) as helper:
            deltas = [event.delta async for event in helper if event.type == "content.delta"]
            final = await helper.get_final_completion()
        assert "".join(deltas) == reply_text("hello sdk")
        assert final.choices[0].message.content == reply_text("hello sdk")
        assert final.choices[0].finish_reason == "stop"

        page = await client.models.list()
        ids = [model.id for model in page.data]
        assert LLAMA in ids
        assert all(model.object == "model" and model.owned_by for model in page.data)


async def test_sync_client_create_stream_helper_and_models(stack: Stack, bridge: Bridge) -> None:
    token = stack.tokens.mint("sdk-sync")

    def run() -> None:
        with sync_client(bridge, token) as client:
            completion = client.chat.completions.create(model=LLAMA, messages=USER)
            assert completion.choices[0].message.content == reply_text("hello sdk")
            stream = client.chat.completions.create(model=LLAMA, messages=USER, stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            assert text == reply_text("hello sdk")
            with client.chat.completions.stream(model=LLAMA, messages=USER) as helper:
                final = helper.get_final_completion()
            assert final.choices[0].message.content == reply_text("hello sdk")
            assert final.choices[0].finish_reason == "stop"
            assert LLAMA in [model.id for model in client.models.list().data]

    # The stack serves on this loop: a blocking client must run in another thread.
    await asyncio.to_thread(run)


@pytest.mark.parametrize(
    ("model", "prompt", "extra", "exc_type", "status", "code", "param", "kind"),
    [
        (LLAMA, "hot", {"temperature": 3.0}, openai.BadRequestError, 400, None, "temperature", "invalid_request_error"),
        ("openai/gpt-4o", "which model", {}, openai.NotFoundError, 404, "model_not_found", "model", "invalid_request_error"),
        (LLAMA, "slow down [[fake:status=429]]", {}, openai.RateLimitError, 429, "rate_limit_exceeded", None, "requests"),
        (LLAMA, "broken [[fake:status=500]]", {}, openai.InternalServerError, 502, "upstream_error", None, "server_error"),
    ],
)  # fmt: skip
async def test_errors_raise_the_sdk_exception_for_their_status(
    stack: Stack,
    bridge: Bridge,
    model: str,
    prompt: str,
    extra: dict[str, float],
    exc_type: type[openai.APIStatusError],
    status: int,
    code: str | None,
    param: str | None,
    kind: str,
) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": prompt}]
    async with async_client(bridge, stack.tokens.mint("sdk-errors")) as client:
        with pytest.raises(exc_type) as info:
            await client.chat.completions.create(
                model=model, messages=messages, temperature=extra.get("temperature")
            )
    error = info.value
    assert error.status_code == status
    assert error.param == param
    assert error.type == kind
    if code is not None:
        assert error.code == code
    assert error.response.headers["x-request-id"]


async def test_bad_token_is_authentication_error(stack: Stack, bridge: Bridge) -> None:
    async with async_client(bridge, "not-a-firebase-token") as client:
        with pytest.raises(openai.AuthenticationError) as info:
            await client.chat.completions.create(model=LLAMA, messages=USER)
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    assert info.value.type == "invalid_request_error"
    assert info.value.response.headers["www-authenticate"].startswith("Bearer")


async def test_rejected_byok_key_is_authentication_error(stack: Stack, bridge: Bridge) -> None:
    # Well-formed for OpenRouter, but not a key the (fake) OpenRouter accepts.
    key = "sk-or-v1-" + "9" * 40
    await stack.save_key("sdk-byok", key)
    workers_ai_before = stack.workers_ai.control.count()
    async with async_client(bridge, stack.tokens.mint("sdk-byok")) as client:
        with pytest.raises(openai.AuthenticationError) as info:
            await client.chat.completions.create(model=LLAMA, messages=USER)
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    assert "stored" in info.value.message and "rejected" in info.value.message
    assert stack.openrouter.control.last.header("authorization") == f"Bearer {key}"
    assert stack.workers_ai.control.count() == workers_ai_before  # never a silent fallback


async def test_mid_stream_error_raises_api_error(stack: Stack, bridge: Bridge) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "cut [[fake:cut_after=2]]"}
    ]
    received: list[str] = []

    async def consume(client: openai.AsyncOpenAI) -> None:
        stream = await client.chat.completions.create(model=LLAMA, messages=messages, stream=True)
        async for chunk in stream:
            received.extend(c.delta.content or "" for c in chunk.choices)

    async with async_client(bridge, stack.tokens.mint("sdk-cut")) as client:
        with pytest.raises(openai.APIError) as info:
            await consume(client)
    assert not isinstance(info.value, openai.APIStatusError)
    assert info.value.code == "upstream_stream_interrupted"
    assert info.value.type == "server_error"
    assert "".join(received)  # the part that did arrive


@pytest_asyncio.fixture(loop_scope="module")
async def orphan_bridge(stack: Stack) -> AsyncIterator[Bridge]:
    """A bridge whose gateway address has nothing listening."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    async with serve_bridge(bridge_settings(dead, stack.vault_address)) as running:
        yield running


async def test_gateway_down_is_service_unavailable(stack: Stack, orphan_bridge: Bridge) -> None:
    async with async_client(orphan_bridge, stack.tokens.mint("sdk-down")) as client:
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model=LLAMA, messages=USER)
    assert info.value.status_code == 503
    assert info.value.type == "service_unavailable_error"
    assert info.value.code == "service_unavailable"
    assert "127.0.0.1" not in info.value.message  # gRPC's transport text stays inside
