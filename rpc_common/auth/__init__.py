"""Firebase ID-token verification shared by the gRPC services (SPEC §4).

Servicers call `await authenticate(context, verifier)` first thing; it returns the `Caller` or
aborts the RPC with UNAUTHENTICATED (or UNAVAILABLE when Google's keys cannot be fetched).
"""

from rpc_common.auth.caller import Caller
from rpc_common.auth.constants import GOOGLE_CERTS_URL
from rpc_common.auth.errors import (
    AUTH_KEYS_UNAVAILABLE,
    TOKEN_EXPIRED,
    TOKEN_INVALID,
    TOKEN_MALFORMED,
    TOKEN_MISSING,
    TOKEN_NOT_YET_VALID,
    TOKEN_WRONG_PROJECT,
    TOKEN_WRONG_TYPE,
    AuthError,
)
from rpc_common.auth.grpc_auth import authenticate, bearer_token
from rpc_common.auth.settings import AuthConfigError, AuthSettings
from rpc_common.auth.verifier import TokenVerifier

__all__ = [
    "AUTH_KEYS_UNAVAILABLE",
    "GOOGLE_CERTS_URL",
    "TOKEN_EXPIRED",
    "TOKEN_INVALID",
    "TOKEN_MALFORMED",
    "TOKEN_MISSING",
    "TOKEN_NOT_YET_VALID",
    "TOKEN_WRONG_PROJECT",
    "TOKEN_WRONG_TYPE",
    "AuthConfigError",
    "AuthError",
    "AuthSettings",
    "Caller",
    "TokenVerifier",
    "authenticate",
    "bearer_token",
]
