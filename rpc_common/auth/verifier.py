"""`TokenVerifier`: verifies Firebase ID tokens as the Admin SDKs do, and stricter (SPEC §4).

Order: size and shape; header (alg RS256, kid, no key material in the header); every claim rule on
the still-unverified payload (cheap rejection, no key fetch); the signature with pyjwt against the
pinned key set; the claim rules again on the verified payload. Verified tokens are cached until
`exp`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import MappingProxyType, TracebackType
from typing import Any, Final

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from rpc_common.auth.caller import Caller
from rpc_common.auth.claims import check_claims, check_header
from rpc_common.auth.constants import GOOGLE_CERTS_URL, ID_TOKEN_ISSUER_PREFIX, MAX_TOKEN_CHARS
from rpc_common.auth.errors import (
    TOKEN_INVALID,
    TOKEN_MALFORMED,
    TOKEN_MISSING,
    TOKEN_WRONG_PROJECT,
    AuthError,
    sign_in_provider_not_allowed,
)
from rpc_common.auth.keys import DEFAULT_TIMEOUT, KeySource
from rpc_common.auth.settings import AuthSettings
from rpc_common.auth.signed import Failure, SignedTokenError, decode_rs256
from rpc_common.auth.token_cache import DEFAULT_MAX_ENTRIES, TokenCache, token_digest

logger = logging.getLogger(__name__)

_REQUIRED_CLAIMS: Final = ("aud", "iss", "sub", "exp", "iat", "auth_time")
# (reason, message) for each way the signed token can be refused.
_ID_TOKEN_FAILURES: Final[dict[Failure, tuple[str, str]]] = {
    "signature": (TOKEN_INVALID, "the token signature is invalid"),
    "project": (TOKEN_WRONG_PROJECT, "the token was issued for a different Firebase project"),
    "malformed": (TOKEN_MALFORMED, "the token could not be decoded as a JWT"),
    "invalid": (TOKEN_INVALID, "the token is invalid"),
}


class TokenVerifier:
    """Verifies Firebase ID tokens for one project. One instance per process; coroutine-safe."""

    def __init__(
        self,
        project_id: str,
        *,
        certs_url: str = GOOGLE_CERTS_URL,
        emulator: bool = False,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        cache_size: int = DEFAULT_MAX_ENTRIES,
        allowed_sign_in_providers: frozenset[str] | None = None,
    ) -> None:
        if not project_id:
            raise ValueError("project_id is required")
        self._project_id = project_id
        self._allowed_providers = allowed_sign_in_providers
        self._issuer = ID_TOKEN_ISSUER_PREFIX + project_id
        self._emulator = emulator
        self._clock = clock
        self._cache = TokenCache(cache_size)
        self._owns_http = http is None and not emulator
        self._http = http
        self._keys: KeySource | None = None
        if emulator:
            logger.warning(
                "Firebase Auth Emulator mode: ID-token SIGNATURES ARE NOT CHECKED and only the "
                "emulator's unsigned tokens are accepted (project %s). Never run this in production.",
                project_id,
            )
        else:
            if self._http is None:
                # One long-lived client: connection reuse, explicit timeouts, no redirects
                # (the key URL is pinned; a redirect is a failure, not a new source of keys).
                self._http = httpx.AsyncClient(timeout=DEFAULT_TIMEOUT, follow_redirects=False)
            self._keys = KeySource(certs_url, self._http, clock=clock)

    @classmethod
    def from_settings(
        cls, settings: AuthSettings, *, http: httpx.AsyncClient | None = None
    ) -> TokenVerifier:
        return cls(
            settings.project_id,
            certs_url=settings.certs_url,
            emulator=settings.emulator,
            http=http,
            allowed_sign_in_providers=settings.allowed_sign_in_providers,
        )

    @property
    def project_id(self) -> str:
        return self._project_id

    @property
    def emulator(self) -> bool:
        return self._emulator

    @property
    def key_source(self) -> KeySource | None:
        """The signing-key cache (None in emulator mode); exposed for health checks and tests."""
        return self._keys

    async def verify(self, token: str) -> Caller:
        """Verify `token` and return its caller.

        Raises `AuthError` (UNAUTHENTICATED) for a missing or bad token, and `RpcError`
        (UNAVAILABLE, AUTH_KEYS_UNAVAILABLE) when the signing keys cannot be fetched.
        """
        if not isinstance(token, str) or not token:
            raise AuthError(TOKEN_MISSING, "no ID token was provided")
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError(TOKEN_MALFORMED, "the token is too large to be a Firebase ID token")
        if not token.isascii() or token.count(".") != 2:
            raise AuthError(TOKEN_MALFORMED, "the token is not a JWT (three base64url parts)")
        digest = token_digest(token)
        caller = self._cache.get(digest, self._clock())
        if caller is None:
            caller, exp = await self._verify_uncached(token)
            self._cache.put(digest, caller, exp)
        if self._allowed_providers is not None and (
            _sign_in_provider(caller) not in self._allowed_providers
        ):
            raise sign_in_provider_not_allowed()
        return caller

    async def _verify_uncached(self, token: str) -> tuple[Caller, int]:
        try:
            unverified = jwt.decode_complete(token, options={"verify_signature": False})
        except jwt.DecodeError:
            raise AuthError(TOKEN_MALFORMED, "the token could not be decoded as a JWT") from None
        except jwt.InvalidTokenError:
            # pyjwt validates `kid` (must be a str) and `crit` while parsing, before check_header.
            raise AuthError(
                TOKEN_INVALID, "the token header has an invalid or unsupported kid / crit member"
            ) from None
        kid = check_header(
            unverified["header"], emulator=self._emulator, signature_empty=token.endswith(".")
        )
        payload: dict[str, Any] = unverified["payload"]
        check_claims(payload, project_id=self._project_id, now=self._clock())

        if self._keys is None:
            # Emulator mode: no signature exists; the header and claim checks above are all.
            claims = payload
        elif kid is None:  # pragma: no cover - check_header returns a kid outside emulator mode
            raise AuthError(TOKEN_INVALID, 'the token header has no "kid"')
        else:
            key = await self._keys.get(kid)
            claims = self._decode_signed(token, key)
            # Time may have passed while fetching keys; re-apply every rule to what was signed.
            check_claims(claims, project_id=self._project_id, now=self._clock())
        caller = Caller(uid=claims["sub"], claims=MappingProxyType(claims), token=token)
        return caller, claims["exp"]

    def _decode_signed(self, token: str, key: RSAPublicKey) -> dict[str, Any]:
        try:
            return decode_rs256(
                token,
                key,
                audience=self._project_id,
                issuer=self._issuer,
                required=_REQUIRED_CLAIMS,
                strict_audience=True,
            )
        except SignedTokenError as exc:
            raise AuthError(*_ID_TOKEN_FAILURES[exc.failure]) from None

    async def aclose(self) -> None:
        """Close the HTTP client if this verifier created it."""
        if self._owns_http and self._http is not None:
            await self._http.aclose()

    async def __aenter__(self) -> TokenVerifier:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _sign_in_provider(caller: Caller) -> str | None:
    firebase = caller.claims.get("firebase")
    provider = firebase.get("sign_in_provider") if isinstance(firebase, dict) else None
    return provider if isinstance(provider, str) else None
