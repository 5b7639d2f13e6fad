"""The pinned source of Google's token signing keys.

`KeySource` fetches the key set from one URL, in either format (detected by content):
Google's x509 map `{kid: PEM certificate}` or a JWKS `{"keys": [...]}`. It caches the set for the
response's `Cache-Control: max-age`, runs one fetch at a time (an `asyncio.Lock`; coroutines that
waited share the outcome of the fetch that ran while they waited), refetches for an unknown `kid` at
most once per `UNKNOWN_KID_COOLDOWN_SECONDS`, and fails closed: no keys, no acceptance.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import RSAAlgorithm
from jwt.exceptions import PyJWTError

from rpc_common.auth.errors import TOKEN_INVALID, AuthError, keys_unavailable

logger = logging.getLogger(__name__)

# The attacker chooses `kid`; refetching on every unknown one would let them make us hammer
# the key endpoint. pyjwt's PyJWKClient and go-oidc use the same 30 s cooldown.
UNKNOWN_KID_COOLDOWN_SECONDS: Final = 30.0
# After a failed fetch, fail fast for a moment instead of queueing every request behind another
# fetch that will most likely time out too.
FAILURE_BACKOFF_SECONDS: Final = 5.0
# Bounds on the cache lifetime. Google sends several hours. The floor stops an endpoint without
# caching headers (or with max-age=0) from turning every verification into a fetch; a key that
# was just rotated out stays trusted at most this long past its stated lifetime, which is harmless
# because Google keeps retired keys published until the tokens they signed have expired.
MIN_KEYS_TTL_SECONDS: Final = 30.0
MAX_KEYS_TTL_SECONDS: Final = 24 * 3600.0
MAX_RESPONSE_BYTES: Final = 1024 * 1024
MIN_RSA_BITS: Final = 2048
DEFAULT_TIMEOUT: Final = httpx.Timeout(5.0, connect=3.0)


class KeySetError(ValueError):
    """The key endpoint's response is not a usable key set."""


@dataclass(frozen=True, slots=True)
class KeySet:
    keys: Mapping[str, RSAPublicKey]
    expires_at: float


class KeySource:
    """Google's current signing keys, by `kid`."""

    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], float],
        unknown_kid_cooldown: float = UNKNOWN_KID_COOLDOWN_SECONDS,
    ) -> None:
        self._url = url
        self._http = http
        self._clock = clock
        self._cooldown = unknown_kid_cooldown
        self._lock = asyncio.Lock()
        self._keys: KeySet | None = None
        # Bumped when a fetch attempt finishes; lets lock waiters reuse that attempt's outcome.
        self._generation = 0
        self._last_attempt_at: float | None = None
        self._last_attempt_failed = False
        self.fetch_count = 0

    @property
    def url(self) -> str:
        return self._url

    async def get(self, kid: str) -> RSAPublicKey:
        """The public key named `kid`.

        Raises `AuthError(TOKEN_INVALID)` if no current key has that id, and
        `RpcError(UNAVAILABLE)` if the key set could not be fetched.
        """
        keys = self._keys
        if keys is None or self._clock() >= keys.expires_at:
            # Fail closed on an expired set: no stale-if-error. Serving keys past their max-age
            # during an outage would keep trusting a key Google may have pulled after a leak,
            # and the verified-token cache already keeps known-good callers working meanwhile.
            keys = await self._refresh()
        key = keys.keys.get(kid)
        if key is not None:
            return key
        if self._may_refetch_for_unknown_kid():
            # Google publishes new keys before signing with them, so a fresh set rarely helps;
            # it does when our copy predates a rotation. A failure here is UNAVAILABLE as well:
            # we could not tell whether the token is good.
            key = (await self._refresh()).keys.get(kid)
            if key is not None:
                return key
        raise AuthError(TOKEN_INVALID, 'the token\'s "kid" does not name a current signing key')

    def _may_refetch_for_unknown_kid(self) -> bool:
        last = self._last_attempt_at
        return last is None or self._clock() - last >= self._cooldown

    async def _refresh(self) -> KeySet:
        seen = self._generation
        async with self._lock:
            if self._generation != seen:
                # Another coroutine fetched while we waited for the lock: share its outcome.
                if self._last_attempt_failed or self._keys is None:
                    raise keys_unavailable()
                return self._keys
            now = self._clock()
            last = self._last_attempt_at
            if (
                self._last_attempt_failed
                and last is not None
                and now - last < FAILURE_BACKOFF_SECONDS
            ):
                raise keys_unavailable()
            self._last_attempt_at = now
            self.fetch_count += 1
            try:
                keys = await self._fetch(now)
            except KeySetError as exc:
                self._last_attempt_failed = True
                self._generation += 1
                logger.warning("token signing keys unavailable from %s: %s", self._url, exc)
                raise keys_unavailable() from None
            self._keys = keys
            self._last_attempt_failed = False
            self._generation += 1
            logger.info("fetched %d token signing keys from %s", len(keys.keys), self._url)
            return keys

    async def _fetch(self, now: float) -> KeySet:
        try:
            response = await self._http.get(self._url, headers={"Accept": "application/json"})
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise KeySetError(f"request failed: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise KeySetError(f"HTTP {response.status_code}")
        if len(response.content) > MAX_RESPONSE_BYTES:
            raise KeySetError("response too large")
        try:
            data = json.loads(response.content)
        except (ValueError, RecursionError) as exc:
            raise KeySetError("response is not JSON") from exc
        keys = parse_key_set(data)
        ttl = cache_ttl(response.headers)
        return KeySet(keys=keys, expires_at=now + ttl)


def cache_ttl(headers: httpx.Headers) -> float:
    """Seconds the response may be cached: `max-age` minus `Age`, clamped to sane bounds."""
    max_age = parse_max_age(headers.get("cache-control", ""))
    if max_age is None:
        return MIN_KEYS_TTL_SECONDS
    age_header = headers.get("age", "").strip()
    age = int(age_header) if age_header.isdigit() else 0
    return float(min(max(max_age - age, MIN_KEYS_TTL_SECONDS), MAX_KEYS_TTL_SECONDS))


def parse_max_age(cache_control: str) -> int | None:
    """The `max-age` of a Cache-Control value; 0 for no-store / no-cache; None if absent."""
    max_age: int | None = None
    for directive in cache_control.split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip().lower()
        if name in ("no-store", "no-cache"):
            return 0
        if name == "max-age" and max_age is None:
            value = value.strip().strip('"')
            if value.isdigit():
                max_age = int(value)
    return max_age


def parse_key_set(data: Any) -> dict[str, RSAPublicKey]:
    """RSA public keys by kid from an x509 map or a JWKS document.

    Unusable entries are skipped (and logged) so one odd key does not take the others down;
    a document with no usable key at all is an error.
    """
    if not isinstance(data, dict):
        raise KeySetError("key set is not a JSON object")
    if isinstance(data.get("keys"), list):
        keys = _parse_jwks(data["keys"])
    else:
        keys = _parse_x509_map(data)
    if not keys:
        raise KeySetError("key set contains no usable RSA key")
    return keys


def _parse_x509_map(data: dict[str, Any]) -> dict[str, RSAPublicKey]:
    keys: dict[str, RSAPublicKey] = {}
    for kid, pem in data.items():
        if not kid or not isinstance(pem, str):
            logger.warning("skipping x509 key entry %r: not a PEM string", kid)
            continue
        try:
            public_key = x509.load_pem_x509_certificate(pem.encode()).public_key()
        except ValueError:
            logger.warning("skipping x509 key entry %r: not a PEM certificate", kid)
            continue
        if _usable(public_key, kid):
            keys[kid] = public_key
    return keys


def _parse_jwks(entries: list[Any]) -> dict[str, RSAPublicKey]:
    keys: dict[str, RSAPublicKey] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            logger.warning("skipping JWKS entry without a kid")
            continue
        if entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig":
            logger.warning("skipping JWKS entry %r: not an RSA signing key", kid)
            continue
        if entry.get("alg", "RS256") != "RS256":
            logger.warning("skipping JWKS entry %r: alg is not RS256", kid)
            continue
        # Never let a published private part reach a verifier: keep only n and e.
        public_part = {"kty": "RSA", "n": entry.get("n"), "e": entry.get("e")}
        try:
            key = RSAAlgorithm.from_jwk(public_part)
        except (PyJWTError, ValueError, TypeError):
            logger.warning("skipping JWKS entry %r: invalid RSA parameters", kid)
            continue
        if _usable(key, kid):
            keys[kid] = key
    return keys


def _usable(key: object, kid: str) -> TypeGuard[RSAPublicKey]:
    if not isinstance(key, RSAPublicKey):
        logger.warning("skipping key %r: not an RSA key", kid)
        return False
    if key.key_size < MIN_RSA_BITS:
        logger.warning("skipping key %r: RSA key shorter than %d bits", kid, MIN_RSA_BITS)
        return False
    return True
