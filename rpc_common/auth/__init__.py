"""Firebase ID-token verification shared by the gRPC services (SPEC §4).

Servicers call `await authenticate(context, verifier)` first thing; it returns the `Caller` or
aborts the RPC with UNAUTHENTICATED (or UNAVAILABLE when Google's keys cannot be fetched).
Methods guarded by Firebase App Check (SPEC §11) then call `await require_app_check(context,
app_check)` (`app_check.py`).
"""

from rpc_common.auth.app_check import (
    APP_CHECK_ERROR_CODE,
    APP_CHECK_FAILED,
    APP_CHECK_KEYS_UNAVAILABLE,
    APP_CHECK_METADATA,
    AppCheck,
    AppCheckError,
    AppCheckVerifier,
    app_check_counter,
    require_app_check,
)
from rpc_common.auth.app_check_settings import (
    APP_CHECK_JWKS_URL,
    AppCheckConfigError,
    AppCheckMode,
    AppCheckSettings,
)
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
    "APP_CHECK_ERROR_CODE",
    "APP_CHECK_FAILED",
    "APP_CHECK_JWKS_URL",
    "APP_CHECK_KEYS_UNAVAILABLE",
    "APP_CHECK_METADATA",
    "AUTH_KEYS_UNAVAILABLE",
    "GOOGLE_CERTS_URL",
    "TOKEN_EXPIRED",
    "TOKEN_INVALID",
    "TOKEN_MALFORMED",
    "TOKEN_MISSING",
    "TOKEN_NOT_YET_VALID",
    "TOKEN_WRONG_PROJECT",
    "TOKEN_WRONG_TYPE",
    "AppCheck",
    "AppCheckConfigError",
    "AppCheckError",
    "AppCheckMode",
    "AppCheckSettings",
    "AppCheckVerifier",
    "AuthConfigError",
    "AuthError",
    "AuthSettings",
    "Caller",
    "TokenVerifier",
    "app_check_counter",
    "authenticate",
    "bearer_token",
    "require_app_check",
]
