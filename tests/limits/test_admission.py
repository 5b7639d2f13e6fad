"""Admission control through the real gRPC gateway, on both stores (SPEC §10).

The stack (fake upstreams, vault, gateway) is built once per store; every test uses users of
its own, so the stores' state never leaks between tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client import generate_latest

from gateway_service.limits.estimate import prompt_tokens
from native1api.gateway.v1 import chat_pb2, gateway_service_pb2
from native1api.vault.v1 import vault_service_pb2
from tests.limits.support import SLOW, Caller, chat, limited_stack
from tests.support.rpc import error_details
from tests.support.stack import OPENROUTER_KEY, Stack
from tests.support.tokens import TokenFactory
from vault_service.crypto import KeyRing

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["memory", "redis"])
async def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    tokens: TokenFactory,
    keyring: KeyRing,
) -> AsyncIterator[Stack]:
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    async with limited_stack(
        tmp_path_factory.mktemp("limits"), tokens, keyring, redis_url=redis_url
    ) as running:
        yield running


def refusal(error: grpc.aio.AioRpcError) -> tuple[str, float, float | None]:
    """(limit, ErrorInfo retry_after, RetryInfo delay) of a RATE_LIMITED status."""
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    info = error_details(error)
    assert info.reason == "RATE_LIMITED"
    retry = None
    for detail in rpc_status.from_call(error).details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            unpacked = error_details_pb2.RetryInfo()
            detail.Unpack(unpacked)
            retry = unpacked.retry_delay.ToNanoseconds() / 1e9
    return info.metadata["limit"], float(info.metadata["retry_after"]), retry


async def first_message(call: Any) -> Any:
    """The first message of a stream, or the error that ended it before any."""
    try:
        return await call.read()
    except grpc.aio.AioRpcError as error:
        return error


async def drain(call: Any) -> None:
    while await call.read() is not grpc.aio.EOF:
        pass


def initial(metadata: Any) -> dict[str, str]:
    return {key: value for key, value in metadata or () if key.startswith("x-ratelimit-")}


# -- requests per minute -------------------------------------------------------------------


async def test_n_back_to_back_then_429_and_retry_after_is_right(stack: Stack) -> None:
    user = Caller(stack, "rpm30")
    outcomes: list[grpc.aio.AioRpcError | None] = []
    for _ in range(31):
        try:
            await user.complete()
            outcomes.append(None)
        except grpc.aio.AioRpcError as error:
            outcomes.append(error)
    assert outcomes[:30] == [None] * 30
    last = outcomes[30]
    assert last is not None
    limit, retry_after, retry_info = refusal(last)
    assert limit == "requests"
    assert 0 < retry_after <= 2.0  # 60 s / 30 per request, minus what already refilled
    assert retry_info == pytest.approx(retry_after, abs=0.001)
    assert "rpm30" in (last.details() or "") and "30 requests per minute" in (last.details() or "")
    await asyncio.sleep(retry_after)
    await user.complete()  # retrying after Retry-After succeeds
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await user.complete()
    assert refusal(again.value)[0] == "requests"


async def test_streams_count_as_requests_too(stack: Stack) -> None:
    user = Caller(stack, anonymous=True, firebase={"sign_in_provider": "anonymous"})
    for _ in range(7):
        assert [m async for m in user.stream()]
    call = user.stream()
    error = await first_message(call)
    assert isinstance(error, grpc.aio.AioRpcError)
    assert refusal(error)[0] == "requests"
    assert (await user.usage()).tier == "anonymous"


async def test_zero_refuses_everything_with_a_clear_message(stack: Stack) -> None:
    user = Caller(stack, "zero")
    before = len(stack.workers_ai.control.requests)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await user.complete()
    assert refusal(caught.value)[0] == "requests"
    assert "allows no requests" in (caught.value.details() or "")
    assert len(stack.workers_ai.control.requests) == before  # refused before any upstream call


# -- concurrency ---------------------------------------------------------------------------


async def test_fifty_streams_four_run_the_rest_are_refused_at_once(stack: Stack) -> None:
    user = Caller(stack, "conc4")
    started = time.monotonic()
    calls = [user.stream(chat(f"slow {i} {SLOW}")) for i in range(50)]
    firsts = await asyncio.gather(*(first_message(call) for call in calls))
    admitted = [
        call
        for call, first in zip(calls, firsts, strict=True)
        if not isinstance(first, grpc.aio.AioRpcError)
    ]
    refused = [first for first in firsts if isinstance(first, grpc.aio.AioRpcError)]
    assert len(admitted) == 4
    assert len(refused) == 46
    assert {refusal(error)[0] for error in refused} == {"concurrency"}
    assert time.monotonic() - started < 0.9  # refused at once, not after the slow streams
    assert (await user.usage()).in_flight == 4
    for call in admitted:
        await drain(call)
    # All four ended: four more are admitted, the fifth is refused.
    calls = [user.stream(chat(f"again {i} {SLOW}")) for i in range(5)]
    firsts = await asyncio.gather(*(first_message(call) for call in calls))
    assert sum(not isinstance(f, grpc.aio.AioRpcError) for f in firsts) == 4
    for call in calls:
        call.cancel()


async def wait_admitted(user: Caller, request: chat_pb2.ChatCompletionRequest) -> float:
    """Seconds until `user` gets a completion admitted (the slot was freed), at most 3 s."""
    started = time.monotonic()
    while True:
        try:
            await user.complete(request)
            return time.monotonic() - started
        except grpc.aio.AioRpcError as error:
            limit = refusal(error)[0]
        assert limit == "concurrency"
        assert time.monotonic() - started < 3, "the slot was never freed"
        await asyncio.sleep(0.02)


async def test_a_cancelled_stream_frees_its_slot(stack: Stack) -> None:
    user = Caller(stack, "conc1")
    call = user.stream(chat(f"long {SLOW}"))
    assert not isinstance(await first_message(call), grpc.aio.AioRpcError)
    with pytest.raises(grpc.aio.AioRpcError):
        await user.complete()  # the slot is taken
    call.cancel()  # the client goes away mid-stream
    assert await wait_admitted(user, chat("next")) < 1.0


async def test_an_upstream_error_frees_its_slot(stack: Stack) -> None:
    user = Caller(stack, "conc1")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await user.complete(chat("fail [[fake:status=500]]"))
    assert caught.value.code() != grpc.StatusCode.RESOURCE_EXHAUSTED
    await user.complete(chat("after the failure"))  # admitted at once
    error = await first_message(user.stream(chat("cut [[fake:cut_after=2]]")))
    assert not isinstance(error, grpc.aio.AioRpcError)
    await asyncio.sleep(0.3)
    await user.complete(chat("after the cut"))


async def test_a_deadline_frees_its_slot(stack: Stack) -> None:
    user = Caller(stack, "conc1")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await user.complete(chat("slow [[fake:delay_first=3]]"), timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await wait_admitted(user, chat("next")) < 1.0
    call = user.stream(chat("slow [[fake:delay_first=3]]"), timeout=0.3)
    error = await first_message(call)
    assert isinstance(error, grpc.aio.AioRpcError)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await wait_admitted(user, chat("next")) < 1.0


# -- tokens per day ------------------------------------------------------------------------


async def test_a_reserve_that_does_not_fit_is_refused(stack: Stack) -> None:
    user = Caller(stack, "tokens")
    before = len(stack.workers_ai.control.requests)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await user.complete(chat("big", max_tokens=3000))
    limit, retry_after, _ = refusal(caught.value)
    assert limit == "tokens"
    assert 0 < retry_after <= 86_400  # the end of the UTC day
    assert "lower max_tokens" in (caught.value.details() or "")
    assert len(stack.workers_ai.control.requests) == before  # nothing reached the upstream
    # The same prompt with a smaller max_tokens fits.
    await user.complete(chat("big", max_tokens=2000))


async def test_settlement_uses_the_upstreams_real_usage(stack: Stack) -> None:
    user = Caller(stack, "tokens")
    reply = await user.complete(chat("count me", max_tokens=1000))
    usage = reply.completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    report = await user.usage()
    assert report.remaining.tokens_per_day == 3000 - usage.prompt_tokens - usage.completion_tokens
    today = report.today.by_provider["workers-ai"]
    assert (today.requests, today.prompt_tokens, today.completion_tokens) == (
        1,
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    # Streams settle to their usage chunk the same way.
    messages = [m async for m in user.stream(chat("stream me", max_tokens=500))]
    streamed = messages[-1].chunk.usage
    report = await user.usage()
    spent = usage.total_tokens + streamed.prompt_tokens + streamed.completion_tokens
    assert report.remaining.tokens_per_day == 3000 - spent
    assert report.today.requests == 2


async def test_a_stream_cut_before_usage_settles_to_the_estimate(stack: Stack) -> None:
    user = Caller(stack, "tokens")
    request = chat("cut me [[fake:cut_after=4,chunks=12]]", max_tokens=1500)
    call = user.stream(request)
    text = ""
    cut = None
    try:
        async for message in call:
            text += "".join(c.delta.content for c in message.chunk.choices)
    except grpc.aio.AioRpcError as error:
        cut = error.code()
    assert cut == grpc.StatusCode.UNAVAILABLE
    assert text  # something was streamed before the cut
    report = await user.usage()
    spent = 3000 - report.remaining.tokens_per_day
    estimate = prompt_tokens(request)
    # Not the reserve (prompt + max_tokens): the prompt estimate plus what was streamed.
    assert spent == estimate + -(-len(text) // 4)
    assert report.today.by_provider["workers-ai"].prompt_tokens == estimate


async def test_byok_requests_do_not_count_against_tokens(stack: Stack) -> None:
    platform, own_key = Caller(stack, "notokens"), Caller(stack, "notokens")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await platform.complete()
    assert refusal(caught.value)[0] == "tokens"
    await stack.vault.PutApiKey(
        vault_service_pb2.PutApiKeyRequest(api_key=OPENROUTER_KEY), metadata=own_key.metadata
    )
    reply = await own_key.complete(chat("on my key", model="openai/gpt-4o-mini"))
    assert reply.provider == gateway_service_pb2.PROVIDER_OPENROUTER
    report = await own_key.usage()
    assert report.today.by_provider["openrouter"].requests == 1
    assert (
        report.today.by_provider["openrouter"].prompt_tokens == reply.completion.usage.prompt_tokens
    )
    assert report.remaining.tokens_per_day == 0 and report.limits.tokens_per_day == 0


# -- tiers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "tier"),
    [
        ({"tier": "pro"}, "pro"),
        ({}, "default"),
        ({"tier": "no-such-tier"}, "default"),
        ({"tier": 7}, "default"),
        ({"firebase": {"sign_in_provider": "anonymous", "identities": {}}}, "anonymous"),
        ({"tier": "pro", "firebase": {"sign_in_provider": "anonymous"}}, "pro"),
    ],
)
async def test_the_tier_comes_from_the_token(
    stack: Stack, claims: dict[str, Any], tier: str
) -> None:
    user = Caller(stack, **claims)
    assert (await user.usage()).tier == tier


# -- state reporting -----------------------------------------------------------------------


async def test_initial_metadata_matches_get_usage(stack: Stack) -> None:
    user = Caller(stack, "all")
    for _ in range(3):
        call = stack.gateway.CreateChatCompletion(
            gateway_service_pb2.CreateChatCompletionRequest(request=chat(max_tokens=100)),
            metadata=user.metadata,
        )
        reply = await call
        headers = initial(await call.initial_metadata())
    report = await user.usage()
    assert headers["x-ratelimit-limit-requests"] == "20" == str(report.limits.requests_per_minute)
    assert headers["x-ratelimit-remaining-requests"] == "17"
    assert report.remaining.requests_per_minute == 17
    assert headers["x-ratelimit-limit-tokens"] == "100000"
    # The header counted the third reserve; GET usage counts what the three really spent.
    spent = 100_000 - report.remaining.tokens_per_day
    assert spent <= 3 * (prompt_tokens(chat(max_tokens=100)) + 100)
    assert spent == report.today.prompt_tokens + report.today.completion_tokens
    assert reply.completion.usage.total_tokens > 0
    reset = headers["x-ratelimit-reset-requests"]
    assert reset.endswith("s") and not reset.startswith("-")
    assert headers["x-ratelimit-reset-tokens"].endswith("s")
    assert 0 < report.reset_seconds.tokens_per_day <= 86_400
    assert 0 < report.reset_seconds.requests_per_minute <= 60 * 3 / 20 + 0.1
    # A stream's state arrives before its first message.
    call = user.stream()
    metadata = initial(await call.initial_metadata())
    assert metadata["x-ratelimit-remaining-requests"] == "16"
    assert [m async for m in call]
    assert report.limits.max_concurrent_requests == 3
    assert report.remaining.max_concurrent_requests == 3


async def test_an_unlimited_tier_sends_no_state_but_counts_usage(stack: Stack) -> None:
    user = Caller(stack, "pro")
    call = stack.gateway.CreateChatCompletion(
        gateway_service_pb2.CreateChatCompletionRequest(request=chat()), metadata=user.metadata
    )
    await call
    assert initial(await call.initial_metadata()) == {}
    report = await user.usage()
    assert not report.limits.HasField("requests_per_minute")
    assert not report.remaining.HasField("tokens_per_day")
    assert report.today.requests == 1 and report.today.date == time.strftime(
        "%Y-%m-%d", time.gmtime()
    )


async def test_metrics_count_admissions_and_refusals_by_tier(stack: Stack) -> None:
    registry = stack.gateway_app.metrics.registry

    def value(name: str, labels: dict[str, str]) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    before_ok = value("native1api_gateway_admissions_total", {"tier": "zero"})
    before_no = value(
        "native1api_gateway_admission_refusals_total", {"tier": "zero", "limit": "requests"}
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await Caller(stack, "zero").complete()
    assert (
        value("native1api_gateway_admission_refusals_total", {"tier": "zero", "limit": "requests"})
        == before_no + 1
    )
    assert value("native1api_gateway_admissions_total", {"tier": "zero"}) == before_ok
    before = value("native1api_gateway_admissions_total", {"tier": "pro"})
    await Caller(stack, "pro").complete()
    assert value("native1api_gateway_admissions_total", {"tier": "pro"}) == before + 1
    exposition = generate_latest(registry).decode()
    assert "lim-" not in exposition  # no user ids in any label
