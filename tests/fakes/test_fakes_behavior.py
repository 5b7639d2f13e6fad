"""Unit tests: marker parsing, behaviour layering, the control queue and deterministic content."""

from __future__ import annotations

from typing import Any

import pytest

from fakes.behavior import Behavior, MarkerError, parse_markers, strip_markers
from fakes.content import (
    count_prompt_tokens,
    digest,
    plan_completion,
    reply_chunks,
    reply_text,
    schema_instance,
    split_text,
)
from fakes.control import FakeControl


def test_marker_parsing_converts_types_and_strips_markers() -> None:
    text, behavior = parse_markers(
        "hello [[fake:status=503, retry_after=1.5]] world [[fake:cut_after=3;text]]"
    )
    assert text == "hello  world"
    assert behavior == Behavior(status=503, retry_after=1.5, cut_after=3, text=True)


def test_marker_free_text_is_untouched() -> None:
    assert parse_markers("plain [text]") == ("plain [text]", None)
    assert strip_markers("x [[fake:chunks=2]]") == "x"


@pytest.mark.parametrize(
    "marker",
    [
        "[[fake:nope=1]]",
        "[[fake:status=200]]",
        "[[fake:chunks=-1]]",
        "[[fake:shape=weird]]",
        "[[fake:text=maybe]]",
    ],
)
def test_bad_markers_raise(marker: str) -> None:
    with pytest.raises(MarkerError):
        parse_markers(marker)


def test_code_marker_keeps_ints_and_strings() -> None:
    assert parse_markers("[[fake:code=3036]]")[1] == Behavior(code=3036)
    assert parse_markers("[[fake:code=rate_limit_exceeded]]")[1] == Behavior(
        code="rate_limit_exceeded"
    )


def test_layers_merge_defaults_then_queue_then_marker() -> None:
    control = FakeControl(Behavior(chunks=6, chunk_delay=0.0))
    control.push(status=503, chunk_delay=0.5)
    first = control.resolve(Behavior(status=429), chat=True)
    assert (first.chunks, first.chunk_delay, first.status) == (6, 0.5, 429)
    assert control.resolve(None, chat=True) == Behavior(chunks=6, chunk_delay=0.0)


def test_queue_counts_times_and_scopes() -> None:
    control = FakeControl()
    control.fail_next(500, times=2)
    control.fail_next(503, scope="any")
    assert control.resolve(None, chat=False).status == 503  # chat-only entry skipped
    assert control.resolve(None, chat=True).status == 500
    assert control.resolve(None, chat=True).status == 500
    assert control.resolve(None, chat=True).status is None


def test_reply_is_deterministic_and_tagged_per_prompt() -> None:
    chunks = reply_chunks("hi", 3)
    tag = digest("hi")
    assert chunks == [f"{tag}-0", f" {tag}-1", f" {tag}-2"]
    assert reply_text("hi [[fake:chunks=3]]", 3) == "".join(
        chunks
    )  # markers do not change the digest
    assert reply_text("hi", 3, max_tokens=2) == "".join(chunks[:2])
    assert digest("a") != digest("b")


def test_prompt_tokens_count_words_and_messages() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "be terse"},
            {"role": "user", "content": "say hi now"},
        ]
    }
    assert count_prompt_tokens(body) == (2 + 4) + (3 + 4) + 3
    assert count_prompt_tokens({"prompt": "one two"}) == 2 + 4 + 3


def test_split_text_preserves_content() -> None:
    assert "".join(split_text("abcdefg", 3)) == "abcdefg"
    assert len(split_text("ab", 5)) == 2
    assert split_text("", 3) == []


def test_schema_instance_follows_types() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "number"},
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["n", "ok", "tags"],
    }
    value = schema_instance(schema, "abcd1234")
    assert value == {"n": 0xABCD + 0.5, "ok": True, "tags": ["abcd1234"]}


def test_plan_completion_tool_call_then_text_after_tool_result() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "sqrt",
                "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}},
            },
        }
    ]
    question = {"role": "user", "content": "q"}
    body: dict[str, Any] = {"messages": [question], "tools": tools}
    plan = plan_completion(body, "q", chunks=4, max_tokens=None)
    assert plan.finish == "tool_calls" and plan.tool_call is not None
    assert plan.tool_call.name == "sqrt" and isinstance(plan.tool_call.arguments["x"], int)
    body["messages"] = [question, {"role": "tool", "tool_call_id": "c", "content": "3"}]
    assert plan_completion(body, "q", chunks=4, max_tokens=None).tool_call is None
    body["tool_choice"] = "none"
    assert plan_completion(body, "q", chunks=4, max_tokens=None).finish == "stop"


def test_plan_completion_truncates_at_max_tokens() -> None:
    plan = plan_completion({"messages": []}, "q", chunks=10, max_tokens=4)
    assert (plan.finish, plan.completion_tokens, len(plan.pieces)) == ("length", 4, 4)


def test_marker_times_counts_per_message_text() -> None:
    control = FakeControl()
    text = "retry me [[fake:status=503,times=2]]"
    _, marker = parse_markers(text)
    statuses = [control.resolve(marker, chat=True, marker_text=text).status for _ in range(3)]
    assert statuses == [503, 503, None]
    other = "retry me too [[fake:status=503,times=2]]"
    assert control.resolve(parse_markers(other)[1], chat=True, marker_text=other).status == 503
