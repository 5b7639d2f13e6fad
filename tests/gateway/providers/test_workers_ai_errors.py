"""Workers AI failures: error envelopes, retries before the first byte, cuts after it,
cancellation and timeouts; over real HTTP against the fake, plus the pure parsers."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from fakes.app import FakeApp
from fakes.behavior import Behavior
from fakes.content import reply_text
from gateway_service import errors
from gateway_service.providers.workers_ai import WorkersAI
from gateway_service.providers.workers_ai_stream import (
    completion_from_body,
    parse_error,
    reported_status,
)
from gateway_service.upstream_http import HttpSettings, make_client
from native1api.gateway.v1 import chat_pb2
from rpc_common.openai import UpstreamFormatError, UpstreamReportedError
from rpc_common.status import RpcError
from tests.gateway.providers.workers_ai_support import (
    ACCT,
    CHUNKS,
    GPT_OSS,
    LLAMA,
    RUN,
    SETTINGS,
    TOKEN,
    V1,
    Env,
    body,
    collect,
    content_of,
    drain,
    finishes,
    make_call,
    make_env,
    start_fake,
)


@pytest.fixture(scope="module")
def wai_fake() -> Iterator[tuple[FakeApp, str]]:
    yield from start_fake()


@pytest.fixture
async def wai(wai_fake: tuple[FakeApp, str]) -> AsyncIterator[Env]:
    async for env in make_env(wai_fake):
        yield env


async def _fail(provider: WorkersAI, request: dict[str, object], *, stream: bool) -> RpcError:
    call = make_call(request)
    with pytest.raises(RpcError) as caught:
        await drain(provider, call, [], stream=stream)
    return caught.value


# ---- error envelopes -----------------------------------------------------------------------------

ENVELOPES = [
    # (HTTP status, Workers AI code, gRPC code, ErrorInfo reason, OpenAI code)
    (404, 3042, grpc.StatusCode.NOT_FOUND, errors.MODEL_NOT_FOUND, "model_not_found"),
    (400, 5007, grpc.StatusCode.NOT_FOUND, errors.MODEL_NOT_FOUND, "model_not_found"),
    (403, 5016, grpc.StatusCode.PERMISSION_DENIED, errors.CONTENT_BLOCKED, "model_not_allowed"),
    (403, 5018, grpc.StatusCode.PERMISSION_DENIED, errors.CONTENT_BLOCKED, "model_not_allowed"),
    (403, 3041, grpc.StatusCode.PERMISSION_DENIED, errors.CONTENT_BLOCKED, "model_not_allowed"),
    (403, 3023, grpc.StatusCode.PERMISSION_DENIED, errors.CONTENT_BLOCKED, "model_not_allowed"),
    (408, 3007, grpc.StatusCode.DEADLINE_EXCEEDED, errors.UPSTREAM_TIMEOUT, "upstream_timeout"),
    (
        413,
        3006,
        grpc.StatusCode.INVALID_ARGUMENT,
        errors.UPSTREAM_BAD_REQUEST,
        "upstream_bad_request",
    ),
    (
        400,
        3003,
        grpc.StatusCode.INVALID_ARGUMENT,
        errors.UPSTREAM_BAD_REQUEST,
        "upstream_bad_request",
    ),
    (401, 10000, grpc.StatusCode.INTERNAL, errors.UPSTREAM_AUTH_FAILED, "upstream_auth_failed"),
    # Auth failure reported as 400 (models/search style): the code decides.
    (400, 10001, grpc.StatusCode.INTERNAL, errors.UPSTREAM_AUTH_FAILED, "upstream_auth_failed"),
    # The capacity code in a non-429 answer still means "rate limited".
    (500, 3040, grpc.StatusCode.RESOURCE_EXHAUSTED, errors.RATE_LIMITED, "rate_limit_exceeded"),
]


@pytest.mark.parametrize(("status", "code", "grpc_code", "reason", "openai_code"), ENVELOPES)
@pytest.mark.parametrize("stream", [False, True])
async def test_error_envelopes_map_to_the_error_table(
    wai: Env,
    status: int,
    code: int,
    grpc_code: grpc.StatusCode,
    reason: str,
    openai_code: str,
    stream: bool,
) -> None:
    wai.control.fail_next(status, code=code)
    error = await _fail(wai.provider, body("boom"), stream=stream)
    assert (error.code, error.reason) == (grpc_code, reason)
    assert error.metadata["provider"] == "workers-ai"
    assert error.metadata["code"] == openai_code
    assert wai.control.count() == 1  # none of these is retried


@pytest.mark.parametrize("code", [3040, 3036])
async def test_rate_limits_carry_retry_after(wai: Env, code: int) -> None:
    # Retry-After beyond the cap: not retried, forwarded to the client instead.
    wai.control.fail_next(429, code=code, retry_after=30)
    error = await _fail(wai.provider, body("busy"), stream=False)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.RATE_LIMITED)
    assert error.metadata["retry_after"] == "30"
    assert wai.control.count() == 1


async def test_plain_text_500_is_an_upstream_error(wai: Env) -> None:
    wai.control.fail_next(500)  # the fake's default 500 is a text body
    error = await _fail(wai.provider, body("boom"), stream=True)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, errors.UPSTREAM_ERROR)
    assert error.metadata["upstream_status"] == "500"


async def test_platform_token_rejected_is_502_material_and_never_shows_the_token(wai: Env) -> None:
    wrong = "cf-wrong-token-ffffffffffffffff"
    call = make_call(body("hi"), api_key=wrong)
    with pytest.raises(RpcError) as caught:
        await wai.provider.complete(call)
    error = caught.value
    assert (error.code, error.reason) == (grpc.StatusCode.INTERNAL, errors.UPSTREAM_AUTH_FAILED)
    assert errors.UPSTREAM_AUTH_FAILED in errors.UPSTREAM_FAILURE_REASONS
    text = error.message + repr(error.metadata)
    assert wrong not in text and TOKEN not in text
    assert wai.control.last.status == 401


async def test_v1_openai_error_envelope(wai: Env) -> None:
    wai.control.push(Behavior(status=429, envelope="openai", retry_after=30))
    error = await _fail(wai.provider, body("oss", model=GPT_OSS), stream=True)
    assert wai.control.last.path == V1
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.RATE_LIMITED)
    assert error.metadata["retry_after"] == "30"


async def test_v1_openai_model_not_found(wai: Env) -> None:
    error = await _fail(
        wai.provider,
        body("oss [[fake:envelope=openai]]", model="@cf/openai/gpt-oss-nonexistent"),
        stream=False,
    )
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, errors.MODEL_NOT_FOUND)


# ---- the pure parsers ----------------------------------------------------------------------------


def _headers() -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict())


def test_parse_error_reads_the_v4_envelope() -> None:
    raw = b'{"result":null,"success":false,"errors":[{"code":3040,"message":"Capacity temporarily exceeded, please try again."}],"messages":[]}'
    failure = parse_error(429, raw, _headers())
    assert (failure.status, failure.provider_code) == (429, 3040)
    assert failure.message == "Capacity temporarily exceeded, please try again."


def test_parse_error_reads_a_prefixed_code_in_a_text_body() -> None:
    failure = parse_error(500, b"AiError: 3040: Capacity temporarily exceeded", _headers())
    assert (failure.status, failure.provider_code) == (429, 3040)
    assert failure.message == "Capacity temporarily exceeded"
    failure = parse_error(500, b"InferenceUpstreamError: 3007: Request timeout", _headers())
    assert (failure.status, failure.provider_code) == (408, 3007)


def test_parse_error_reads_a_prefixed_code_inside_the_envelope() -> None:
    raw = b'{"success":false,"errors":[{"message":"AiError: 3036: daily allocation used"}]}'
    failure = parse_error(400, raw, _headers())
    assert (failure.status, failure.provider_code) == (429, 3036)
    assert failure.message == "daily allocation used"


def test_parse_error_reads_the_openai_envelope() -> None:
    raw = b'{"error":{"message":"The model does not exist.","type":"invalid_request_error","param":"model","code":"model_not_found"}}'
    failure = parse_error(404, raw, _headers())
    assert (failure.status, failure.provider_code) == (404, "model_not_found")
    assert failure.message == "The model does not exist."


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"Internal Server Error", "Internal Server Error"),
        (b"", "HTTP 502"),
        (b"{not json", "{not json"),
        (b"<html>" + b"x" * 1000, "<html>" + "x" * 294),
    ],
)
def test_parse_error_text_and_garbage(raw: bytes, message: str) -> None:
    failure = parse_error(502, raw, _headers())
    assert (failure.status, failure.provider_code, failure.message) == (502, None, message)


def test_parse_error_keeps_unknown_codes_and_the_http_status() -> None:
    raw = b'{"success":false,"errors":[{"code":9109,"message":"Unauthorized to access requested resource"}]}'
    failure = parse_error(403, raw, _headers())
    assert (failure.status, failure.provider_code) == (403, 9109)
    mapped = errors.from_upstream_status("workers-ai", failure, byok=False)
    assert mapped.reason == errors.UPSTREAM_AUTH_FAILED


def test_success_false_in_a_2xx_body_is_a_reported_error() -> None:
    data = {"result": None, "success": False, "errors": [{"code": 3040, "message": "busy"}]}
    with pytest.raises(UpstreamReportedError) as caught:
        completion_from_body(data, model=LLAMA, max_tokens=10)
    failure = reported_status(caught.value)
    assert (failure.status, failure.provider_code, failure.message) == (429, 3040, "busy")


@pytest.mark.parametrize(
    "data",
    [[1, 2], {"result": "text"}, {"result": {"tool_calls": "nope"}}, {"choices": []}],
)
def test_unreadable_bodies_are_format_errors(data: object) -> None:
    with pytest.raises(UpstreamFormatError):
        completion_from_body(data, model=LLAMA, max_tokens=10)


# ---- retries before the first byte ---------------------------------------------------------------


async def test_503_is_retried_once_then_succeeds(wai: Env) -> None:
    wai.control.fail_next(503)
    completion = await wai.provider.complete(make_call(body("again")))
    assert completion.choices[0].message.content == reply_text("again", CHUNKS)
    assert [r.status for r in wai.chat_requests()] == [503, 200]


async def test_429_retry_after_is_honoured(wai: Env) -> None:
    wai.control.fail_next(429, retry_after=0.4)
    started = time.monotonic()
    chunks = await collect(wai.provider, make_call(body("patience")))
    assert time.monotonic() - started >= 0.4
    assert content_of(chunks) == reply_text("patience", CHUNKS)
    assert [r.status for r in wai.chat_requests()] == [429, 200]


async def test_retries_stop_after_two(wai: Env) -> None:
    wai.control.fail_next(502, times=5)
    error = await _fail(wai.provider, body("down"), stream=True)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, errors.UPSTREAM_ERROR)
    assert wai.control.count() == 3


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there now: connecting is refused


async def test_connect_errors_are_retried_then_reported(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway_service.upstream_http")
    async with make_client(SETTINGS) as http:
        provider = WorkersAI(http, SETTINGS, f"http://127.0.0.1:{_closed_port()}/client/v4", ACCT)
        with pytest.raises(RpcError) as caught:
            await provider.complete(make_call(body("anyone?")))
    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        errors.UPSTREAM_UNREACHABLE,
    )
    retries = [r for r in caplog.records if "cannot connect" in r.getMessage()]
    assert len(retries) == 2


# ---- after the first byte: never retried, never a fake finish ------------------------------------


async def test_cut_mid_stream_is_interrupted_with_one_request(wai: Env) -> None:
    wai.control.cut_next(3)
    received: list[chat_pb2.ChatCompletionChunk] = []
    with pytest.raises(RpcError) as caught:
        await drain(wai.provider, make_call(body("cut me")), received)
    error = caught.value
    assert (error.code, error.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        errors.UPSTREAM_STREAM_INTERRUPTED,
    )
    assert content_of(received) == reply_text("cut me", CHUNKS)[: len(content_of(received))]
    assert len(received) == 3
    assert finishes(received) == []  # nothing pretends the answer was complete
    assert wai.control.count() == 1
    assert wai.control.last.outcome == "cut"


async def test_cut_before_done_after_all_content_is_still_interrupted(wai: Env) -> None:
    # All content arrived but usage and [DONE] did not: still not a complete answer.
    wai.control.cut_next(CHUNKS)
    received: list[chat_pb2.ChatCompletionChunk] = []
    with pytest.raises(RpcError) as caught:
        await drain(wai.provider, make_call(body("almost")), received)
    assert caught.value.reason == errors.UPSTREAM_STREAM_INTERRUPTED
    assert finishes(received) == []


async def test_error_frame_mid_stream_is_interrupted(wai: Env) -> None:
    wai.control.error_next(2)
    received: list[chat_pb2.ChatCompletionChunk] = []
    with pytest.raises(RpcError) as caught:
        await drain(wai.provider, make_call(body("error frame")), received)
    assert caught.value.reason == errors.UPSTREAM_STREAM_INTERRUPTED
    assert "Internal server error" in caught.value.message
    assert len(received) == 2 and finishes(received) == []
    assert wai.control.count() == 1


async def test_cut_non_stream_body_is_interrupted_once(wai: Env) -> None:
    wai.control.cut_next(0)
    error = await _fail(wai.provider, body("half a body"), stream=False)
    assert error.reason == errors.UPSTREAM_STREAM_INTERRUPTED
    assert wai.control.count() == 1


# ---- cancellation and timeouts -------------------------------------------------------------------


async def test_closing_the_generator_closes_the_upstream_at_once(wai: Env) -> None:
    call = make_call(body("long [[fake:chunks=200,chunk_delay=0.05]]", max_tokens=500))
    stream = wai.provider.stream(call)
    first = await anext(stream)
    second = await anext(stream)
    assert first.choices[0].delta.content and second.choices[0].delta.content
    closed_at = time.monotonic()
    await stream.aclose()  # what gRPC does when the client cancels
    event = await wai.control.wait_for_disconnect(1.0)
    assert event.phase == "streaming" and event.content_chunks_sent < 200
    assert event.at - closed_at < 1.0
    assert wai.control.last.outcome == "disconnected"


async def test_cancelling_the_consumer_task_closes_the_upstream(wai: Env) -> None:
    call = make_call(body("long [[fake:chunks=200,chunk_delay=0.05]]", max_tokens=500))
    started = asyncio.Event()

    async def consume() -> None:
        async for _chunk in wai.provider.stream(call):
            started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    event = await wai.control.wait_for_disconnect(1.0)
    assert event.phase == "streaming"


async def test_cancel_while_waiting_for_the_first_byte(wai: Env) -> None:
    call = make_call(body("slow [[fake:delay_first=5]]"))
    task = asyncio.create_task(wai.provider.complete(call))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    event = await wai.control.wait_for_disconnect(1.0)
    assert event.phase == "before_headers"


async def test_total_timeout_ends_a_slow_stream(wai: Env) -> None:
    settings = HttpSettings(read_timeout_seconds=5, total_timeout_seconds=0.3)
    provider = wai.adapter(settings)
    call = make_call(body("slow [[fake:chunks=100,chunk_delay=0.05]]", max_tokens=500))
    received: list[chat_pb2.ChatCompletionChunk] = []
    with pytest.raises(RpcError) as caught:
        await drain(provider, call, received)
    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        errors.UPSTREAM_TIMEOUT,
    )
    assert 0 < len(received) < 100 and finishes(received) == []
    await wai.control.wait_for_disconnect(1.0)


async def test_total_timeout_ends_a_slow_completion(wai: Env) -> None:
    provider = wai.adapter(HttpSettings(read_timeout_seconds=5, total_timeout_seconds=0.2))
    error = await _fail(provider, body("slow [[fake:delay_first=2]]"), stream=False)
    assert (error.code, error.reason) == (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        errors.UPSTREAM_TIMEOUT,
    )


async def test_read_timeout_before_the_first_byte(wai: Env) -> None:
    # Read timeouts live on the pooled client (make_client), so this test needs its own.
    settings = HttpSettings(read_timeout_seconds=0.2, max_retries=0)
    async with make_client(settings) as http:
        provider = WorkersAI(http, settings, wai.base_url, ACCT)
        error = await _fail(provider, body("silent [[fake:delay_first=2]]"), stream=True)
    assert (error.code, error.reason) == (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        errors.UPSTREAM_TIMEOUT,
    )
    assert wai.control.count(RUN + LLAMA) == 1
