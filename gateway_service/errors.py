"""Every way a completion can fail, as gRPC statuses with stable ErrorInfo reasons.

One table (SPEC §2, reference/wire-formats.md §5.4). ErrorInfo metadata carries what the REST
bridge needs to build the OpenAI envelope: `code` (OpenAI error code), `param`, `retry_after`
(seconds), `provider`, `upstream_status`. Messages never include upstream bodies verbatim beyond
the provider's own short message, and never a credential.
"""

from __future__ import annotations

from typing import Final

import grpc

from rpc_common.status import RpcError

# Reasons (stable API: clients may switch on them).
MODEL_NOT_FOUND: Final = "MODEL_NOT_FOUND"
UNSUPPORTED_PARAMETER: Final = "UNSUPPORTED_PARAMETER"
BYOK_KEY_REJECTED: Final = "BYOK_KEY_REJECTED"
INSUFFICIENT_QUOTA: Final = "INSUFFICIENT_QUOTA"
RATE_LIMITED: Final = "RATE_LIMITED"
CONTENT_BLOCKED: Final = "CONTENT_BLOCKED"
UPSTREAM_BAD_REQUEST: Final = "UPSTREAM_BAD_REQUEST"
UPSTREAM_TIMEOUT: Final = "UPSTREAM_TIMEOUT"
UPSTREAM_AUTH_FAILED: Final = "UPSTREAM_AUTH_FAILED"
UPSTREAM_ERROR: Final = "UPSTREAM_ERROR"
UPSTREAM_UNREACHABLE: Final = "UPSTREAM_UNREACHABLE"
UPSTREAM_PROTOCOL_ERROR: Final = "UPSTREAM_PROTOCOL_ERROR"
UPSTREAM_STREAM_INTERRUPTED: Final = "UPSTREAM_STREAM_INTERRUPTED"
VAULT_UNAVAILABLE: Final = "VAULT_UNAVAILABLE"
# Admission control (limits/): RATE_LIMITED with ErrorInfo `limit` is our own refusal; without
# `limit` it is a provider's 429.
RATE_LIMITER_UNAVAILABLE: Final = "RATE_LIMITER_UNAVAILABLE"
# This gateway's connection pool for a provider stayed full: our capacity, not the provider.
UPSTREAM_OVERLOADED: Final = "UPSTREAM_OVERLOADED"

# Reasons the REST bridge must show as 502 (the upstream failed, not our backend).
UPSTREAM_FAILURE_REASONS: Final = frozenset(
    {
        UPSTREAM_AUTH_FAILED,
        UPSTREAM_ERROR,
        UPSTREAM_UNREACHABLE,
        UPSTREAM_PROTOCOL_ERROR,
        UPSTREAM_STREAM_INTERRUPTED,
    }
)


class UpstreamHTTPError(Exception):
    """A provider answered with a non-2xx status; providers parse their envelope into this."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        provider_code: int | str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.provider_code = provider_code
        self.retry_after = retry_after


def _meta(provider: str, **extra: object) -> dict[str, str]:
    meta = {"provider": provider}
    meta.update({k: str(v) for k, v in extra.items() if v is not None})
    return meta


def model_not_found(model: str, detail: str | None = None) -> RpcError:
    message = detail or f"The model `{model}` does not exist or you do not have access to it."
    return RpcError(
        grpc.StatusCode.NOT_FOUND,
        MODEL_NOT_FOUND,
        message,
        {"code": "model_not_found", "param": "model"},
    )


def unsupported_parameter(provider: str, param: str, detail: str = "") -> RpcError:
    suffix = f" {detail}" if detail else ""
    return RpcError(
        grpc.StatusCode.INVALID_ARGUMENT,
        UNSUPPORTED_PARAMETER,
        f"Unsupported parameter: '{param}' is not supported by {provider}.{suffix}",
        _meta(provider, param=param, code="unsupported_parameter"),
    )


def vault_unavailable() -> RpcError:
    return RpcError(
        grpc.StatusCode.UNAVAILABLE,
        VAULT_UNAVAILABLE,
        "The key vault is unavailable, so the request cannot be routed; retry shortly.",
        {"code": "service_unavailable", "retry_after": "1"},
    )


def from_upstream_status(provider: str, error: UpstreamHTTPError, *, byok: bool) -> RpcError:
    """Map a provider's HTTP failure to our status (the one table, wire-formats §5.4)."""
    status, upstream = error.status, error.message.strip()[:300]
    meta = _meta(provider, upstream_status=status)
    if status in (401, 403) and _is_auth(error):
        if byok:
            return RpcError(
                grpc.StatusCode.FAILED_PRECONDITION,
                BYOK_KEY_REJECTED,
                f"Your stored {provider} API key was rejected by {provider}. Save a valid key "
                "with POST /v1/vault, or delete it to use the default models.",
                {**meta, "code": "invalid_api_key"},
            )
        # The operator's credentials failed: never reveal them, never blame the caller.
        return RpcError(
            grpc.StatusCode.INTERNAL,
            UPSTREAM_AUTH_FAILED,
            "The gateway's provider credentials were rejected; the operator has to fix them.",
            {**meta, "code": "upstream_auth_failed"},
        )
    if status == 402:
        return RpcError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            INSUFFICIENT_QUOTA,
            f"{provider} reports insufficient credits for this key: {upstream}",
            {**meta, "code": "insufficient_quota"},
        )
    if status == 404 or _is_model_missing(error):
        return RpcError(
            grpc.StatusCode.NOT_FOUND,
            MODEL_NOT_FOUND,
            f"{provider} does not know the requested model: {upstream}",
            {**meta, "code": "model_not_found", "param": "model"},
        )
    if status == 403:
        return RpcError(
            grpc.StatusCode.PERMISSION_DENIED,
            CONTENT_BLOCKED,
            f"{provider} refused the request: {upstream}",
            {**meta, "code": "model_not_allowed"},
        )
    if status == 429:
        retry = max(1, round(error.retry_after)) if error.retry_after else None
        return RpcError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            RATE_LIMITED,
            f"{provider} is rate limiting requests; retry later. ({upstream})",
            _meta(provider, upstream_status=status, code="rate_limit_exceeded", retry_after=retry),
        )
    if status in (408, 504, 524):
        return RpcError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            UPSTREAM_TIMEOUT,
            f"{provider} timed out.",
            {**meta, "code": "upstream_timeout"},
        )
    if 400 <= status < 500:
        return RpcError(
            grpc.StatusCode.INVALID_ARGUMENT,
            UPSTREAM_BAD_REQUEST,
            f"{provider} rejected the request: {upstream}",
            {**meta, "code": "upstream_bad_request"},
        )
    return RpcError(
        grpc.StatusCode.UNAVAILABLE,
        UPSTREAM_ERROR,
        f"{provider} failed (HTTP {status}); retry later.",
        {**meta, "code": "upstream_error"},
    )


def _is_auth(error: UpstreamHTTPError) -> bool:
    # A 403 is a credential failure only with Cloudflare's auth codes: Cloudflare also uses 403
    # for model agreements and blocked accounts (5016, 5018, 3023), OpenRouter for moderation.
    if error.status == 401:
        return True
    return error.provider_code in (10000, 10001, 9109)


def _is_model_missing(error: UpstreamHTTPError) -> bool:
    return error.provider_code in (7000, 5007, 3042, "model_not_available") or (
        error.status == 400 and "not a valid model" in error.message.lower()
    )


def unreachable(provider: str) -> RpcError:
    return RpcError(
        grpc.StatusCode.UNAVAILABLE,
        UPSTREAM_UNREACHABLE,
        f"Could not connect to {provider}; retry later.",
        {"provider": provider, "code": "upstream_unreachable"},
    )


def upstream_overloaded(provider: str) -> RpcError:
    return RpcError(
        grpc.StatusCode.UNAVAILABLE,
        UPSTREAM_OVERLOADED,
        f"The gateway has too many requests in flight to {provider}; retry shortly.",
        {"provider": provider, "code": "upstream_overloaded", "retry_after": "1"},
        retry_delay=1.0,
    )


def timed_out(provider: str) -> RpcError:
    return RpcError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        UPSTREAM_TIMEOUT,
        f"{provider} did not answer in time.",
        {"provider": provider, "code": "upstream_timeout"},
    )


def protocol_error(provider: str, what: str) -> RpcError:
    return RpcError(
        grpc.StatusCode.INTERNAL,
        UPSTREAM_PROTOCOL_ERROR,
        f"{provider} sent a reply the gateway cannot read ({what}).",
        {"provider": provider, "code": "upstream_error"},
    )


def stream_interrupted(provider: str, detail: str = "") -> RpcError:
    suffix = f": {detail}" if detail else ""
    return RpcError(
        grpc.StatusCode.UNAVAILABLE,
        UPSTREAM_STREAM_INTERRUPTED,
        f"{provider} ended the stream before the answer was complete{suffix}",
        {"provider": provider, "code": "upstream_stream_interrupted"},
    )
