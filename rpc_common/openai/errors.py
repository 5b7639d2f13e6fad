"""The errors this package raises.

Client mistakes are `RpcError(INVALID_ARGUMENT, "INVALID_REQUEST", ...)` carrying OpenAI's `param`
and `code` in the ErrorInfo metadata, so the REST bridge can build the OpenAI error envelope from
them. Provider output that cannot be read raises `UpstreamFormatError`; an error a provider reports
inside a 200 body or stream raises `UpstreamReportedError`. Those two are plain exceptions: the
gateway decides which status they become (SPEC §2: 502, or an error frame mid-stream).
"""

from __future__ import annotations

from typing import Any, Final

import grpc

from rpc_common.status import RpcError

INVALID_REQUEST: Final = "INVALID_REQUEST"

# Client values are echoed in messages (as OpenAI does); long ones are cut so that an error never
# carries a multi-megabyte data URL back.
_MAX_ECHO = 80


def invalid(message: str, param: str | None, code: str | None = None) -> RpcError:
    """An INVALID_ARGUMENT error naming the offending field (`param`) and an OpenAI `code`."""
    metadata: dict[str, str] = {}
    if param is not None:
        metadata["param"] = param
    if code is not None:
        metadata["code"] = code
    return RpcError(grpc.StatusCode.INVALID_ARGUMENT, INVALID_REQUEST, message, metadata)


def describe(value: Any) -> str:
    """OpenAI's wording for a JSON value's type: "a string", "an object", ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def echo(value: object) -> str:
    """A client value quoted for an error message, shortened when long."""
    text = str(value)
    return text if len(text) <= _MAX_ECHO else text[:_MAX_ECHO] + "..."


def number_text(value: float) -> str:
    """A number as OpenAI prints it in messages: `3`, not `3.0`."""
    number = float(value)  # callers may pass int bounds; `int` has no is_integer() before 3.12
    if number.is_integer():
        return str(int(number))
    return repr(number)


def invalid_type(param: str, expected: str, value: Any) -> RpcError:
    """`Invalid type for 'x': expected a number, but got a string instead.`"""
    return invalid(
        f"Invalid type for '{param}': expected {expected}, but got {describe(value)} instead.",
        param,
        "invalid_type",
    )


def invalid_value(param: str, value: str, supported: tuple[str, ...]) -> RpcError:
    """`Invalid value: 'x'. Supported values are: 'a', 'b', and 'c'.`"""
    quoted = [f"'{name}'" for name in supported]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f", and {quoted[-1]}"
    noun = "value is" if len(quoted) == 1 else "values are"
    return invalid(
        f"Invalid value for '{param}': '{echo(value)}'. Supported {noun}: {listed}.",
        param,
        "invalid_value",
    )


def missing(param: str) -> RpcError:
    """`Missing required parameter: 'x'.`"""
    return invalid(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def unknown_parameter(param: str) -> RpcError:
    """A field inside a typed object that the protos cannot carry, so it cannot be forwarded."""
    return invalid(
        f"Unknown parameter: '{param}'. This field cannot be forwarded by the gateway.",
        param,
        "unknown_parameter",
    )


class UpstreamFormatError(ValueError):
    """A provider's completion or chunk JSON is not OpenAI-shaped enough to read."""


class UpstreamReportedError(Exception):
    """A provider reported an error inside a 200 body or stream (`error` key, `finish_reason:
    "error"`). `body` is the provider's error object (or `{}`); its text may be shown to the
    caller, it never holds our credentials."""

    def __init__(self, message: str, body: dict[str, Any]) -> None:
        super().__init__(message)
        self.message = message
        self.body = body
