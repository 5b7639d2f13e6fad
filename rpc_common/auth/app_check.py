"""Firebase App Check, verified by the gRPC services (SPEC §11).

App Check tokens prove a call comes from the project's genuine app (not a script). The client
sends one as `X-Firebase-AppCheck` (the bridge forwards it as `x-firebase-appcheck` metadata;
gRPC callers send that metadata themselves). Servicers call `await require_app_check(context,
app_check)` right after `authenticate`, in the methods App Check guards.

A token is accepted as the Admin SDKs accept it, and stricter: header `alg` RS256, `typ` JWT and a
`kid` of Google's App Check JWKS (fetched and cached by the same `KeySource` as the ID-token keys);
`iss` exactly `https://firebaseappcheck.googleapis.com/<project number>`; `aud` a list holding
`projects/<project number>`; `sub` (the app id) a non-empty string, in `APP_CHECK_APP_IDS` when
that is set; integer `exp` not passed and `iat` not in the future, with the ID token's clock skew.
As for ID tokens, every claim rule runs on the unverified payload first (no key fetch for junk),
then pyjwt checks the signature, then the rules run again on what was signed. Verified tokens are
cached until `exp`.

Errors never contain the token or a claim value copied from it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import grpc
import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from prometheus_client import CollectorRegistry, Counter

from rpc_common.auth.app_check_settings import (
    APP_CHECK_ISSUER_PREFIX,
    APP_CHECK_JWKS_URL,
    AppCheckMode,
    AppCheckSettings,
)
from rpc_common.auth.claims import is_expired
from rpc_common.auth.constants import (
    CLOCK_SKEW_SECONDS,
    FORBIDDEN_HEADER_MEMBERS,
    MAX_KID_CHARS,
    MAX_SUB_CHARS,
    MAX_TOKEN_CHARS,
)
from rpc_common.auth.errors import AuthError
from rpc_common.auth.keys import DEFAULT_TIMEOUT, UNKNOWN_KID_COOLDOWN_SECONDS, KeySource
from rpc_common.auth.signed import Failure, SignedTokenError, decode_rs256
from rpc_common.auth.token_cache import DEFAULT_MAX_ENTRIES, token_digest
from rpc_common.status import RpcError

logger = logging.getLogger(__name__)

# The gRPC metadata key (the bridge's `rest_bridge.auth.APP_CHECK_METADATA`).
APP_CHECK_METADATA: Final = "x-firebase-appcheck"
# Stable `ErrorInfo.reason` values and the OpenAI `code` the bridge shows; never rename.
APP_CHECK_FAILED: Final = "APP_CHECK_FAILED"
APP_CHECK_KEYS_UNAVAILABLE: Final = "APP_CHECK_KEYS_UNAVAILABLE"
APP_CHECK_ERROR_CODE: Final = "invalid_app_check_token"

# Results, the label values of the `native1api_<service>_app_check` counter.
VALID: Final = "valid"
MISSING: Final = "missing"
INVALID: Final = "invalid"
UNAVAILABLE: Final = "unavailable"  # the signing keys could not be fetched: nothing was decided
RESULTS: Final = (VALID, MISSING, INVALID, UNAVAILABLE)

_REQUIRED_CLAIMS: Final = ("aud", "iss", "sub", "exp", "iat")
_APP_CHECK_FAILURES: Final[dict[Failure, str]] = {
    "signature": "its signature is invalid",
    "project": "it was issued for a different Firebase project",
    "malformed": "it is invalid",
    "invalid": "it is invalid",
}
_MISSING_MESSAGE: Final = (
    "App Check token missing: send the X-Firebase-AppCheck header "
    "(gRPC: x-firebase-appcheck metadata) with a current Firebase App Check token"
)


class AppCheckError(RpcError):
    """The App Check token was missing or rejected: UNAUTHENTICATED, reason APP_CHECK_FAILED.

    `result` is `missing` or `invalid` (the metric label). The message says what was wrong and
    never contains the token, so it is safe to return and to log.
    """

    def __init__(self, message: str, *, result: str = INVALID) -> None:
        super().__init__(
            grpc.StatusCode.UNAUTHENTICATED,
            APP_CHECK_FAILED,
            message,
            {"code": APP_CHECK_ERROR_CODE},
        )
        self.result = result

    def __repr__(self) -> str:
        return f"AppCheckError({self.result}: {self.message})"


def _rejected(detail: str) -> AppCheckError:
    return AppCheckError(f"App Check token rejected: {detail}")


def app_check_keys_unavailable() -> RpcError:
    """Google's App Check keys could not be fetched: the token is neither accepted nor blamed."""
    return RpcError(
        grpc.StatusCode.UNAVAILABLE,
        APP_CHECK_KEYS_UNAVAILABLE,
        "the App Check signing keys are temporarily unavailable; retry later",
    )


def app_check_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The token of the single `x-firebase-appcheck` entry; raises AppCheckError."""
    values = [value for key, value in metadata or () if key.lower() == APP_CHECK_METADATA]
    if len(values) > 1:
        raise _rejected("more than one App Check token was sent")
    if not values:
        raise AppCheckError(_MISSING_MESSAGE, result=MISSING)
    value = values[0]
    if not isinstance(value, str):
        raise _rejected("the App Check metadata must be text")
    value = value.strip()
    if not value:
        raise AppCheckError(_MISSING_MESSAGE, result=MISSING)
    return value


def check_app_check_header(header: Mapping[str, Any]) -> str:
    """Validate an App Check token's JOSE header; return its `kid`."""
    forbidden = sorted(FORBIDDEN_HEADER_MEMBERS.intersection(header))
    if forbidden:
        raise _rejected(f"its header carries key material ({', '.join(forbidden)})")
    if "crit" in header:
        raise _rejected('its header has an unsupported "crit" member')
    alg = header.get("alg")
    if isinstance(alg, str) and alg.lower() == "none":
        raise _rejected("unsigned tokens are not accepted")
    if alg != "RS256":
        raise _rejected('its algorithm must be "RS256"')
    if header.get("typ") != "JWT":
        raise _rejected('its "typ" header must be "JWT"')
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS:
        raise _rejected('its header has no valid "kid"')
    return kid


def check_app_check_claims(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    audience: str,
    app_ids: frozenset[str],
    now: float,
) -> str:
    """Apply every App Check claim rule; return the app id (`sub`)."""
    iss = claims.get("iss")
    if iss != issuer:
        if isinstance(iss, str) and iss.startswith(APP_CHECK_ISSUER_PREFIX):
            raise _rejected("it was issued for a different Firebase project")
        raise _rejected('its "iss" claim is not the Firebase App Check issuer')
    aud = claims.get("aud")
    # Firebase issues `aud` as a list; a bare string is not a token Firebase made.
    if not isinstance(aud, list):
        raise _rejected('its "aud" claim must be a list')
    if audience not in aud:
        raise _rejected('its "aud" claim does not include this Firebase project')
    sub = claims.get("sub")
    if not isinstance(sub, str) or not 1 <= len(sub) <= MAX_SUB_CHARS:
        raise _rejected('its "sub" claim (the app id) must be a non-empty string')
    if app_ids and sub not in app_ids:
        raise _rejected("it was issued to an app that is not allowed here (APP_CHECK_APP_IDS)")
    exp = _int_claim(claims, "exp")
    iat = _int_claim(claims, "iat")
    if is_expired(exp, now):
        raise _rejected("it has expired; the client must send a fresh one")
    if iat > now + CLOCK_SKEW_SECONDS:
        raise _rejected('it was issued in the future ("iat")')
    if iat > exp:
        raise _rejected("it was issued after it expires")
    if "nbf" in claims and _int_claim(claims, "nbf") > now + CLOCK_SKEW_SECONDS:
        raise _rejected('it is not valid yet ("nbf")')
    return sub


def _int_claim(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    # `type(...) is int`: bool is an int subclass; floats and numeric strings are not accepted.
    if type(value) is not int:
        raise _rejected(f'its "{name}" claim must be an integer')
    return value


@dataclass(frozen=True, slots=True)
class AppCheckToken:
    """A verified App Check token: the app it was issued to and when it expires."""

    app_id: str
    exp: int


class _VerifiedTokens:
    """A bounded LRU of verified tokens by SHA-256 digest, each until its `exp` (as TokenCache)."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self._max = max_entries
        self._entries: OrderedDict[bytes, AppCheckToken] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes, now: float) -> AppCheckToken | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if is_expired(entry.exp, now):
            del self._entries[digest]
            raise _rejected("it has expired; the client must send a fresh one")
        self._entries.move_to_end(digest)
        return entry

    def put(self, digest: bytes, entry: AppCheckToken) -> None:
        if self._max == 0:
            return
        self._entries[digest] = entry
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


class AppCheckVerifier:
    """Verifies Firebase App Check tokens for one project. One per process; coroutine-safe."""

    def __init__(
        self,
        project_number: str,
        *,
        app_ids: frozenset[str] = frozenset(),
        jwks_url: str = APP_CHECK_JWKS_URL,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        cache_size: int = DEFAULT_MAX_ENTRIES,
        unknown_kid_cooldown: float = UNKNOWN_KID_COOLDOWN_SECONDS,
    ) -> None:
        if not project_number.isdigit():
            raise ValueError("project_number must be the numeric Firebase project number")
        self._issuer = APP_CHECK_ISSUER_PREFIX + project_number
        self._audience = "projects/" + project_number
        self._app_ids = app_ids
        self._clock = clock
        self._cache = _VerifiedTokens(cache_size)
        self._owns_http = http is None
        # Own client by default: no redirects (the key URL is pinned), explicit timeouts.
        if http is None:
            http = httpx.AsyncClient(timeout=DEFAULT_TIMEOUT, follow_redirects=False)
        self._http = http
        self._keys = KeySource(
            jwks_url, self._http, clock=clock, unknown_kid_cooldown=unknown_kid_cooldown
        )

    @classmethod
    def from_settings(
        cls, settings: AppCheckSettings, *, http: httpx.AsyncClient | None = None
    ) -> AppCheckVerifier:
        return cls(
            settings.project_number,
            app_ids=settings.app_ids,
            jwks_url=settings.jwks_url,
            http=http,
        )

    @property
    def key_source(self) -> KeySource:
        """The App Check signing-key cache; exposed for health checks and tests."""
        return self._keys

    async def verify(self, token: str) -> AppCheckToken:
        """Verify `token`. Raises AppCheckError (UNAUTHENTICATED) for a bad token, and
        `RpcError` (UNAVAILABLE, APP_CHECK_KEYS_UNAVAILABLE) when the keys cannot be fetched."""
        if not isinstance(token, str) or not token:
            raise AppCheckError(_MISSING_MESSAGE, result=MISSING)
        if len(token) > MAX_TOKEN_CHARS:
            raise _rejected("it is too large to be an App Check token")
        if not token.isascii() or token.count(".") != 2:
            raise _rejected("it is not a JWT (three base64url parts)")
        digest = token_digest(token)
        cached = self._cache.get(digest, self._clock())
        if cached is not None:
            return cached
        verified = await self._verify_uncached(token)
        self._cache.put(digest, verified)
        return verified

    async def _verify_uncached(self, token: str) -> AppCheckToken:
        try:
            unverified = jwt.decode_complete(token, options={"verify_signature": False})
        except jwt.DecodeError:
            raise _rejected("it could not be decoded as a JWT") from None
        except jwt.InvalidTokenError:
            # pyjwt validates `kid` (must be a str) and `crit` while parsing.
            raise _rejected("its header has an invalid kid or crit member") from None
        kid = check_app_check_header(unverified["header"])
        self._check_claims(unverified["payload"])
        try:
            key = await self._keys.get(kid)
        except AuthError:
            raise _rejected('its "kid" does not name a current App Check signing key') from None
        except RpcError:
            raise app_check_keys_unavailable() from None
        claims = self._decode_signed(token, key)
        # Time may have passed while fetching keys; re-apply every rule to what was signed.
        app_id = self._check_claims(claims)
        return AppCheckToken(app_id=app_id, exp=claims["exp"])

    def _check_claims(self, claims: Mapping[str, Any]) -> str:
        return check_app_check_claims(
            claims,
            issuer=self._issuer,
            audience=self._audience,
            app_ids=self._app_ids,
            now=self._clock(),
        )

    def _decode_signed(self, token: str, key: RSAPublicKey) -> dict[str, Any]:
        try:
            return decode_rs256(
                token,
                key,
                audience=self._audience,
                issuer=self._issuer,
                required=_REQUIRED_CLAIMS,
                strict_audience=False,  # App Check's aud is a list holding projects/<number>
            )
        except SignedTokenError as exc:
            raise _rejected(_APP_CHECK_FAILURES[exc.failure]) from None

    async def aclose(self) -> None:
        """Close the HTTP client if this verifier created it."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AppCheckVerifier:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def app_check_counter(service: str, registry: CollectorRegistry) -> Counter:
    """The `native1api_<service>_app_check` counter, in `registry`. Labels: result only."""
    return Counter(
        f"native1api_{service}_app_check",
        "App Check verifications (APP_CHECK_MODE monitor or enforce) by result: valid, missing, "
        "invalid, unavailable (the signing keys could not be fetched).",
        ["result"],
        registry=registry,
    )


class AppCheck:
    """One service's App Check policy: the mode, the verifier, and the result counter."""

    def __init__(
        self,
        mode: AppCheckMode,
        verifier: AppCheckVerifier | None,
        *,
        counter: Counter | None = None,
        owns_verifier: bool = False,
    ) -> None:
        if mode is not AppCheckMode.OFF and verifier is None:
            raise ValueError(f"APP_CHECK_MODE={mode} needs a verifier")
        self._mode = mode
        self._verifier = verifier if mode is not AppCheckMode.OFF else None
        self._owns_verifier = owns_verifier
        # Bound once: labels() costs a lock and a lookup. Created at 0 so dashboards see them.
        self._counts: dict[str, Counter] = {}
        if counter is not None and self._verifier is not None:
            self._counts = {result: counter.labels(result) for result in RESULTS}

    @classmethod
    def from_settings(
        cls,
        settings: AppCheckSettings,
        *,
        verifier: AppCheckVerifier | None = None,
        counter: Counter | None = None,
    ) -> AppCheck:
        """The policy for `settings`; builds (and then owns) a verifier unless one is given."""
        owns = False
        if settings.mode is not AppCheckMode.OFF and verifier is None:
            verifier, owns = AppCheckVerifier.from_settings(settings), True
        app_check = cls(settings.mode, verifier, counter=counter, owns_verifier=owns)
        if settings.mode is AppCheckMode.OFF:
            logger.info("App Check: off (the X-Firebase-AppCheck header is ignored)")
        else:
            logger.info(
                "App Check: %s for project number %s, %s",
                settings.mode,
                settings.project_number,
                f"apps {', '.join(sorted(settings.app_ids))}"
                if settings.app_ids
                else "any app of the project",
            )
        return app_check

    @property
    def mode(self) -> AppCheckMode:
        return self._mode

    @property
    def verifier(self) -> AppCheckVerifier | None:
        return self._verifier

    async def check(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> None:
        """Verify the call's App Check token and count the result.

        `enforce`: raises AppCheckError (UNAUTHENTICATED) or, when the keys cannot be fetched,
        RpcError (UNAVAILABLE). `monitor`: never raises. `off`: does nothing.
        """
        verifier = self._verifier
        if verifier is None:
            return
        try:
            await verifier.verify(app_check_token(metadata))
        except AppCheckError as error:
            self._count(error.result)
            logger.debug("App Check %s (%s): %s", error.result, self._mode, error.message)
            if self._mode is AppCheckMode.ENFORCE:
                raise
            return
        except RpcError:
            self._count(UNAVAILABLE)
            if self._mode is AppCheckMode.ENFORCE:
                raise
            return
        self._count(VALID)

    def _count(self, result: str) -> None:
        child = self._counts.get(result)
        if child is not None:
            child.inc()

    async def aclose(self) -> None:
        if self._owns_verifier and self._verifier is not None:
            await self._verifier.aclose()


async def require_app_check(
    context: grpc.aio.ServicerContext[Any, Any], app_check: AppCheck | None
) -> None:
    """Apply App Check to this call; the second call (after `authenticate`) of a guarded method.

    Raises `AppCheckError` (UNAUTHENTICATED, APP_CHECK_FAILED, metadata `code` =
    `invalid_app_check_token`) in enforce mode; the servicer's `unary_errors` / `stream_errors`
    boundary turns it into the status (and the gateway's request record sees the reason).
    """
    if app_check is not None and app_check.mode is not AppCheckMode.OFF:
        await app_check.check(context.invocation_metadata())
