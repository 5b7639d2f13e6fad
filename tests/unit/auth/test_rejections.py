"""Every rule of SPEC §4: each token here breaks exactly one rule and must be rejected."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import pytest

from rpc_common.auth import AuthError, Caller, TokenVerifier
from rpc_common.auth.errors import (
    TOKEN_EXPIRED,
    TOKEN_INVALID,
    TOKEN_MALFORMED,
    TOKEN_MISSING,
    TOKEN_NOT_YET_VALID,
    TOKEN_WRONG_PROJECT,
    TOKEN_WRONG_TYPE,
)

from .tokens import (
    DROP,
    PROJECT,
    T0,
    FakeClock,
    FakeKeyServer,
    SigningKey,
    b64json,
    claims,
    hs256_with_public_pem,
    rs256_raw,
    sign,
    unsigned,
)

CUSTOM_AUD = (
    "https://identitytoolkit.googleapis.com/google.identity.identitytoolkit.v1.IdentityToolkit"
)

Builder = Callable[[SigningKey, SigningKey, float], str]


def assert_secret_free(error: Exception, token: str) -> None:
    """Neither the token nor its payload or signature segment appears in what a caller/log sees."""
    texts = [str(error), repr(error), *(str(arg) for arg in error.args)]
    if isinstance(error, AuthError):
        texts.append(error.message)
    pieces = [part for part in (token, *token.split(".")[1:]) if len(part) > 8]
    for text in texts:
        for piece in pieces:
            assert piece not in text


async def rejected(verifier: TokenVerifier, token: str, reason: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        await verifier.verify(token)
    error = info.value
    assert error.code is grpc.StatusCode.UNAUTHENTICATED
    assert error.reason == reason, error.message
    assert error.message
    assert_secret_free(error, token)
    return error


def rs(**overrides: Any) -> Builder:
    """A token signed by the published key, with some claims overridden."""
    return lambda k, _rogue, now: sign(claims(now, **overrides), k)


CASES: dict[str, tuple[Builder, str, str]] = {
    # id: (token builder, expected reason, substring of the message)
    "expired": (
        lambda k, _r, now: sign(claims(now - 7200), k),
        TOKEN_EXPIRED,
        "expired",
    ),
    "expired-just-past-skew": (rs(iat=T0 - 3600, exp=T0 - 11), TOKEN_EXPIRED, "expired"),
    "iat-in-future": (
        lambda k, _r, now: sign(claims(now, iat=int(now) + 300, exp=int(now) + 3900), k),
        TOKEN_NOT_YET_VALID,
        "iat",
    ),
    "auth_time-in-future": (
        lambda k, _r, now: sign(claims(now, auth_time=int(now) + 300), k),
        TOKEN_NOT_YET_VALID,
        "authentication time",
    ),
    "nbf-in-future": (
        lambda k, _r, now: sign(claims(now, nbf=int(now) + 300), k),
        TOKEN_NOT_YET_VALID,
        "nbf",
    ),
    "iat-after-exp": (
        lambda k, _r, now: sign(claims(now, iat=int(now), exp=int(now) - 1), k),
        TOKEN_INVALID,
        "after it expires",
    ),
    "wrong-aud": (rs(aud="another-project"), TOKEN_WRONG_PROJECT, "different Firebase project"),
    "aud-list": (rs(aud=[PROJECT]), TOKEN_INVALID, "single string"),
    "aud-list-with-other": (rs(aud=[PROJECT, "other"]), TOKEN_INVALID, "single string"),
    "wrong-iss-project": (
        rs(iss="https://securetoken.google.com/another-project"),
        TOKEN_WRONG_PROJECT,
        "different Firebase project",
    ),
    "wrong-iss-prefix-trick": (
        rs(iss=f"https://securetoken.google.com/{PROJECT}.evil"),
        TOKEN_WRONG_PROJECT,
        "different Firebase project",
    ),
    "wrong-iss-host": (rs(iss=f"https://evil.example/{PROJECT}"), TOKEN_INVALID, "iss"),
    "empty-sub": (rs(sub=""), TOKEN_INVALID, "sub"),
    "sub-129-chars": (rs(sub="u" * 129), TOKEN_INVALID, "128"),
    "sub-int": (rs(sub=10), TOKEN_INVALID, "sub"),
    "exp-string": (
        lambda k, _r, now: sign(claims(now, exp=str(int(now) + 3600)), k),
        TOKEN_INVALID,
        '"exp" claim must be an integer',
    ),
    "exp-float": (
        lambda k, _r, now: sign(claims(now, exp=now + 3600.5), k),
        TOKEN_INVALID,
        '"exp" claim must be an integer',
    ),
    "iat-bool": (rs(iat=True), TOKEN_INVALID, '"iat" claim must be an integer'),
    "auth_time-string": (
        lambda k, _r, now: sign(claims(now, auth_time=str(int(now))), k),
        TOKEN_INVALID,
        '"auth_time" claim must be an integer',
    ),
    "no-exp": (rs(exp=DROP), TOKEN_INVALID, '"exp"'),
    "no-iat": (rs(iat=DROP), TOKEN_INVALID, '"iat"'),
    "no-auth_time": (rs(auth_time=DROP), TOKEN_INVALID, '"auth_time"'),
    "no-sub": (rs(sub=DROP), TOKEN_INVALID, "sub"),
    "no-aud": (rs(aud=DROP), TOKEN_INVALID, "aud"),
    "no-iss": (rs(iss=DROP), TOKEN_INVALID, "iss"),
    "alg-none": (
        lambda k, _r, now: unsigned(claims(now), kid=k.kid),
        TOKEN_INVALID,
        "unsigned",
    ),
    "alg-NONE": (
        lambda k, _r, now: f"{b64json({'alg': 'NONE', 'kid': k.kid})}.{b64json(claims(now))}.",
        TOKEN_INVALID,
        "unsigned",
    ),
    "hs256-with-public-key-pem": (
        lambda k, _r, now: hs256_with_public_pem(claims(now), k),
        TOKEN_INVALID,
        "RS256",
    ),
    "rs512": (
        lambda k, _r, now: sign(claims(now), k, alg="RS512"),
        TOKEN_INVALID,
        "RS256",
    ),
    "ps256": (
        lambda k, _r, now: sign(claims(now), k, alg="PS256"),
        TOKEN_INVALID,
        "RS256",
    ),
    "missing-kid": (
        lambda k, _r, now: sign(claims(now), k, kid=DROP),
        TOKEN_INVALID,
        "kid",
    ),
    "kid-not-a-string": (
        lambda k, _r, now: rs256_raw({"alg": "RS256", "kid": 1}, claims(now), k),
        TOKEN_INVALID,
        "",
    ),
    "empty-kid": (
        lambda k, _r, now: rs256_raw({"alg": "RS256", "kid": ""}, claims(now), k),
        TOKEN_INVALID,
        "kid",
    ),
    "unknown-kid": (
        lambda k, _r, now: sign(claims(now), k, kid="no-such-kid"),
        TOKEN_INVALID,
        "kid",
    ),
    "signed-by-another-key": (
        lambda _k, rogue, now: sign(claims(now), rogue),
        TOKEN_INVALID,
        "signature",
    ),
    "tampered-payload": (
        lambda k, _r, now: ".".join(
            (lambda parts: [parts[0], b64json(claims(now, sub="admin")), parts[2]])(
                sign(claims(now), k).split(".")
            )
        ),
        TOKEN_INVALID,
        "signature",
    ),
    "custom-token-audience": (rs(aud=CUSTOM_AUD), TOKEN_WRONG_TYPE, "custom token"),
    "session-cookie-issuer": (
        rs(iss=f"https://session.firebase.google.com/{PROJECT}"),
        TOKEN_WRONG_TYPE,
        "session cookie",
    ),
    "jku-header": (
        lambda k, _r, now: sign(claims(now), k, headers={"jku": "https://evil.example/jwks"}),
        TOKEN_INVALID,
        "jku",
    ),
    "x5u-header": (
        lambda k, _r, now: sign(claims(now), k, headers={"x5u": "https://evil.example/cert"}),
        TOKEN_INVALID,
        "x5u",
    ),
    "jwk-header": (
        lambda k, _r, now: sign(claims(now), k, headers={"jwk": k.jwk()}),
        TOKEN_INVALID,
        "jwk",
    ),
    "x5c-header": (
        lambda k, _r, now: sign(claims(now), k, headers={"x5c": ["MIIB"]}),
        TOKEN_INVALID,
        "x5c",
    ),
    "crit-header": (
        lambda k, _r, now: sign(claims(now), k, headers={"crit": ["exp"]}),
        TOKEN_INVALID,
        "crit",
    ),
    "crit-b64-header": (
        # pyjwt understands "b64" (RFC 7797) and lets this through; Firebase never sends crit.
        lambda k, _r, now: rs256_raw(
            {"alg": "RS256", "kid": k.kid, "crit": ["b64"], "b64": True}, claims(now), k
        ),
        TOKEN_INVALID,
        "crit",
    ),
    "garbage": (lambda _k, _r, _now: "garbage", TOKEN_MALFORMED, "not a JWT"),
    "garbage-three-parts": (lambda _k, _r, _now: "a.b.c", TOKEN_MALFORMED, "decoded"),
    "dots-only": (lambda _k, _r, _now: "..", TOKEN_MALFORMED, "decoded"),
    "four-parts": (lambda k, _r, now: sign(claims(now), k) + ".x", TOKEN_MALFORMED, "not a JWT"),
    "non-ascii": (lambda k, _r, now: sign(claims(now), k) + "é", TOKEN_MALFORMED, "not a JWT"),
    "payload-not-object": (
        lambda k, _r, _now: rs256_raw({"alg": "RS256", "kid": k.kid}, {"a": 1}, k).replace(
            b64json({"a": 1}), "WzFd"
        ),
        TOKEN_MALFORMED,
        "decoded",
    ),
    "over-8-kib": (
        lambda k, _r, now: sign(claims(now, pad="x" * 8192), k),
        TOKEN_MALFORMED,
        "too large",
    ),
    "empty": (lambda _k, _r, _now: "", TOKEN_MISSING, "no ID token"),
}


@pytest.mark.parametrize("case", CASES)
async def test_rejected(
    case: str,
    verifier: TokenVerifier,
    key1: SigningKey,
    rogue: SigningKey,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    build, reason, fragment = CASES[case]
    token = build(key1, rogue, clock())
    error = await rejected(verifier, token, reason)
    assert fragment in error.message
    if len(token) > 8:
        assert token not in caplog.text


async def test_valid_token_x509_keys(
    verifier: TokenVerifier, key1: SigningKey, clock: FakeClock, server: FakeKeyServer
) -> None:
    token = sign(claims(clock()), key1)
    caller = await verifier.verify(token)
    assert caller.uid == "user-1"
    assert caller.claims["email"] == "user@example.test"
    assert caller.token == token
    assert token not in repr(caller)
    assert "user@example.test" not in repr(caller)
    assert server.fmt == "x509"
    assert server.fetches == 1


async def test_valid_token_jwks_keys(
    http: httpx.AsyncClient, key1: SigningKey, clock: FakeClock, server: FakeKeyServer
) -> None:
    server.fmt = "jwks"
    async with TokenVerifier(PROJECT, http=http, clock=clock) as verifier:
        caller = await verifier.verify(sign(claims(clock()), key1))
    assert caller.uid == "user-1"
    assert server.fetches == 1


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"sub": "u" * 128}, id="sub-128-chars"),
        pytest.param({"iat": T0 - 3600, "exp": T0 - 5}, id="exp-within-skew"),
        pytest.param({"iat": T0 + 5}, id="iat-within-skew"),
        pytest.param({"auth_time": T0 + 5}, id="auth_time-within-skew"),
    ],
)
async def test_boundaries_accepted(
    overrides: dict[str, Any], verifier: TokenVerifier, key1: SigningKey, clock: FakeClock
) -> None:
    caller = await verifier.verify(sign(claims(clock(), **overrides), key1))
    assert isinstance(caller, Caller)
