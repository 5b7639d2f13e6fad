"""AppCheckVerifier and the App Check policy (SPEC §11), against a fake JWKS endpoint and clock.

Every header and claim rule is pinned by a rejection; rules that run before the key lookup are
also pinned by "no key fetch" (so dropping the explicit check, and leaving it to pyjwt, fails).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import httpx
import pytest
from prometheus_client import CollectorRegistry

from rpc_common.auth import (
    APP_CHECK_FAILED,
    APP_CHECK_KEYS_UNAVAILABLE,
    AppCheck,
    AppCheckError,
    AppCheckMode,
    AppCheckSettings,
    AppCheckVerifier,
    app_check_counter,
    require_app_check,
)
from rpc_common.auth.app_check import (
    AppCheckToken,
    app_check_token,
    check_app_check_claims,
    check_app_check_header,
)
from rpc_common.auth.constants import CLOCK_SKEW_SECONDS
from rpc_common.auth.keys import UNKNOWN_KID_COOLDOWN_SECONDS
from rpc_common.logging import redact
from rpc_common.status import RpcError

from .tokens import (
    DROP,
    PROJECT,
    FakeClock,
    FakeKeyServer,
    SigningKey,
    b64json,
    hs256_with_public_pem,
    rs256_raw,
    sign,
    unsigned,
)

NUMBER = "123456789012"
APP = f"1:{NUMBER}:web:0a1b2c3d4e5f"
OTHER_APP = f"1:{NUMBER}:ios:99aa88bb77cc"
ISSUER = f"https://firebaseappcheck.googleapis.com/{NUMBER}"
AUDIENCE = f"projects/{NUMBER}"
JWKS_URL = "https://appcheck.test/v1/jwks"


def ac_claims(now: float, **overrides: Any) -> dict[str, Any]:
    """Claims of a valid App Check token issued at `now`; `name=DROP` removes a claim."""
    t = int(now)
    base: dict[str, Any] = {
        "sub": APP,
        "aud": [AUDIENCE, f"projects/{PROJECT}"],
        "provider": "play_integrity",
        "iss": ISSUER,
        "iat": t,
        "exp": t + 3600,
        "jti": "jti-1",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not DROP}


def ac_token(key: SigningKey, clock: FakeClock, **overrides: Any) -> str:
    return sign(ac_claims(clock(), **overrides), key, headers={"typ": "JWT"})


def header(key: SigningKey, **members: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"alg": "RS256", "typ": "JWT", "kid": key.kid}
    base.update(members)
    return {k: v for k, v in base.items() if v is not DROP}


@pytest.fixture
def jwks(key1: SigningKey) -> FakeKeyServer:
    return FakeKeyServer(keys=[key1], fmt="jwks", max_age=3600)


@pytest.fixture
async def app_verifier(jwks: FakeKeyServer, clock: FakeClock) -> AsyncIterator[AppCheckVerifier]:
    async with (
        jwks.client() as http,
        AppCheckVerifier(
            NUMBER, app_ids=frozenset({APP}), jwks_url=JWKS_URL, http=http, clock=clock
        ) as verifier,
    ):
        yield verifier


async def rejected(verifier: AppCheckVerifier, token: str) -> AppCheckError:
    with pytest.raises(AppCheckError) as caught:
        await verifier.verify(token)
    error = caught.value
    assert error.code is grpc.StatusCode.UNAUTHENTICATED
    assert error.reason == APP_CHECK_FAILED
    assert error.metadata == {"code": "invalid_app_check_token"}
    assert error.message.startswith("App Check token")
    for text in (error.message, str(error), repr(error)):
        assert token not in text
        assert redact(text) == text
    return error


async def test_a_valid_token_is_accepted(
    app_verifier: AppCheckVerifier, jwks: FakeKeyServer, key1: SigningKey, clock: FakeClock
) -> None:
    verified = await app_verifier.verify(ac_token(key1, clock))
    assert verified == AppCheckToken(app_id=APP, exp=int(clock()) + 3600)
    assert jwks.urls == [JWKS_URL]


async def test_any_app_of_the_project_without_an_allowlist(
    jwks: FakeKeyServer, key1: SigningKey, clock: FakeClock
) -> None:
    async with jwks.client() as http:
        verifier = AppCheckVerifier(NUMBER, jwks_url=JWKS_URL, http=http, clock=clock)
        assert (await verifier.verify(ac_token(key1, clock, sub=OTHER_APP))).app_id == OTHER_APP


async def test_the_clock_skew_boundaries_are_accepted(
    app_verifier: AppCheckVerifier, key1: SigningKey, clock: FakeClock
) -> None:
    now = int(clock())
    await app_verifier.verify(
        ac_token(key1, clock, iat=now - 3600, exp=now - CLOCK_SKEW_SECONDS + 1)
    )
    await app_verifier.verify(ac_token(key1, clock, iat=now + CLOCK_SKEW_SECONDS))


# (id, token builder, fragment of the message, key fetches expected: 0 = refused before lookup)
Builder = Callable[[SigningKey, SigningKey, FakeClock], str]
REJECTIONS: list[tuple[str, Builder, str, int]] = [
    # --- claims ---
    ("iss-other-project", lambda k, r, c: ac_token(k, c, iss="https://firebaseappcheck.googleapis.com/1"), "different Firebase project", 0),
    ("iss-id-token", lambda k, r, c: ac_token(k, c, iss=f"https://securetoken.google.com/{NUMBER}"), '"iss"', 0),
    ("iss-missing", lambda k, r, c: ac_token(k, c, iss=DROP), '"iss"', 0),
    ("iss-prefix-only", lambda k, r, c: ac_token(k, c, iss=ISSUER + "0"), "different Firebase project", 0),
    ("aud-string", lambda k, r, c: ac_token(k, c, aud=AUDIENCE), "must be a list", 0),
    ("aud-other-project", lambda k, r, c: ac_token(k, c, aud=["projects/1", f"projects/{PROJECT}"]), "does not include", 0),
    ("aud-project-id-only", lambda k, r, c: ac_token(k, c, aud=[f"projects/{PROJECT}"]), "does not include", 0),
    ("aud-missing", lambda k, r, c: ac_token(k, c, aud=DROP), "must be a list", 0),
    ("sub-missing", lambda k, r, c: ac_token(k, c, sub=DROP), '"sub"', 0),
    ("sub-empty", lambda k, r, c: ac_token(k, c, sub=""), '"sub"', 0),
    ("sub-not-a-string", lambda k, r, c: ac_token(k, c, sub=7), '"sub"', 0),
    ("sub-too-long", lambda k, r, c: ac_token(k, c, sub="a" * 129), '"sub"', 0),
    ("app-not-allowed", lambda k, r, c: ac_token(k, c, sub=OTHER_APP), "APP_CHECK_APP_IDS", 0),
    ("exp-missing", lambda k, r, c: ac_token(k, c, exp=DROP), '"exp"', 0),
    ("exp-string", lambda k, r, c: ac_token(k, c, exp=str(int(c()) + 3600)), '"exp"', 0),
    ("exp-float", lambda k, r, c: ac_token(k, c, exp=c() + 3600.5), '"exp"', 0),
    ("exp-bool", lambda k, r, c: ac_token(k, c, exp=True), '"exp"', 0),
    ("iat-missing", lambda k, r, c: ac_token(k, c, iat=DROP), '"iat"', 0),
    ("iat-string", lambda k, r, c: ac_token(k, c, iat="0"), '"iat"', 0),
    ("expired", lambda k, r, c: ac_token(k, c, iat=int(c()) - 7200, exp=int(c()) - CLOCK_SKEW_SECONDS), "expired", 0),
    ("iat-in-future", lambda k, r, c: ac_token(k, c, iat=int(c()) + CLOCK_SKEW_SECONDS + 1), "future", 0),
    ("iat-after-exp", lambda k, r, c: ac_token(k, c, iat=int(c()), exp=int(c()) - 1), "after it expires", 0),
    ("nbf-in-future", lambda k, r, c: ac_token(k, c, nbf=int(c()) + 600), '"nbf"', 0),
    # --- header ---
    ("alg-none", lambda k, r, c: unsigned(ac_claims(c()), kid=k.kid), "unsigned", 0),
    ("alg-hs256-public-key", lambda k, r, c: hs256_with_public_pem(ac_claims(c()), k), '"RS256"', 0),
    ("alg-rs512", lambda k, r, c: rs256_raw(header(k, alg="RS512"), ac_claims(c()), k), '"RS256"', 0),
    ("typ-missing", lambda k, r, c: rs256_raw(header(k, typ=DROP), ac_claims(c()), k), '"typ"', 0),
    ("typ-not-jwt", lambda k, r, c: rs256_raw(header(k, typ="at+jwt"), ac_claims(c()), k), '"typ"', 0),
    ("kid-missing", lambda k, r, c: rs256_raw(header(k, kid=DROP), ac_claims(c()), k), '"kid"', 0),
    ("kid-not-a-string", lambda k, r, c: rs256_raw(header(k, kid=1), ac_claims(c()), k), "kid", 0),
    ("kid-too-long", lambda k, r, c: rs256_raw(header(k, kid="k" * 257), ac_claims(c()), k), '"kid"', 0),
    ("jku", lambda k, r, c: rs256_raw(header(k, jku="https://evil.test/keys"), ac_claims(c()), k), "key material", 0),
    ("crit", lambda k, r, c: rs256_raw(header(k, crit=["exp"]), ac_claims(c()), k), "crit", 0),
    # --- shape ---
    ("garbage", lambda k, r, c: "not-an-app-check-token", "not a JWT", 0),
    ("garbage-three-parts", lambda k, r, c: "abc.def.ghi", "decoded", 0),
    ("payload-not-an-object", lambda k, r, c: f"{b64json(header(k))}.WzFd.c2ln", "decoded", 0),
    ("non-ascii", lambda k, r, c: "é.b.c", "not a JWT", 0),
    ("too-large", lambda k, r, c: "a." + "b" * 9000 + ".c", "too large", 0),
    # --- key and signature ---
    ("unknown-kid", lambda k, r, c: sign(ac_claims(c()), k, kid="kid-unknown"), "current App Check signing key", 1),
    ("forged-signature", lambda k, r, c: sign(ac_claims(c()), r), "signature", 1),
]  # fmt: skip


@pytest.mark.parametrize(
    ("build", "fragment", "fetches"),
    [case[1:] for case in REJECTIONS],
    ids=[case[0] for case in REJECTIONS],
)
async def test_rejections(
    app_verifier: AppCheckVerifier,
    jwks: FakeKeyServer,
    key1: SigningKey,
    rogue: SigningKey,
    clock: FakeClock,
    build: Builder,
    fragment: str,
    fetches: int,
) -> None:
    error = await rejected(app_verifier, build(key1, rogue, clock))
    assert fragment in error.message
    assert error.result == "invalid"
    assert jwks.fetches == fetches


async def test_id_tokens_are_not_app_check_tokens(
    app_verifier: AppCheckVerifier, key1: SigningKey, clock: FakeClock
) -> None:
    from .tokens import claims as id_claims

    await rejected(app_verifier, sign(id_claims(clock()), key1))


def test_the_claim_rules_hold_on_their_own() -> None:
    """The explicit checks, without pyjwt behind them (it checks iss and aud too)."""
    now = 1_900_000_000
    rules = {"issuer": ISSUER, "audience": AUDIENCE, "app_ids": frozenset({APP}), "now": now}
    assert check_app_check_claims(ac_claims(now), **rules) == APP  # type: ignore[arg-type]
    for bad in (
        {"iss": "https://firebaseappcheck.googleapis.com/1"},
        {"aud": AUDIENCE},
        {"aud": ["projects/1"]},
        {"sub": OTHER_APP},
    ):
        with pytest.raises(AppCheckError):
            check_app_check_claims(ac_claims(now, **bad), **rules)  # type: ignore[arg-type]
    assert check_app_check_header({"alg": "RS256", "typ": "JWT", "kid": "k"}) == "k"
    with pytest.raises(AppCheckError):
        check_app_check_header({"alg": "RS256", "kid": "k"})


async def test_verified_tokens_are_cached_until_exp(
    app_verifier: AppCheckVerifier, jwks: FakeKeyServer, key1: SigningKey, clock: FakeClock
) -> None:
    jwks.max_age = 60
    token = ac_token(key1, clock, exp=int(clock()) + 600)
    await app_verifier.verify(token)
    assert jwks.fetches == 1
    # The key set expired and the endpoint no longer has the key: the cached token needs neither.
    jwks.keys = []
    clock.advance(120)
    assert (await app_verifier.verify(token)).app_id == APP
    assert jwks.fetches == 1
    clock.advance(600 - 120 + CLOCK_SKEW_SECONDS)
    error = await rejected(app_verifier, token)
    assert "expired" in error.message
    assert jwks.fetches == 1


async def test_one_fetch_for_many_tokens_and_the_unknown_kid_cooldown(
    app_verifier: AppCheckVerifier, jwks: FakeKeyServer, key1: SigningKey, clock: FakeClock
) -> None:
    for n in range(20):
        await app_verifier.verify(ac_token(key1, clock, jti=f"jti-{n}"))
        clock.advance(1)
    assert jwks.fetches == 1

    def unknown(n: int) -> str:
        return sign(ac_claims(clock(), jti=f"u-{n}"), key1, kid=f"kid-unknown-{n}")

    clock.advance(UNKNOWN_KID_COOLDOWN_SECONDS)
    await rejected(app_verifier, unknown(1))
    assert jwks.fetches == 2  # past the cooldown: one refetch, in case the keys rotated
    for n in range(2, 30):
        await rejected(app_verifier, unknown(n))
        clock.advance(0.5)
    assert jwks.fetches == 2  # within the cooldown: none, whatever kids the attacker sends
    clock.advance(UNKNOWN_KID_COOLDOWN_SECONDS)
    await rejected(app_verifier, unknown(99))
    assert jwks.fetches == 3


async def test_unavailable_keys_are_not_blamed_on_the_token(
    app_verifier: AppCheckVerifier, jwks: FakeKeyServer, key1: SigningKey, clock: FakeClock
) -> None:
    jwks.status = 503
    token = ac_token(key1, clock)
    with pytest.raises(RpcError) as caught:
        await app_verifier.verify(token)
    assert not isinstance(caught.value, AppCheckError)
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == APP_CHECK_KEYS_UNAVAILABLE
    assert token not in str(caught.value)


def test_the_metadata_entry() -> None:
    assert app_check_token([("x-firebase-appcheck", " tok ")]) == "tok"
    assert app_check_token([("X-Firebase-AppCheck", "tok")]) == "tok"
    for metadata, result in [
        ([], "missing"),
        (None, "missing"),
        ([("x-firebase-appcheck", "  ")], "missing"),
        ([("x-firebase-appcheck", "a"), ("x-firebase-appcheck", "b")], "invalid"),
        ([("x-firebase-appcheck", b"bytes")], "invalid"),
    ]:
        with pytest.raises(AppCheckError) as caught:
            app_check_token(metadata)
        assert caught.value.result == result


# --- the policy ----------------------------------------------------------------------------------


class FakeContext:
    def __init__(self, *metadata: tuple[str, str]) -> None:
        self.metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata


def policy(
    mode: AppCheckMode, verifier: AppCheckVerifier
) -> tuple[AppCheck, Callable[[], dict[str, float]]]:
    registry = CollectorRegistry()
    counter = app_check_counter("test", registry)
    app_check = AppCheck(mode, verifier, counter=counter)

    def counts() -> dict[str, float]:
        return {
            r: registry.get_sample_value("native1api_test_app_check_total", {"result": r}) or 0
            for r in ("valid", "missing", "invalid", "unavailable")
        }

    return app_check, counts


def contexts(key1: SigningKey, clock: FakeClock) -> list[FakeContext]:
    return [
        FakeContext(("x-firebase-appcheck", ac_token(key1, clock))),
        FakeContext(),
        FakeContext(("x-firebase-appcheck", "garbage")),
        FakeContext(("x-firebase-appcheck", ac_token(key1, clock, sub=OTHER_APP))),
    ]


async def test_monitor_admits_everything_and_counts(
    app_verifier: AppCheckVerifier,
    jwks: FakeKeyServer,
    key1: SigningKey,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    app_check, counts = policy(AppCheckMode.MONITOR, app_verifier)
    for context in contexts(key1, clock):
        await require_app_check(context, app_check)  # type: ignore[arg-type]
    assert counts() == {"valid": 1, "missing": 1, "invalid": 2, "unavailable": 0}
    # Keys down: admitted, counted as unavailable (nothing was decided about the token).
    clock.advance(3601)  # the key set expired, and the endpoint is down
    jwks.status = 500
    await require_app_check(
        FakeContext(("x-firebase-appcheck", ac_token(key1, clock, jti="new"))),  # type: ignore[arg-type]
        app_check,
    )
    assert counts()["unavailable"] == 1
    for record in caplog.records:
        assert redact(record.getMessage()) == record.getMessage()


async def test_enforce_refuses_and_counts(
    app_verifier: AppCheckVerifier, jwks: FakeKeyServer, key1: SigningKey, clock: FakeClock
) -> None:
    app_check, counts = policy(AppCheckMode.ENFORCE, app_verifier)
    valid, missing, garbage, other_app = contexts(key1, clock)
    await require_app_check(valid, app_check)  # type: ignore[arg-type]
    for context, result in ((missing, "missing"), (garbage, "invalid"), (other_app, "invalid")):
        with pytest.raises(AppCheckError) as caught:
            await require_app_check(context, app_check)  # type: ignore[arg-type]
        assert caught.value.result == result
    assert counts() == {"valid": 1, "missing": 1, "invalid": 2, "unavailable": 0}
    clock.advance(3601)  # the key set expired, and the endpoint is down
    jwks.status = 500
    fresh = FakeContext(("x-firebase-appcheck", ac_token(key1, clock, jti="new")))
    with pytest.raises(RpcError) as down:
        await require_app_check(fresh, app_check)  # type: ignore[arg-type]
    assert down.value.code is grpc.StatusCode.UNAVAILABLE
    assert counts()["unavailable"] == 1


async def test_off_verifies_nothing(
    app_verifier: AppCheckVerifier, jwks: FakeKeyServer, key1: SigningKey, clock: FakeClock
) -> None:
    app_check, counts = policy(AppCheckMode.OFF, app_verifier)
    assert app_check.verifier is None
    for context in contexts(key1, clock):
        await require_app_check(context, app_check)  # type: ignore[arg-type]
        await require_app_check(context, None)  # type: ignore[arg-type]
    assert counts() == dict.fromkeys(counts(), 0)
    assert jwks.fetches == 0


async def test_from_settings_builds_and_closes_its_own_verifier() -> None:
    settings = AppCheckSettings(mode=AppCheckMode.MONITOR, project_number=NUMBER)
    app_check = AppCheck.from_settings(settings)
    assert app_check.mode is AppCheckMode.MONITOR and app_check.verifier is not None
    assert app_check.verifier.key_source.url == "https://firebaseappcheck.googleapis.com/v1/jwks"
    http: httpx.AsyncClient = app_check.verifier._http
    await app_check.aclose()
    assert http.is_closed
    assert AppCheck.from_settings(AppCheckSettings()).verifier is None
    with pytest.raises(ValueError, match="verifier"):
        AppCheck(AppCheckMode.ENFORCE, None)
