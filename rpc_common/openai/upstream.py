"""Tolerant readers for OpenAI-shaped provider output (shared by `response` and `chunk`).

Providers add fields (OpenRouter `provider`, Together `token_id`, ...), spell finish reasons
their own way and sometimes send `null` where OpenAI sends a value. These readers ignore what
they do not know, take `null` as "absent", and raise `UpstreamFormatError` only when a field we
need has a shape we cannot read.
"""

from __future__ import annotations

from typing import Any

import orjson

from native1api.gateway.v1 import chat_pb2
from rpc_common.openai.errors import UpstreamFormatError, UpstreamReportedError
from rpc_common.openai.names import (
    FINISH_REASON_ALIASES,
    FINISH_REASON_VALUES,
    FinishReasonValue,
)


def object_of(value: Any, what: str) -> dict[str, Any]:
    """`value` as a JSON object, `{}` for null/absent."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UpstreamFormatError(f"{what} is not a JSON object")
    return value


def list_of(value: Any, what: str) -> list[Any]:
    """`value` as a JSON array, `[]` for null/absent."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise UpstreamFormatError(f"{what} is not a JSON array")
    return value


def raise_reported_error(body: dict[str, Any]) -> None:
    """Raise `UpstreamReportedError` when a 200 body or chunk carries an `error`.

    The openai SDK raises on any truthy `error` key (wire-formats §1.6), and OpenRouter reports
    mid-stream failures exactly so; such a chunk must become an error, not a chunk.
    """
    error = body.get("error")
    if not error:
        return
    if isinstance(error, dict):
        message = error.get("message")
        raise UpstreamReportedError(
            message if isinstance(message, str) and message else "The provider reported an error.",
            error,
        )
    raise UpstreamReportedError(str(error), {"message": str(error)})


def text_of(value: Any, what: str) -> str | None:
    """A text field: a string, null, or an array of text parts (joined), else an error."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):  # e.g. Mistral's content parts
        pieces = []
        for part in value:
            if isinstance(part, str):
                pieces.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                pieces.append(part["text"])
            else:
                raise UpstreamFormatError(f"{what} has a part without text")
        return "".join(pieces)
    raise UpstreamFormatError(f"{what} is not text")


def string_of(value: Any) -> str | None:
    """An identifier-like field: strings as they are, numbers as text, anything else absent."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def int_of(value: Any, what: str, default: int = 0) -> int:
    """A count or timestamp: ints, integral (or not) floats truncated, null -> `default`."""
    if value is None:
        return default
    if isinstance(value, bool):
        raise UpstreamFormatError(f"{what} is a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value and abs(value) < 2**63:  # not NaN
        return int(value)
    raise UpstreamFormatError(f"{what} is not a number")


def arguments_of(value: Any) -> str | None:
    """Tool-call arguments: the JSON string as produced; an object some providers send instead
    is re-encoded compactly so clients still get a string."""
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def reasoning_of(body: dict[str, Any]) -> str | None:
    """Reasoning text: OpenRouter/Together/vLLM `reasoning`, else DeepSeek-style
    `reasoning_content`. Non-text values (e.g. OpenRouter's `reasoning_details`) are ignored."""
    for key in ("reasoning", "reasoning_content"):
        value = body.get(key)
        if isinstance(value, str):
            return value
    return None


def finish_reason_of(value: Any) -> FinishReasonValue:
    """Map a provider finish reason onto the enum.

    - null, absent and Together's `""` mean "not finished" (UNSPECIFIED);
    - OpenAI's five names map to themselves, known aliases (`eos`, `model_length`, ...) to their
      meaning (names.FINISH_REASON_ALIASES);
    - `error` (OpenRouter mid-stream) raises `UpstreamReportedError`: reporting a stop would
      pretend a cut answer was complete (SPEC §2);
    - any other string maps to STOP: the provider did end the choice, clients only understand
      OpenAI's five values, and `stop` is the one that claims nothing more than "it ended".
    """
    if value is None or value == "":
        return chat_pb2.FINISH_REASON_UNSPECIFIED
    if not isinstance(value, str):
        raise UpstreamFormatError("finish_reason is not a string")
    name = value.lower()
    known = FINISH_REASON_VALUES.get(name)
    if known is None:
        known = FINISH_REASON_ALIASES.get(name)
    if known is not None:
        return known
    if name == "error":
        raise UpstreamReportedError("The provider ended the response with an error.", {})
    return chat_pb2.FINISH_REASON_STOP
