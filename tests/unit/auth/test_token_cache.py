"""The verified-token cache: no RSA work on a hit, `exp` re-checked on every hit, bounded size."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from jwt.algorithms import RSAAlgorithm

from rpc_common.auth import AuthError, TokenVerifier
from rpc_common.auth.errors import TOKEN_EXPIRED

from .tokens import PROJECT, FakeClock, FakeKeyServer, SigningKey, claims, sign


@pytest.fixture
def rsa_verifications(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts RSA signature verifications (pyjwt's RSAAlgorithm.verify)."""
    calls: list[int] = []
    original = RSAAlgorithm.verify

    def spy(self: RSAAlgorithm, msg: bytes, key: Any, sig: bytes) -> bool:
        calls.append(1)
        return original(self, msg, key, sig)

    monkeypatch.setattr(RSAAlgorithm, "verify", spy)
    return calls


async def test_second_verify_does_no_rsa_work(
    verifier: TokenVerifier,
    server: FakeKeyServer,
    key1: SigningKey,
    clock: FakeClock,
    rsa_verifications: list[int],
) -> None:
    token = sign(claims(clock()), key1)
    first = await verifier.verify(token)
    assert len(rsa_verifications) == 1
    clock.advance(60)
    second = await verifier.verify(token)
    assert second == first
    assert len(rsa_verifications) == 1
    assert server.fetches == 1


async def test_cached_token_is_rejected_once_expired(
    verifier: TokenVerifier, key1: SigningKey, clock: FakeClock, rsa_verifications: list[int]
) -> None:
    token = sign(claims(clock()), key1)  # exp = now + 3600
    await verifier.verify(token)
    clock.advance(3600 + 11)  # past exp plus the clock-skew allowance
    with pytest.raises(AuthError) as info:
        await verifier.verify(token)
    assert info.value.reason == TOKEN_EXPIRED
    assert token not in str(info.value)
    assert len(rsa_verifications) == 1  # rejected by the cache's own exp check


async def test_rejections_are_not_cached(
    verifier: TokenVerifier, key1: SigningKey, clock: FakeClock
) -> None:
    token = sign(claims(clock(), iat=int(clock()) + 300, exp=int(clock()) + 3900), key1)
    for _ in range(2):
        with pytest.raises(AuthError):
            await verifier.verify(token)
    clock.advance(300)  # now the token is valid
    assert (await verifier.verify(token)).uid == "user-1"


async def test_cache_is_bounded_lru(
    http: httpx.AsyncClient, key1: SigningKey, clock: FakeClock, rsa_verifications: list[int]
) -> None:
    async with TokenVerifier(PROJECT, http=http, clock=clock, cache_size=2) as verifier:
        a, b, c = (sign(claims(clock(), sub=s), key1) for s in "abc")
        await verifier.verify(a)
        await verifier.verify(b)
        await verifier.verify(a)  # hit: a becomes most recent
        assert len(rsa_verifications) == 2
        await verifier.verify(c)  # evicts b
        await verifier.verify(a)
        assert len(rsa_verifications) == 3
        await verifier.verify(b)
        assert len(rsa_verifications) == 4
