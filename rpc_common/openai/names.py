"""OpenAI wire names of the proto enums (`Role`, `FinishReason`), both ways.

The `*_NAMES` maps are what we emit; the `*_VALUES` maps are what we accept from clients.
`FINISH_REASON_ALIASES` adds the non-OpenAI spellings providers use for the same meanings.
"""

from __future__ import annotations

from typing import Final, TypeAlias

from native1api.gateway.v1 import chat_pb2

RoleValue: TypeAlias = chat_pb2.Role.ValueType
FinishReasonValue: TypeAlias = chat_pb2.FinishReason.ValueType

ROLE_NAMES: Final[dict[RoleValue, str]] = {
    chat_pb2.ROLE_SYSTEM: "system",
    chat_pb2.ROLE_DEVELOPER: "developer",
    chat_pb2.ROLE_USER: "user",
    chat_pb2.ROLE_ASSISTANT: "assistant",
    chat_pb2.ROLE_TOOL: "tool",
    chat_pb2.ROLE_FUNCTION: "function",
}
ROLE_VALUES: Final[dict[str, RoleValue]] = {name: value for value, name in ROLE_NAMES.items()}

FINISH_REASON_NAMES: Final[dict[FinishReasonValue, str]] = {
    chat_pb2.FINISH_REASON_STOP: "stop",
    chat_pb2.FINISH_REASON_LENGTH: "length",
    chat_pb2.FINISH_REASON_TOOL_CALLS: "tool_calls",
    chat_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
    chat_pb2.FINISH_REASON_FUNCTION_CALL: "function_call",
}
FINISH_REASON_VALUES: Final[dict[str, FinishReasonValue]] = {
    name: value for value, name in FINISH_REASON_NAMES.items()
}

# Provider spellings of the OpenAI reasons: Together's `eos`, Workers AI's `model_length`, and the
# Anthropic/Gemini-style names some OpenAI-compatible proxies pass through unchanged.
FINISH_REASON_ALIASES: Final[dict[str, FinishReasonValue]] = {
    "eos": chat_pb2.FINISH_REASON_STOP,
    "eos_token": chat_pb2.FINISH_REASON_STOP,
    "end_turn": chat_pb2.FINISH_REASON_STOP,
    "stop_sequence": chat_pb2.FINISH_REASON_STOP,
    "model_length": chat_pb2.FINISH_REASON_LENGTH,
    "max_tokens": chat_pb2.FINISH_REASON_LENGTH,
    "max_length": chat_pb2.FINISH_REASON_LENGTH,
    "tool_use": chat_pb2.FINISH_REASON_TOOL_CALLS,
    "tool_call": chat_pb2.FINISH_REASON_TOOL_CALLS,
    "safety": chat_pb2.FINISH_REASON_CONTENT_FILTER,
    "recitation": chat_pb2.FINISH_REASON_CONTENT_FILTER,
    "content_filtered": chat_pb2.FINISH_REASON_CONTENT_FILTER,
}
