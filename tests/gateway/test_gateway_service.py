"""GatewayService end to end in process: routing, streaming shape, faults, cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from fakes.content import reply_text
from native1api.gateway.v1 import chat_pb2, gateway_service_pb2
from tests.support.rpc import error_details, reason
from tests.support.stack import OPENROUTER_KEY, TOGETHER_KEY, Stack

LLAMA = "@cf/meta/llama-3.2-3b-instruct"
FINISH_STOP = chat_pb2.FINISH_REASON_STOP


def chat(prompt: str, model: str = LLAMA, **fields: Any) -> chat_pb2.ChatCompletionRequest:
    return chat_pb2.ChatCompletionRequest(
        model=model,
        messages=[chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, text=prompt)],
        **fields,
    )


async def collect(
    stack: Stack, uid: str, request: chat_pb2.ChatCompletionRequest
) -> list[gateway_service_pb2.StreamChatCompletionResponse]:
    call = stack.gateway.StreamChatCompletion(
        gateway_service_pb2.StreamChatCompletionRequest(request=request),
        metadata=stack.user(uid),
    )
    return [message async for message in call]


def text_of(messages: list[gateway_service_pb2.StreamChatCompletionResponse]) -> str:
    return "".join(c.delta.content for m in messages for c in m.chunk.choices)


def assert_openai_stream_shape(
    messages: list[gateway_service_pb2.StreamChatCompletionResponse],
) -> None:
    first = messages[0].chunk.choices[0]
    assert first.delta.role == chat_pb2.ROLE_ASSISTANT
    assert first.delta.content == ""
    finishes = [c for m in messages for c in m.chunk.choices if c.finish_reason]
    assert len(finishes) == 1, "exactly one chunk carries a finish reason"
    last = messages[-1].chunk
    assert list(last.choices) == []
    assert last.HasField("usage")
    assert len({m.chunk.id for m in messages}) == 1
    assert len({m.chunk.created for m in messages}) == 1


async def test_no_key_runs_on_workers_ai(stack: Stack) -> None:
    reply = await stack.gateway.CreateChatCompletion(
        gateway_service_pb2.CreateChatCompletionRequest(request=chat("hello there")),
        metadata=stack.user("alice"),
    )
    assert reply.provider == gateway_service_pb2.PROVIDER_WORKERS_AI
    completion = reply.completion
    assert completion.model == LLAMA
    assert completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.content == reply_text("hello there")
    assert completion.choices[0].finish_reason == FINISH_STOP
    assert completion.usage.completion_tokens > 0
    assert completion.usage.prompt_tokens > 0
    record = stack.workers_ai.control.last
    assert record.header("authorization") == "Bearer cf-platform-token-0123456789"
    assert isinstance(record.body["max_tokens"], int)  # always sent (SPEC §6)


async def test_stream_on_workers_ai_has_openai_shape(stack: Stack) -> None:
    messages = await collect(stack, "alice", chat("stream me"))
    assert messages[0].provider == gateway_service_pb2.PROVIDER_WORKERS_AI
    assert all(m.provider == 0 for m in messages[1:])
    assert_openai_stream_shape(messages)
    assert text_of(messages) == reply_text("stream me")
    assert messages[-1].chunk.usage.completion_tokens > 0


async def test_non_workers_ai_model_without_key_is_not_found(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.gateway.CreateChatCompletion(
            gateway_service_pb2.CreateChatCompletionRequest(request=chat("x", "openai/gpt-4o")),
            metadata=stack.user("alice"),
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    details = error_details(info.value)
    assert details.reason == "MODEL_NOT_FOUND"
    assert details.metadata["code"] == "model_not_found"
    assert stack.workers_ai.control.count() == 0


@pytest.mark.parametrize(
    ("api_key", "provider", "upstream_model"),
    [
        (
            OPENROUTER_KEY,
            gateway_service_pb2.PROVIDER_OPENROUTER,
            "meta-llama/llama-3.2-3b-instruct",
        ),
        (
            TOGETHER_KEY,
            gateway_service_pb2.PROVIDER_TOGETHER,
            "meta-llama/Llama-3.2-3B-Instruct-Turbo",
        ),
    ],
)
async def test_byok_key_routes_to_its_provider_with_alias(
    stack: Stack, api_key: str, provider: int, upstream_model: str
) -> None:
    await stack.save_key("bob", api_key)
    fake = (
        stack.openrouter if provider == gateway_service_pb2.PROVIDER_OPENROUTER else stack.together
    )
    messages = await collect(stack, "bob", chat("byok please"))
    assert messages[0].provider == provider
    assert_openai_stream_shape(messages)
    assert text_of(messages) == reply_text("byok please")
    assert all(m.chunk.model == LLAMA for m in messages)  # the id the client asked for
    record = fake.control.last
    assert record.body["model"] == upstream_model
    assert record.header("authorization") == f"Bearer {api_key}"
    assert stack.workers_ai.control.count() == 0

    # Deleting the key sends the user back to Workers AI.
    await stack.delete_key("bob")
    messages = await collect(stack, "bob", chat("byok please"))
    assert messages[0].provider == gateway_service_pb2.PROVIDER_WORKERS_AI


async def test_byok_passes_provider_ids_through(stack: Stack) -> None:
    await stack.save_key("bob", OPENROUTER_KEY)
    reply = await stack.gateway.CreateChatCompletion(
        gateway_service_pb2.CreateChatCompletionRequest(
            request=chat("hi", "mistralai/mistral-7b-instruct")
        ),
        metadata=stack.user("bob"),
    )
    assert reply.completion.model == "mistralai/mistral-7b-instruct"
    assert stack.openrouter.control.last.body["model"] == "mistralai/mistral-7b-instruct"


async def test_byok_cf_model_without_alias_is_not_found(stack: Stack) -> None:
    await stack.save_key("bob", TOGETHER_KEY)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.gateway.CreateChatCompletion(
            gateway_service_pb2.CreateChatCompletionRequest(
                request=chat("hi", "@cf/tinyllama/tinyllama-1.1b-chat-v1.0")
            ),
            metadata=stack.user("bob"),
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no equivalent on together" in (info.value.details() or "")
    assert stack.together.control.count() == 0


async def test_rejected_byok_key_is_reported_never_falls_back(stack: Stack) -> None:
    bad_key = "sk-or-v1-" + "dead" * 16
    await stack.save_key("carol", bad_key)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(stack, "carol", chat("hi"))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(info.value) == "BYOK_KEY_REJECTED"
    assert bad_key not in (info.value.details() or "")
    assert stack.workers_ai.control.count() == 0


async def test_vault_down_is_unavailable_never_platform(stack: Stack) -> None:
    await stack.vault_app.serving.stop(None)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.gateway.CreateChatCompletion(
            gateway_service_pb2.CreateChatCompletionRequest(request=chat("hi")),
            metadata=stack.user("alice"),
        )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert reason(info.value) == "VAULT_UNAVAILABLE"
    assert stack.workers_ai.control.count() == 0


async def test_invalid_request_is_invalid_argument_before_any_upstream_call(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.gateway.CreateChatCompletion(
            gateway_service_pb2.CreateChatCompletionRequest(request=chat("x", temperature=3.0)),
            metadata=stack.user("alice"),
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(info.value).metadata["param"] == "temperature"
    assert stack.workers_ai.control.count() == 0


async def test_unauthenticated(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.gateway.CreateChatCompletion(
            gateway_service_pb2.CreateChatCompletionRequest(request=chat("x"))
        )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_cut_mid_stream_ends_with_error_status_not_a_finish(stack: Stack) -> None:
    call = stack.gateway.StreamChatCompletion(
        gateway_service_pb2.StreamChatCompletionRequest(request=chat("cut [[fake:cut_after=2]]")),
        metadata=stack.user("alice"),
    )
    received: list[gateway_service_pb2.StreamChatCompletionResponse] = []

    async def drain() -> None:
        async for message in call:
            received.append(message)

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await drain()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert reason(info.value) == "UPSTREAM_STREAM_INTERRUPTED"
    assert text_of(received)  # content arrived before the cut...
    assert not any(c.finish_reason for m in received for c in m.chunk.choices)  # ...no fake finish
    assert stack.workers_ai.control.count() == 1  # never retried after the first byte


async def test_cancelling_the_call_closes_the_upstream_connection(stack: Stack) -> None:
    call = stack.gateway.StreamChatCompletion(
        gateway_service_pb2.StreamChatCompletionRequest(
            request=chat("slow [[fake:chunks=50,chunk_delay=0.1]]")
        ),
        metadata=stack.user("alice"),
    )
    seen = 0
    async for _ in call:
        seen += 1
        if seen == 3:
            break
    call.cancel()
    await stack.workers_ai.control.wait_for_disconnect(within=1.0)


async def test_retry_before_first_byte(stack: Stack) -> None:
    stack.workers_ai.control.fail_next(503, retry_after=0)
    messages = await collect(stack, "alice", chat("retry me"))
    assert text_of(messages) == reply_text("retry me")
    assert stack.workers_ai.control.count() == 2


async def test_list_models_follows_the_key(stack: Stack) -> None:
    reply = await stack.gateway.ListModels(
        gateway_service_pb2.ListModelsRequest(), metadata=stack.user("alice")
    )
    assert reply.provider == gateway_service_pb2.PROVIDER_WORKERS_AI
    assert LLAMA in {m.id for m in reply.models}
    await stack.save_key("alice", OPENROUTER_KEY)
    reply = await stack.gateway.ListModels(
        gateway_service_pb2.ListModelsRequest(), metadata=stack.user("alice")
    )
    assert reply.provider == gateway_service_pb2.PROVIDER_OPENROUTER
    assert all(not m.id.startswith("@cf/") for m in reply.models)


async def test_hundred_concurrent_streams_get_their_own_content(stack: Stack) -> None:
    async def one(i: int) -> tuple[int, str]:
        messages = await collect(stack, f"user-{i % 7}", chat(f"prompt number {i}"))
        assert_openai_stream_shape(messages)
        return i, text_of(messages)

    results = await asyncio.gather(*(one(i) for i in range(100)))
    for i, text in results:
        assert text == reply_text(f"prompt number {i}")


async def test_metrics_count_requests_and_tokens_without_user_labels(stack: Stack) -> None:
    await collect(stack, "metrics-user", chat("count my tokens"))
    registry = stack.gateway_app.metrics.registry
    labels = {"provider": "workers-ai", "model": LLAMA, "kind": "completion"}
    assert (registry.get_sample_value("native1api_gateway_tokens_total", labels) or 0) > 0
    ok = {"rpc": "StreamChatCompletion", "provider": "workers-ai", "status": "OK"}
    assert registry.get_sample_value("native1api_gateway_requests_total", ok) == 1
    assert registry.get_sample_value("native1api_gateway_streams_in_flight") == 0
    for metric in registry.collect():
        for sample in metric.samples:
            assert "metrics-user" not in str(sample.labels.values())
