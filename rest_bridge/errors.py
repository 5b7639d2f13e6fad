"""The one table from gRPC statuses to HTTP errors, and the OpenAI error envelope.

Every failure the bridge reports, whether found by the bridge itself (framing, size, auth header)
or by a backend (a gRPC status with a `google.rpc.ErrorInfo`), becomes an `ApiError` and is
rendered as `{"error": {"message", "type", "param", "code"}}` (reference/wire-formats.md §1.5).

Messages: a status that carries our ErrorInfo was written by our own services for users and is
secret-free, so its message is shown as is. A status without one comes from the gRPC library
(connection refused, deadline, message too large); its text names internal addresses, so the
bridge shows a generic sentence instead.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import grpc
import orjson
from grpc_status import rpc_status
from starlette.responses import Response

from gateway_service.errors import (
    BYOK_KEY_REJECTED,
    INSUFFICIENT_QUOTA,
    UPSTREAM_FAILURE_REASONS,
)
from rpc_common.status import ERROR_DOMAIN, RpcError, error_info

_LOGGER = logging.getLogger(__name__)

Code = grpc.StatusCode

INVALID_REQUEST: Final = "invalid_request_error"
SERVER_ERROR: Final = "server_error"
UNAVAILABLE_ERROR: Final = "service_unavailable_error"
# A 429's `type` names the limit (SPEC §10); a provider's own 429 carries no `limit`.
RATE_LIMIT_REQUESTS: Final = "requests"
_LIMIT_TYPES: Final = frozenset({RATE_LIMIT_REQUESTS, "tokens", "concurrency"})

# gRPC code -> (HTTP status, OpenAI `type`), SPEC §2/§3 and wire-formats §1.5.
_STATUS_TABLE: Final[dict[Code, tuple[int, str]]] = {
    Code.INVALID_ARGUMENT: (400, INVALID_REQUEST),
    Code.FAILED_PRECONDITION: (400, INVALID_REQUEST),
    Code.OUT_OF_RANGE: (400, INVALID_REQUEST),
    Code.UNAUTHENTICATED: (401, INVALID_REQUEST),
    Code.PERMISSION_DENIED: (403, "permission_error"),
    Code.NOT_FOUND: (404, INVALID_REQUEST),
    Code.ALREADY_EXISTS: (409, INVALID_REQUEST),
    Code.ABORTED: (409, INVALID_REQUEST),
    Code.RESOURCE_EXHAUSTED: (429, RATE_LIMIT_REQUESTS),
    Code.CANCELLED: (499, INVALID_REQUEST),
    Code.UNIMPLEMENTED: (501, SERVER_ERROR),
    Code.UNAVAILABLE: (503, UNAVAILABLE_ERROR),
    Code.DEADLINE_EXCEEDED: (504, SERVER_ERROR),
    Code.INTERNAL: (500, SERVER_ERROR),
    Code.UNKNOWN: (500, SERVER_ERROR),
    Code.DATA_LOSS: (500, SERVER_ERROR),
}

# What a status without our ErrorInfo says (gRPC's own text would name internal addresses).
_GENERIC_MESSAGES: Final[dict[int, str]] = {
    400: "The request was refused by the backend.",
    401: "Invalid authentication credentials.",
    403: "You are not allowed to do this.",
    404: "Not found.",
    409: "The request conflicts with another one; retry.",
    429: "Too many requests; retry later.",
    499: "The request was cancelled.",
    501: "This operation is not implemented.",
    503: "The {backend} service is unavailable; retry shortly.",
    504: "The {backend} service did not answer in time.",
    500: "The server had an error while processing your request.",
}

# Reasons from the vault's key checks (vault_service/api_keys.py, provider_check.py): they carry
# `param` but no OpenAI `code`, so the bridge names one.
_REASON_CODES: Final[dict[str, str]] = {
    "API_KEY_EMPTY": "api_key_empty",
    "API_KEY_TOO_LONG": "api_key_too_long",
    "API_KEY_MALFORMED": "api_key_malformed",
    "PROVIDER_REQUIRED": "provider_required",
    "PROVIDER_UNKNOWN": "provider_unknown",
    "INVALID_API_KEY": "invalid_api_key",
    "BYOK_KEY_REJECTED": "invalid_api_key",
    "BYOK_KEY_UNREADABLE": "invalid_api_key",
}

# The vault could not reach the provider to validate a key: the upstream failed, not us.
_BRIDGE_UPSTREAM_REASONS: Final = UPSTREAM_FAILURE_REASONS | {"PROVIDER_UNREACHABLE"}

# RFC 7235 requires a challenge on every 401; RFC 6750 adds `error="invalid_token"` only when a
# token was presented and refused.
CHALLENGE: Final = "Bearer"
CHALLENGE_INVALID_TOKEN: Final = 'Bearer error="invalid_token"'  # noqa: S105 (a header value)
_MAX_RETRY_AFTER: Final = 3600


@dataclass(eq=False)
class ApiError(Exception):
    """An HTTP error in OpenAI's shape. `message` is shown to the caller: never a secret."""

    status: int
    message: str
    type: str = INVALID_REQUEST
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Exception.__init__(self, self.message)

    def envelope(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body(self) -> bytes:
        return orjson.dumps(self.envelope())

    def to_response(self) -> Response:
        # Errors are never cacheable; vault errors in particular must carry no-store (SPEC §2).
        headers = {"cache-control": "no-store", **self.headers}
        return Response(self.body(), self.status, headers, media_type="application/json")


def from_status(
    code: Code,
    reason: str | None,
    message: str | None,
    metadata: Mapping[str, str],
    *,
    backend: str = "gateway",
) -> ApiError:
    """The HTTP error for a gRPC status; `reason`/`message` are None without an ErrorInfo."""
    status, kind = _STATUS_TABLE.get(code, (500, SERVER_ERROR))
    code_name = metadata.get("code") or _REASON_CODES.get(reason or "")
    headers: dict[str, str] = {}
    if reason == BYOK_KEY_REJECTED:
        # The caller's own token was fine; the key they stored was refused by its provider.
        status, kind = 401, INVALID_REQUEST
    elif reason in _BRIDGE_UPSTREAM_REASONS:
        status, kind = 502, SERVER_ERROR
    elif reason == INSUFFICIENT_QUOTA:
        kind = "insufficient_quota"
    if status == 401:
        code_name = code_name or "invalid_api_key"
        headers["www-authenticate"] = (
            CHALLENGE_INVALID_TOKEN if code == Code.UNAUTHENTICATED else CHALLENGE
        )
    elif status == 429:
        code_name = code_name or "rate_limit_exceeded"
        limit = metadata.get("limit")
        if limit in _LIMIT_TYPES:
            kind = limit
    elif status == 503 and code_name is None:
        code_name = "service_unavailable"
    if status in (429, 503):
        retry = _retry_after(metadata.get("retry_after"))
        if retry is not None:
            # Whole seconds (RFC 9110) and, for clients that can wait less (the OpenAI SDKs
            # read it first), the exact milliseconds.
            headers["retry-after"] = str(max(1, math.ceil(retry)))
            headers["retry-after-ms"] = str(math.ceil(retry * 1000))
    if reason is None or not message:
        message = _GENERIC_MESSAGES.get(status, _GENERIC_MESSAGES[500]).format(backend=backend)
    return ApiError(status, message, kind, metadata.get("param") or None, code_name, headers)


def from_rpc_error(error: RpcError) -> ApiError:
    """The HTTP error for a domain error raised in process (the request codec's type checks)."""
    return from_status(error.code, error.reason, error.message, error.metadata)


def from_grpc(error: grpc.aio.AioRpcError, *, backend: str) -> ApiError:
    """The HTTP error for a failed call, read from its code and `grpc-status-details-bin`."""
    code = error.code()
    info = None
    try:
        info = error_info(rpc_status.from_call(error))
    except ValueError:
        # Code/message in the details disagree with the call's: trust the call, ignore details.
        _LOGGER.warning("inconsistent status details from the %s service", backend)
    if info is not None and info.domain != ERROR_DOMAIN:
        info = None  # not written by our services: its text is not vetted for users
    if info is None:
        if code not in (Code.UNAVAILABLE, Code.CANCELLED, Code.DEADLINE_EXCEEDED):
            _LOGGER.warning("%s service failed without ErrorInfo: %s", backend, code.name)
        return from_status(code, None, None, {}, backend=backend)
    return from_status(code, info.reason, error.details(), info.metadata, backend=backend)


def _retry_after(raw: str | None) -> float | None:
    """Seconds from ErrorInfo `retry_after`, capped; None when absent or not a number."""
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(float(_MAX_RETRY_AFTER), seconds)


# Errors the bridge finds itself -------------------------------------------------------------


def missing_token() -> ApiError:
    return ApiError(
        401,
        "Missing bearer token: send `Authorization: Bearer <Firebase ID token>`.",
        code="invalid_api_key",
        headers={"www-authenticate": CHALLENGE},
    )


def malformed_token() -> ApiError:
    return ApiError(
        401,
        "Malformed Authorization header: expected `Bearer <Firebase ID token>`.",
        code="invalid_api_key",
        headers={"www-authenticate": CHALLENGE_INVALID_TOKEN},
    )


def ambiguous_token() -> ApiError:
    return ApiError(
        401,
        "More than one Authorization header: send exactly one `Bearer <Firebase ID token>`.",
        code="invalid_api_key",
        headers={"www-authenticate": CHALLENGE_INVALID_TOKEN},
    )


def invalid_json() -> ApiError:
    return ApiError(
        400,
        "We could not parse the JSON body of your request. The API expects a JSON payload, "
        "but what was sent was not valid JSON.",
        code="invalid_json",
    )


def body_too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"Request body too large: the limit is {limit} bytes.",
        code="request_too_large",
    )


def unsupported_media_type(content_type: str) -> ApiError:
    shown = content_type.split(";", 1)[0].strip()[:100]
    return ApiError(
        415,
        f"Unsupported Content-Type {shown!r}: send the body as application/json.",
        code="unsupported_media_type",
    )


def internal_error() -> ApiError:
    return ApiError(500, _GENERIC_MESSAGES[500], SERVER_ERROR)
