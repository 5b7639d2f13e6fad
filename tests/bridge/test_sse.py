"""Raw SSE through the real bridge and stack: framing, usage, keep-alives, hold window, errors,
disconnects. Parsed with httpx-sse; comments (which it skips) are checked on the raw text."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from fakes.content import reply_text
from tests.bridge.support import (
    Bridge,
    SSEResult,
    bridge_settings,
    chat_body,
    serve_bridge,
    stream_chat,
)
from tests.support.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def slow_bridge(stack: Stack) -> AsyncIterator[Bridge]:
    """A bridge with a short hold window and keep-alive, to see both without waiting long."""
    settings = bridge_settings(
        stack.gateway_address,
        stack.vault_address,
        first_chunk_wait_seconds=0.3,
        keepalive_seconds=0.2,
    )
    async with serve_bridge(settings) as running:
        yield running


def assert_openai_framing(result: SSEResult) -> None:
    """OpenAI's exact framing: `data: <json>` + blank line, no `event:` lines, [DONE] last."""
    assert result.response.status_code == 200
    headers = result.response.headers
    assert headers["content-type"].split(";")[0] == "text/event-stream"
    assert headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no"
    assert headers["x-request-id"]
    frames = result.raw.split("\n\n")
    assert frames[-1] == "", "the stream ends with a complete frame"
    for frame in frames[:-1]:
        assert "\n" not in frame, f"one line per frame: {frame!r}"
        assert frame.startswith(("data: ", ": ping")), frame
    assert all(event.event == "message" for event in result.events)  # i.e. no `event:` field
    assert result.data[-1] == "[DONE]"
    assert result.data.count("[DONE]") == 1
    result.chunks()  # every other frame is JSON


def assert_chunk_sequence(chunks: list[dict[str, Any]], text: str) -> None:
    assert chunks[0]["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    choices = [c for chunk in chunks for c in chunk["choices"]]
    finishes = [c["finish_reason"] for c in choices if c["finish_reason"] is not None]
    assert finishes == ["stop"], "exactly one chunk carries a finish reason"
    assert "".join(c["delta"].get("content") or "" for c in choices) == text
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert len({chunk["created"] for chunk in chunks}) == 1
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)


async def test_stream_is_framed_exactly_like_openai(stack: Stack, bridge: Bridge) -> None:
    prompt = "sse framing"
    async with bridge.client(stack.tokens.mint("sse-1")) as client:
        result = await stream_chat(client, chat_body(prompt, stream=True))
    assert_openai_framing(result)
    assert ": ping" not in result.raw  # a fast first token needs no keep-alive
    assert result.response.headers["x-native1api-provider"] == "workers-ai"
    chunks = result.chunks()
    assert_chunk_sequence(chunks, reply_text(prompt))
    # No usage chunk unless asked for, and `usage` is null on every chunk.
    assert all(chunk["choices"] for chunk in chunks)
    assert all(chunk["usage"] is None for chunk in chunks)


@pytest.mark.parametrize("include_usage", [True, False])
async def test_usage_chunk_only_when_asked(
    stack: Stack, bridge: Bridge, include_usage: bool
) -> None:
    prompt = f"usage please {include_usage}"
    body = chat_body(prompt, stream=True, stream_options={"include_usage": include_usage})
    async with bridge.client(stack.tokens.mint("sse-2")) as client:
        result = await stream_chat(client, body)
    assert_openai_framing(result)
    chunks = result.chunks()
    usage_chunks = [chunk for chunk in chunks if not chunk["choices"]]
    if include_usage:
        assert usage_chunks == [chunks[-1]], "one usage chunk, last before [DONE]"
        usage = chunks[-1]["usage"]
        assert usage["completion_tokens"] == 6
        assert usage["prompt_tokens"] > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert_chunk_sequence(chunks[:-1], reply_text(prompt))
    else:
        assert usage_chunks == []
        assert_chunk_sequence(chunks, reply_text(prompt))


async def test_keepalive_pings_while_the_first_token_is_slow(
    stack: Stack, slow_bridge: Bridge
) -> None:
    prompt = "slow start [[fake:delay_first=1.3]]"
    async with slow_bridge.client(stack.tokens.mint("sse-3")) as client:
        started = time.monotonic()
        result = await stream_chat(client, chat_body(prompt, stream=True))
    assert time.monotonic() - started >= 1.2
    assert_openai_framing(result)
    # Committed at the end of the 0.3 s window with a ping at once, then one per 0.2 s of
    # silence until the first chunk (~1.3 s): about 6 pings before any data.
    before_data = result.raw.split("data: ", 1)[0]
    assert before_data.startswith(": ping\n\n")
    assert before_data.count(": ping\n\n") >= 4
    assert_chunk_sequence(result.chunks(), reply_text(prompt))


async def test_keepalive_pings_during_long_gaps_between_chunks(
    stack: Stack, slow_bridge: Bridge
) -> None:
    prompt = "slow chunks [[fake:chunks=2,chunk_delay=0.5]]"
    async with slow_bridge.client(stack.tokens.mint("sse-4")) as client:
        result = await stream_chat(client, chat_body(prompt, stream=True))
    assert_openai_framing(result)
    first_data = result.raw.index("data: ")
    assert result.raw.count(": ping\n\n", first_data) >= 2
    assert_chunk_sequence(result.chunks(), reply_text(prompt, chunks=2))


@pytest.mark.parametrize(
    ("marker", "status", "code", "retry_after"),
    [
        ("[[fake:status=500]]", 502, "upstream_error", None),
        ("[[fake:status=429,retry_after=7]]", 429, "rate_limit_exceeded", "7"),
    ],
)
async def test_error_within_the_hold_window_is_a_json_error(
    stack: Stack,
    bridge: Bridge,
    marker: str,
    status: int,
    code: str,
    retry_after: str | None,
) -> None:
    async with bridge.client(stack.tokens.mint("sse-5")) as client:
        result = await stream_chat(client, chat_body(f"fail early {marker}", stream=True))
    response = result.response
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.headers.get("retry-after") == retry_after
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["type"] == ("requests" if status == 429 else "server_error")


async def test_error_after_the_window_is_one_error_frame(stack: Stack, slow_bridge: Bridge) -> None:
    prompt = "fail late [[fake:delay_first=0.8,status=500]]"
    async with slow_bridge.client(stack.tokens.mint("sse-6")) as client:
        result = await stream_chat(client, chat_body(prompt, stream=True))
    assert result.response.status_code == 200
    assert result.raw.startswith(": ping\n\n")
    assert len(result.events) == 1, "one error frame, nothing else"
    error = json.loads(result.events[0].data)["error"]
    assert error["code"] == "upstream_error"
    assert error["type"] == "server_error"
    assert error["message"]
    assert result.raw.endswith("\n\n")


async def test_upstream_cut_mid_stream_is_an_error_frame_never_a_finish(
    stack: Stack, bridge: Bridge
) -> None:
    prompt = "cut me [[fake:cut_after=2]]"
    async with bridge.client(stack.tokens.mint("sse-7")) as client:
        result = await stream_chat(client, chat_body(prompt, stream=True))
    assert result.response.status_code == 200
    assert "[DONE]" not in result.data
    frames = [json.loads(data) for data in result.data]
    *chunks, last = frames
    assert set(last) == {"error"}
    assert last["error"]["code"] == "upstream_stream_interrupted"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["finish_reason"] is None for chunk in chunks for c in chunk["choices"])
    assert "".join(c["delta"].get("content", "") for chunk in chunks for c in chunk["choices"])


async def _in_flight(bridge: Bridge) -> float | None:
    return bridge.state.metrics.registry.get_sample_value("native1api_bridge_streams_in_flight")


async def test_client_disconnect_mid_stream_cancels_the_upstream(
    stack: Stack, bridge: Bridge
) -> None:
    control = stack.workers_ai.control
    before = len(control.disconnects)
    prompt = "long story [[fake:chunks=50,chunk_delay=0.1]]"
    async with (
        bridge.client(stack.tokens.mint("sse-8")) as client,
        client.stream("POST", "/v1/chat/completions", json=chat_body(prompt, stream=True)) as r,
    ):
        assert r.status_code == 200
        seen = 0
        async for line in r.aiter_lines():
            seen += line.startswith("data: ")
            if seen == 3:
                break
    closed = time.monotonic()
    event = await control.wait_for_disconnect(within=1.5, count=before + 1)
    assert event.phase == "streaming"
    assert event.at - closed < 1.0
    assert event.content_chunks_sent < 50
    for _ in range(100):
        if await _in_flight(bridge) == 0:
            break
        await asyncio.sleep(0.01)
    assert await _in_flight(bridge) == 0


async def test_client_disconnect_in_the_hold_window_cancels_the_upstream(
    stack: Stack, bridge: Bridge
) -> None:
    control = stack.workers_ai.control
    before = len(control.disconnects)
    prompt = "never mind [[fake:delay_first=5]]"
    async with bridge.client(stack.tokens.mint("sse-9")) as client:
        with pytest.raises(httpx.TimeoutException):
            await client.post(
                "/v1/chat/completions", json=chat_body(prompt, stream=True), timeout=0.5
            )
    event = await control.wait_for_disconnect(within=1.5, count=before + 1)
    assert event.phase == "before_headers"


async def test_client_disconnect_during_a_unary_completion_cancels_the_upstream(
    stack: Stack, bridge: Bridge, caplog: pytest.LogCaptureFixture
) -> None:
    control = stack.workers_ai.control
    before = len(control.disconnects)
    prompt = "take your time [[fake:delay_first=5]]"
    async with bridge.client(stack.tokens.mint("sse-10")) as client:
        with pytest.raises(httpx.TimeoutException):
            await client.post("/v1/chat/completions", json=chat_body(prompt), timeout=0.5)
    event = await control.wait_for_disconnect(within=1.5, count=before + 1)
    assert event.phase == "before_headers"
    for _ in range(100):  # the access line is written when the handler returns
        lines = [r.getMessage() for r in caplog.records if r.name == "rest_bridge.access"]
        if any(" 499 " in line for line in lines):
            break
        await asyncio.sleep(0.01)
    assert any(line.startswith("POST /v1/chat/completions 499 ") for line in lines)


@pytest.mark.parametrize("include_usage", [True, False])
async def test_a_bursty_upstream_reads_exactly_like_a_paced_one(
    stack: Stack, bridge: Bridge, include_usage: bool
) -> None:
    """The gateway batches chunks that are ready together (allow_batches); the SSE the client
    reads is the same frame for frame, the usage chunk included only when asked for."""
    options = {"include_usage": include_usage}
    async with bridge.client(stack.tokens.mint("sse-burst")) as client:
        burst = await stream_chat(
            client,
            chat_body(
                "burst [[fake:chunks=120,chunk_delay=0]]", stream=True, stream_options=options
            ),
        )
        paced = await stream_chat(
            client,
            chat_body(
                "burst [[fake:chunks=120,chunk_delay=0.001]]", stream=True, stream_options=options
            ),
        )
    assert_openai_framing(burst)

    def comparable(result: SSEResult) -> list[dict[str, Any]]:
        return [{**c, "id": "", "created": 0} for c in result.chunks()]

    assert comparable(burst) == comparable(paced)
    chunks = burst.chunks()
    assert (
        len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) == 120
    )
    usage_chunks = [c for c in chunks if not c["choices"]]
    assert usage_chunks == ([chunks[-1]] if include_usage else [])
