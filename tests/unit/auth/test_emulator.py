"""Emulator mode: only unsigned emulator tokens, every claim rule still applied, one warning."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from rpc_common.auth import AuthError, AuthSettings, TokenVerifier
from rpc_common.auth.errors import TOKEN_EXPIRED, TOKEN_INVALID, TOKEN_WRONG_PROJECT

from .tokens import PROJECT, FakeClock, FakeKeyServer, SigningKey, claims, sign, unsigned


@pytest.fixture
async def emulator(
    http: httpx.AsyncClient, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[TokenVerifier]:
    with caplog.at_level(logging.WARNING, logger="rpc_common.auth"):
        verifier = TokenVerifier(PROJECT, emulator=True, http=http, clock=clock)
    yield verifier
    await verifier.aclose()


def emulator_claims(now: float) -> dict[str, object]:
    # The shape firebase-tools' Auth Emulator mints (operations.ts generateJwt).
    return claims(
        now,
        firebase={"identities": {"email": ["user@example.test"]}, "sign_in_provider": "password"},
        email_verified=False,
    )


async def test_accepts_unsigned_emulator_token_without_fetching_keys(
    emulator: TokenVerifier, server: FakeKeyServer, clock: FakeClock
) -> None:
    caller = await emulator.verify(unsigned(emulator_claims(clock())))
    assert caller.uid == "user-1"
    assert server.fetches == 0


def test_warns_once_at_construction(
    emulator: TokenVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    warnings = [r for r in caplog.get_records("setup") if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "not checked" in warnings[0].getMessage().lower()


async def test_no_warning_outside_emulator_mode(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rpc_common.auth"):
        verifier = TokenVerifier(PROJECT)
    await verifier.aclose()
    assert not caplog.records


async def test_still_rejects_expired(emulator: TokenVerifier, clock: FakeClock) -> None:
    with pytest.raises(AuthError) as info:
        await emulator.verify(unsigned(claims(clock() - 7200)))
    assert info.value.reason == TOKEN_EXPIRED


async def test_still_rejects_wrong_audience(emulator: TokenVerifier, clock: FakeClock) -> None:
    with pytest.raises(AuthError) as info:
        await emulator.verify(unsigned(claims(clock(), aud="another-project")))
    assert info.value.reason == TOKEN_WRONG_PROJECT


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"sub": ""}, id="empty-sub"),
        pytest.param({"iss": "https://securetoken.google.com/x"}, id="wrong-iss"),
        pytest.param({"auth_time": 1_900_000_000 + 600}, id="auth_time-future"),
        pytest.param({"exp": "1999999999"}, id="exp-string"),
    ],
)
async def test_still_applies_claim_rules(
    overrides: dict[str, object], emulator: TokenVerifier, clock: FakeClock
) -> None:
    with pytest.raises(AuthError):
        await emulator.verify(unsigned(claims(clock(), **overrides)))


async def test_rejects_signed_tokens(
    emulator: TokenVerifier, key1: SigningKey, clock: FakeClock
) -> None:
    with pytest.raises(AuthError) as info:
        await emulator.verify(sign(claims(clock()), key1))
    assert info.value.reason == TOKEN_INVALID


async def test_rejects_alg_none_with_a_signature(emulator: TokenVerifier, clock: FakeClock) -> None:
    with pytest.raises(AuthError) as info:
        await emulator.verify(unsigned(claims(clock()), signature="c2ln"))
    assert info.value.reason == TOKEN_INVALID


async def test_from_settings_turns_emulator_mode_on(caplog: pytest.LogCaptureFixture) -> None:
    settings = AuthSettings.from_env(
        {"FIREBASE_PROJECT_ID": PROJECT, "FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:9099"}
    )
    with caplog.at_level(logging.WARNING, logger="rpc_common.auth"):
        verifier = TokenVerifier.from_settings(settings)
    assert verifier.emulator
    assert verifier.key_source is None
    assert len(caplog.records) == 1
    await verifier.aclose()
