"""The one RS256 signature check both verifiers use (ID tokens and App Check tokens).

pyjwt verifies the signature, `aud`, `iss`, `sub` and the presence of the required claims. The
time claims are not left to it: it reads its own wall clock and coerces with `int()`, so each
verifier checks them itself, strictly, against its injected clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

Failure = Literal["signature", "project", "malformed", "invalid"]


class SignedTokenError(Exception):
    """Why the signed token was refused; each verifier turns it into its own error."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure)
        self.failure: Failure = failure


def decode_rs256(
    token: str,
    key: RSAPublicKey,
    *,
    audience: str,
    issuer: str,
    required: Sequence[str],
    strict_audience: bool,
) -> dict[str, Any]:
    """The verified claims, or SignedTokenError. `strict_audience`: `aud` must be exactly
    `audience` (a string), not a list holding it."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=["RS256"],
            audience=audience,
            issuer=issuer,
            options={
                "verify_signature": True,
                "require": list(required),
                "strict_aud": strict_audience,
                "verify_aud": True,
                "verify_iss": True,
                "verify_sub": True,
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "enforce_minimum_key_length": True,
            },
        )
    except jwt.InvalidSignatureError:
        raise SignedTokenError("signature") from None
    except (jwt.InvalidAudienceError, jwt.InvalidIssuerError):
        raise SignedTokenError("project") from None
    except jwt.DecodeError:
        raise SignedTokenError("malformed") from None
    except jwt.PyJWTError:
        raise SignedTokenError("invalid") from None
    return claims
