"""Token estimates and OpenAI's duration format."""

from __future__ import annotations

import pytest

from gateway_service.limits.durations import openai_duration
from gateway_service.limits.estimate import (
    MEDIA_PART_TOKENS,
    chunk_characters,
    prompt_tokens,
    text_tokens,
)
from native1api.gateway.v1 import chat_pb2


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0ms"),
        (20, "20ms"),
        (999, "999ms"),
        (1000, "1s"),
        (1500, "1.5s"),
        (8640, "8.64s"),
        (59_999, "59.999s"),
        (60_000, "1m0s"),
        (360_000, "6m0s"),
        (3_723_000, "1h2m3s"),
        (86_400_000, "24h0m0s"),
        (-5, "0ms"),
    ],
)
def test_openai_duration(ms: int, text: str) -> None:
    assert openai_duration(ms) == text


def request(text: str) -> chat_pb2.ChatCompletionRequest:
    req = chat_pb2.ChatCompletionRequest(model="@cf/meta/llama-3.2-3b-instruct")
    req.messages.add(role=chat_pb2.ROLE_USER, text=text)
    return req


def test_prompt_estimate_grows_with_the_prompt_and_errs_high() -> None:
    short, long = prompt_tokens(request("hi")), prompt_tokens(request("word " * 1000))
    assert short >= 1
    # 5,000 characters of English are about 1,250 tokens: the estimate is at least that.
    assert 1250 <= long <= 1400


def test_media_parts_count_flat_not_by_their_bytes() -> None:
    req = request("describe")
    message = req.messages.add(role=chat_pb2.ROLE_USER)
    part = message.parts.parts.add()
    part.image_url.url = "data:image/png;base64," + "A" * 2_000_000
    estimate = prompt_tokens(req)
    assert MEDIA_PART_TOKENS <= estimate < MEDIA_PART_TOKENS + 100


def test_streamed_characters() -> None:
    chunk = chat_pb2.ChatCompletionChunk()
    choice = chunk.choices.add(index=0)
    choice.delta.content = "abcd"
    choice.delta.reasoning = "xy"
    choice.delta.tool_calls.add(index=0, arguments='{"a":1}')
    assert chunk_characters(chunk) == 4 + 2 + 7
    assert text_tokens(13) == 4
    assert text_tokens(0) == 0
