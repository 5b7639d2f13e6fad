"""The enum name maps cover every enum value, so adding a proto value without a name fails."""

from __future__ import annotations

from native1api.gateway.v1 import chat_pb2
from rpc_common.openai import (
    FINISH_REASON_ALIASES,
    FINISH_REASON_NAMES,
    FINISH_REASON_VALUES,
    ROLE_NAMES,
    ROLE_VALUES,
)


def test_every_role_has_its_openai_name() -> None:
    values = {
        v.number for v in chat_pb2.Role.DESCRIPTOR.values if v.number != chat_pb2.ROLE_UNSPECIFIED
    }
    assert set(ROLE_NAMES) == values
    assert ROLE_NAMES == {
        chat_pb2.ROLE_SYSTEM: "system",
        chat_pb2.ROLE_DEVELOPER: "developer",
        chat_pb2.ROLE_USER: "user",
        chat_pb2.ROLE_ASSISTANT: "assistant",
        chat_pb2.ROLE_TOOL: "tool",
        chat_pb2.ROLE_FUNCTION: "function",
    }
    assert {name: value for value, name in ROLE_NAMES.items()} == ROLE_VALUES


def test_every_finish_reason_has_its_openai_name() -> None:
    values = {
        v.number
        for v in chat_pb2.FinishReason.DESCRIPTOR.values
        if v.number != chat_pb2.FINISH_REASON_UNSPECIFIED
    }
    assert set(FINISH_REASON_NAMES) == values
    assert sorted(FINISH_REASON_NAMES.values()) == [
        "content_filter",
        "function_call",
        "length",
        "stop",
        "tool_calls",
    ]
    assert {name: value for value, name in FINISH_REASON_NAMES.items()} == FINISH_REASON_VALUES


def test_aliases_never_shadow_openai_names() -> None:
    assert not set(FINISH_REASON_ALIASES) & set(FINISH_REASON_VALUES)
    assert set(FINISH_REASON_ALIASES.values()) <= set(FINISH_REASON_NAMES)
    assert FINISH_REASON_ALIASES["eos"] == chat_pb2.FINISH_REASON_STOP
