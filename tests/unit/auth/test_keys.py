"""The key source: both formats, max-age caching, single-flight, unknown-kid cooldown, fail closed."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest

from rpc_common.auth import AUTH_KEYS_UNAVAILABLE, AuthError, TokenVerifier
from rpc_common.auth.errors import TOKEN_INVALID
from rpc_common.auth.keys import (
    FAILURE_BACKOFF_SECONDS,
    MAX_KEYS_TTL_SECONDS,
    MIN_KEYS_TTL_SECONDS,
    UNKNOWN_KID_COOLDOWN_SECONDS,
    KeySetError,
    cache_ttl,
    parse_key_set,
    parse_max_age,
)
from rpc_common.status import RpcError

from .tokens import CERTS_URL, PROJECT, FakeClock, FakeKeyServer, SigningKey, claims, sign


def token_for(key: SigningKey, clock: FakeClock, n: int = 1, kid: str | None = None) -> str:
    """A distinct valid token per `n` (so the verified-token cache cannot answer)."""
    return sign(claims(clock(), sub=f"user-{n}"), key, kid=kid)


async def unavailable(verifier: TokenVerifier, token: str) -> RpcError:
    with pytest.raises(RpcError) as info:
        await verifier.verify(token)
    error = info.value
    assert not isinstance(error, AuthError)
    assert error.code is grpc.StatusCode.UNAVAILABLE
    assert error.reason == AUTH_KEYS_UNAVAILABLE
    assert token not in str(error)
    return error


async def test_fetches_from_the_configured_url(
    verifier: TokenVerifier, server: FakeKeyServer, key1: SigningKey, clock: FakeClock
) -> None:
    await verifier.verify(token_for(key1, clock))
    assert server.urls == [CERTS_URL]


@pytest.mark.parametrize("fmt", ["x509", "jwks"])
async def test_one_fetch_for_many_tokens(
    fmt: str,
    http: httpx.AsyncClient,
    server: FakeKeyServer,
    key1: SigningKey,
    key2: SigningKey,
    clock: FakeClock,
) -> None:
    server.fmt = fmt
    server.keys = [key1, key2]
    async with TokenVerifier(PROJECT, http=http, clock=clock) as verifier:
        for n in range(30):
            key = key1 if n % 2 else key2
            caller = await verifier.verify(token_for(key, clock, n))
            assert caller.uid == f"user-{n}"
            clock.advance(1)
    assert server.fetches == 1


async def test_max_age_is_respected(
    verifier: TokenVerifier, server: FakeKeyServer, key1: SigningKey, clock: FakeClock
) -> None:
    server.max_age = 600
    await verifier.verify(token_for(key1, clock, 1))
    clock.advance(599)
    await verifier.verify(token_for(key1, clock, 2))
    assert server.fetches == 1
    clock.advance(2)
    await verifier.verify(token_for(key1, clock, 3))
    assert server.fetches == 2
    await verifier.verify(token_for(key1, clock, 4))
    assert server.fetches == 2


async def test_missing_max_age_caches_for_the_floor(
    verifier: TokenVerifier, server: FakeKeyServer, key1: SigningKey, clock: FakeClock
) -> None:
    server.max_age = None
    await verifier.verify(token_for(key1, clock, 1))
    clock.advance(MIN_KEYS_TTL_SECONDS - 1)
    await verifier.verify(token_for(key1, clock, 2))
    assert server.fetches == 1
    clock.advance(2)
    await verifier.verify(token_for(key1, clock, 3))
    assert server.fetches == 2


async def test_unknown_kid_refetches_at_most_once_per_cooldown(
    verifier: TokenVerifier, server: FakeKeyServer, key1: SigningKey, clock: FakeClock
) -> None:
    await verifier.verify(token_for(key1, clock))
    assert server.fetches == 1
    # Right after a fetch: an unknown kid is rejected without another fetch.
    for n in range(5):
        with pytest.raises(AuthError) as info:
            await verifier.verify(token_for(key1, clock, n, kid=f"unknown-{n}"))
        assert info.value.reason == TOKEN_INVALID
    assert server.fetches == 1
    clock.advance(UNKNOWN_KID_COOLDOWN_SECONDS + 1)
    for n in range(5):
        with pytest.raises(AuthError):
            await verifier.verify(token_for(key1, clock, n, kid=f"unknown-{n}"))
    assert server.fetches == 2  # one refetch for the whole burst


async def test_unknown_kid_refetch_picks_up_a_rotated_key(
    verifier: TokenVerifier,
    server: FakeKeyServer,
    key1: SigningKey,
    key2: SigningKey,
    clock: FakeClock,
) -> None:
    await verifier.verify(token_for(key1, clock))
    server.keys = [key1, key2]  # Google rotates within our max-age
    with pytest.raises(AuthError):
        await verifier.verify(token_for(key2, clock))  # inside the cooldown: no refetch
    clock.advance(UNKNOWN_KID_COOLDOWN_SECONDS)
    caller = await verifier.verify(token_for(key2, clock, 2))
    assert caller.uid == "user-2"
    assert server.fetches == 2


async def test_concurrent_cold_cache_makes_one_fetch(
    verifier: TokenVerifier, server: FakeKeyServer, key1: SigningKey, clock: FakeClock
) -> None:
    server.delay = 0.05
    tokens = [token_for(key1, clock, n) for n in range(25)]
    callers = await asyncio.gather(*(verifier.verify(t) for t in tokens))
    assert [c.uid for c in callers] == [f"user-{n}" for n in range(25)]
    assert server.fetches == 1


async def test_concurrent_waiters_share_a_failed_fetch(
    verifier: TokenVerifier, server: FakeKeyServer, key1: SigningKey, clock: FakeClock
) -> None:
    server.delay = 0.05
    server.status = 500
    tokens = [token_for(key1, clock, n) for n in range(10)]
    results = await asyncio.gather(*(verifier.verify(t) for t in tokens), return_exceptions=True)
    assert all(isinstance(r, RpcError) and r.reason == AUTH_KEYS_UNAVAILABLE for r in results)
    assert server.fetches == 1


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param({"status": 500}, id="http-500"),
        pytest.param({"status": 404}, id="http-404"),
        pytest.param({"status": 302}, id="redirect"),
        pytest.param({"error": httpx.ConnectError("refused")}, id="connection-error"),
        pytest.param({"error": httpx.ReadTimeout("slow")}, id="timeout"),
    ],
)
async def test_fetch_failure_is_unavailable_never_accept(
    failure: dict[str, object],
    verifier: TokenVerifier,
    server: FakeKeyServer,
    key1: SigningKey,
    clock: FakeClock,
) -> None:
    for name, value in failure.items():
        setattr(server, name, value)
    await unavailable(verifier, token_for(key1, clock))
    # The next attempt, after the back-off, fetches again and succeeds once Google is back.
    server.status, server.error = 200, None
    await unavailable(verifier, token_for(key1, clock, 2))  # inside the back-off: fail fast
    assert server.fetches == 1
    clock.advance(FAILURE_BACKOFF_SECONDS)
    assert (await verifier.verify(token_for(key1, clock, 3))).uid == "user-3"
    assert server.fetches == 2


async def test_expired_key_set_is_not_used_when_refresh_fails(
    verifier: TokenVerifier, server: FakeKeyServer, key1: SigningKey, clock: FakeClock
) -> None:
    server.max_age = 600
    await verifier.verify(token_for(key1, clock, 1))
    clock.advance(601)
    server.status = 503
    await unavailable(verifier, token_for(key1, clock, 2))  # fail closed, no stale keys


async def test_failed_unknown_kid_refetch_keeps_the_current_set(
    verifier: TokenVerifier, server: FakeKeyServer, key1: SigningKey, clock: FakeClock
) -> None:
    await verifier.verify(token_for(key1, clock, 1))
    clock.advance(UNKNOWN_KID_COOLDOWN_SECONDS)
    server.status = 500
    await unavailable(verifier, token_for(key1, clock, 2, kid="rotated"))
    # The set fetched earlier is still within its max-age, so known kids keep working.
    assert (await verifier.verify(token_for(key1, clock, 3))).uid == "user-3"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(b"<html>not json</html>", "text/html", id="not-json"),
        pytest.param(b"[]", "application/json", id="json-array"),
        pytest.param(b"{}", "application/json", id="empty-map"),
        pytest.param(b'{"keys": []}', "application/json", id="empty-jwks"),
        pytest.param(b'{"kid-1": "not a certificate"}', "application/json", id="bad-pem"),
    ],
)
async def test_unusable_key_documents_are_unavailable(
    body: bytes, content_type: str, key1: SigningKey, clock: FakeClock
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Content-Type": content_type})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    async with http, TokenVerifier(PROJECT, http=http, clock=clock) as verifier:
        await unavailable(verifier, token_for(key1, clock))


def test_parse_key_set_skips_unusable_jwks_entries(key1: SigningKey, key2: SigningKey) -> None:
    good = key1.jwk()
    doc = {
        "keys": [
            good,
            {**key2.jwk(), "kty": "EC"},
            {**key2.jwk(), "alg": "RS512"},
            {**key2.jwk(), "use": "enc"},
            {k: v for k, v in key2.jwk().items() if k != "kid"},
            {**key2.jwk(), "kid": "broken", "n": "!!"},
            "not-an-object",
        ]
    }
    assert list(parse_key_set(doc)) == ["kid-1"]


def test_parse_key_set_detects_the_format(key1: SigningKey) -> None:
    assert list(parse_key_set({"keys": [key1.jwk()]})) == ["kid-1"]
    assert list(parse_key_set({"kid-1": key1.cert_pem})) == ["kid-1"]
    with pytest.raises(KeySetError):
        parse_key_set({"kid-1": 12})


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("public, max-age=19845, must-revalidate, no-transform", 19845),
        ("MAX-AGE=60", 60),
        ('max-age="120"', 120),
        ("public", None),
        ("", None),
        ("max-age=abc", None),
        ("no-store", 0),
        ("max-age=600, no-cache", 0),
    ],
)
def test_parse_max_age(header: str, expected: int | None) -> None:
    assert parse_max_age(header) == expected


@pytest.mark.parametrize(
    ("headers", "ttl"),
    [
        ({"Cache-Control": "max-age=3600"}, 3600.0),
        ({"Cache-Control": "max-age=3600", "Age": "600"}, 3000.0),
        ({"Cache-Control": "max-age=3600", "Age": "3590"}, MIN_KEYS_TTL_SECONDS),
        ({"Cache-Control": "max-age=999999999"}, MAX_KEYS_TTL_SECONDS),
        ({}, MIN_KEYS_TTL_SECONDS),
    ],
)
def test_cache_ttl(headers: dict[str, str], ttl: float) -> None:
    assert cache_ttl(httpx.Headers(headers)) == ttl
