"""Authentication failures: `AuthError` (UNAUTHENTICATED) and the key-fetch failure (UNAVAILABLE)."""

# S105 ("hardcoded password") misfires on names containing TOKEN: these are public constants.
# ruff: noqa: S105

from __future__ import annotations

from typing import Final

import grpc

from rpc_common.status import RpcError

# Stable `ErrorInfo.reason` values. Callers may switch on them; never rename.
TOKEN_MISSING: Final = "TOKEN_MISSING"
TOKEN_MALFORMED: Final = "TOKEN_MALFORMED"
TOKEN_EXPIRED: Final = "TOKEN_EXPIRED"
TOKEN_NOT_YET_VALID: Final = "TOKEN_NOT_YET_VALID"
TOKEN_WRONG_PROJECT: Final = "TOKEN_WRONG_PROJECT"
TOKEN_WRONG_TYPE: Final = "TOKEN_WRONG_TYPE"
TOKEN_INVALID: Final = "TOKEN_INVALID"
AUTH_KEYS_UNAVAILABLE: Final = "AUTH_KEYS_UNAVAILABLE"
SIGN_IN_PROVIDER_NOT_ALLOWED: Final = "SIGN_IN_PROVIDER_NOT_ALLOWED"


class AuthError(RpcError):
    """The caller's token was missing or rejected.

    The message says what was wrong; it never contains the token (nor any claim value copied
    from it), so it is safe to return to the caller and to log.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(grpc.StatusCode.UNAUTHENTICATED, reason, message)

    def __repr__(self) -> str:
        return f"AuthError({self.reason}: {self.message})"


def keys_unavailable() -> RpcError:
    """The signing keys could not be obtained: the token is neither accepted nor blamed."""
    return RpcError(
        grpc.StatusCode.UNAVAILABLE,
        AUTH_KEYS_UNAVAILABLE,
        "the token signing keys are temporarily unavailable; retry later",
    )


def sign_in_provider_not_allowed() -> RpcError:
    """A valid token from a sign-in method the operator does not accept (403, not 401: the
    caller is who they say, they just may not call with that kind of account)."""
    return RpcError(
        grpc.StatusCode.PERMISSION_DENIED,
        SIGN_IN_PROVIDER_NOT_ALLOWED,
        "this app does not accept your sign-in method; sign in with another provider",
        {"code": "sign_in_provider_not_allowed"},
    )
