"""Explicit header and claim checks, on top of what pyjwt verifies.

pyjwt 2.15.1 coerces `exp`/`iat` with `int()` (so "1999999999" and True pass), accepts an empty
`sub`, never looks at `auth_time`, and reads the wall clock itself (security.md §1.9). These checks
close those gaps and are the single place where time is compared, against the verifier's clock.
They run on the unverified payload first (cheap rejection with a precise message, no key fetch,
no RSA work) and again on the verified payload.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rpc_common.auth.constants import (
    CLOCK_SKEW_SECONDS,
    CUSTOM_TOKEN_AUDIENCE,
    FORBIDDEN_HEADER_MEMBERS,
    ID_TOKEN_ISSUER_PREFIX,
    MAX_KID_CHARS,
    MAX_SUB_CHARS,
    SESSION_COOKIE_ISSUER_PREFIX,
)
from rpc_common.auth.errors import (
    TOKEN_EXPIRED,
    TOKEN_INVALID,
    TOKEN_NOT_YET_VALID,
    TOKEN_WRONG_PROJECT,
    TOKEN_WRONG_TYPE,
    AuthError,
)


def check_header(header: Mapping[str, Any], *, emulator: bool, signature_empty: bool) -> str | None:
    """Validate the JOSE header; return the `kid` to look up (None in emulator mode)."""
    forbidden = sorted(FORBIDDEN_HEADER_MEMBERS.intersection(header))
    if forbidden:
        raise AuthError(
            TOKEN_INVALID, f"the token header carries key material ({', '.join(forbidden)})"
        )
    if "crit" in header:
        # Firebase never uses critical extensions, and we implement none (RFC 7515 §4.1.11).
        raise AuthError(TOKEN_INVALID, 'the token header has an unsupported "crit" member')
    alg = header.get("alg")
    if emulator:
        # The Auth Emulator signs nothing: alg "none" and an empty signature, nothing else.
        if alg != "none" or not signature_empty:
            raise AuthError(
                TOKEN_INVALID, 'emulator mode accepts only unsigned emulator tokens (alg "none")'
            )
        return None
    if isinstance(alg, str) and alg.lower() == "none":
        raise AuthError(TOKEN_INVALID, "unsigned tokens are not accepted")
    if alg != "RS256":
        raise AuthError(TOKEN_INVALID, 'the token algorithm must be "RS256"')
    kid = header.get("kid")
    if kid is None:
        raise AuthError(TOKEN_INVALID, 'the token header has no "kid"')
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS:
        raise AuthError(TOKEN_INVALID, 'the token "kid" is not a valid key id')
    return kid


def check_claims(claims: Mapping[str, Any], *, project_id: str, now: float) -> str:
    """Apply every Firebase ID-token claim rule; return the uid (`sub`)."""
    aud = claims.get("aud")
    iss = claims.get("iss")
    # Token-type confusion first, so the caller learns what they actually sent.
    if aud == CUSTOM_TOKEN_AUDIENCE:
        raise AuthError(
            TOKEN_WRONG_TYPE,
            "expected a Firebase ID token but got a custom token; exchange it for an ID token first",
        )
    if isinstance(iss, str) and iss.startswith(SESSION_COOKIE_ISSUER_PREFIX):
        raise AuthError(TOKEN_WRONG_TYPE, "expected a Firebase ID token but got a session cookie")

    if aud is None:
        raise AuthError(TOKEN_INVALID, 'the token has no "aud" claim')
    if not isinstance(aud, str):
        raise AuthError(TOKEN_INVALID, 'the token "aud" claim must be a single string')
    if aud != project_id:
        raise AuthError(
            TOKEN_WRONG_PROJECT, "the token was issued for a different Firebase project"
        )
    if iss != ID_TOKEN_ISSUER_PREFIX + project_id:
        if isinstance(iss, str) and iss.startswith(ID_TOKEN_ISSUER_PREFIX):
            raise AuthError(
                TOKEN_WRONG_PROJECT, "the token was issued for a different Firebase project"
            )
        raise AuthError(TOKEN_INVALID, 'the token "iss" claim is not the Firebase ID-token issuer')

    sub = claims.get("sub")
    if not isinstance(sub, str) or not 1 <= len(sub) <= MAX_SUB_CHARS:
        raise AuthError(
            TOKEN_INVALID,
            f'the token "sub" claim must be a non-empty string of at most {MAX_SUB_CHARS} characters',
        )

    exp = _int_claim(claims, "exp")
    iat = _int_claim(claims, "iat")
    auth_time = _int_claim(claims, "auth_time")
    if is_expired(exp, now):
        raise AuthError(TOKEN_EXPIRED, "the token has expired; get a fresh ID token")
    if iat > now + CLOCK_SKEW_SECONDS:
        raise AuthError(TOKEN_NOT_YET_VALID, "the token was issued in the future (iat)")
    if auth_time > now + CLOCK_SKEW_SECONDS:
        raise AuthError(TOKEN_NOT_YET_VALID, "the token's authentication time is in the future")
    if iat > exp:
        raise AuthError(TOKEN_INVALID, "the token was issued after it expires")
    if "nbf" in claims and _int_claim(claims, "nbf") > now + CLOCK_SKEW_SECONDS:
        raise AuthError(TOKEN_NOT_YET_VALID, "the token is not valid yet (nbf)")
    return sub


def is_expired(exp: int, now: float) -> bool:
    """The expiry rule of `check_claims`, for the verified-token cache."""
    return exp <= now - CLOCK_SKEW_SECONDS


def _int_claim(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    if value is None:
        raise AuthError(TOKEN_INVALID, f'the token has no "{name}" claim')
    # `type(...) is int`: bool is an int subclass, and floats / numeric strings are not
    # NumericDates as Firebase issues them.
    if type(value) is not int:
        raise AuthError(TOKEN_INVALID, f'the token "{name}" claim must be an integer')
    return value
