"""Minting Firebase App Check tokens for tests, a stand-in for Google's App Check JWKS endpoint,
and the attack table every App Check suite runs (SPEC §11)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jwt.algorithms import RSAAlgorithm

from rpc_common.auth import AppCheckMode, AppCheckSettings, AppCheckVerifier

PROJECT_NUMBER = "123456789012"
OTHER_PROJECT_NUMBER = "999999999999"
APP_ID = f"1:{PROJECT_NUMBER}:web:0a1b2c3d4e5f6789"
OTHER_APP_ID = f"1:{PROJECT_NUMBER}:android:fedcba9876543210"  # same project, not allowed
JWKS_URL = "https://appcheck.test/v1/jwks"
ISSUER = f"https://firebaseappcheck.googleapis.com/{PROJECT_NUMBER}"
METADATA_KEY = "x-firebase-appcheck"
# The names of `AppCheckFactory.attacks()`, for parametrising at collection time.
ATTACKS = (
    "wrong-iss-project",
    "wrong-iss-id-token",
    "aud-other-project",
    "aud-string",
    "expired",
    "iat-in-future",
    "hs256-public-key",
    "alg-none",
    "unknown-kid",
    "typ-not-jwt",
    "forged-signature",
    "app-not-allowed",
    "garbage",
    "garbage-three-parts",
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64json(obj: Mapping[str, Any]) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


class AppCheckFactory:
    """An RSA key published as Google's App Check JWKS, and App Check tokens signed by it."""

    def __init__(self, project_number: str = PROJECT_NUMBER, kid: str = "appcheck-kid-1") -> None:
        self.project_number = project_number
        self.kid = kid
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        # A key Google never published, used with the real kid to forge signatures.
        self._rogue = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.fetches = 0

    def settings(
        self, mode: AppCheckMode, app_ids: frozenset[str] = frozenset({APP_ID})
    ) -> AppCheckSettings:
        return AppCheckSettings(
            mode=mode, project_number=self.project_number, app_ids=app_ids, jwks_url=JWKS_URL
        )

    def claims(self, app_id: str = APP_ID, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": app_id,
            "aud": [f"projects/{self.project_number}", "projects/native1api-test"],
            "provider": "recaptcha_enterprise",
            "iss": f"https://firebaseappcheck.googleapis.com/{self.project_number}",
            "iat": now - 5,
            "exp": now + 3600,
            "jti": uuid.uuid4().hex,  # every token distinct, so no cache answers for another
        }
        claims.update(overrides)
        return claims

    def mint(
        self,
        app_id: str = APP_ID,
        *,
        headers: Mapping[str, Any] | None = None,
        rogue: bool = False,
        **overrides: Any,
    ) -> str:
        """A valid App Check token (claims and header members overridable)."""
        return jwt.encode(
            self.claims(app_id, **overrides),
            self._rogue if rogue else self._key,
            algorithm="RS256",
            headers={"kid": self.kid, "typ": "JWT", **(headers or {})},
        )

    def hs256_with_public_key(self) -> str:
        """The key-confusion attack: HS256 with the RSA public key PEM as the HMAC secret."""
        pem = self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        header = _b64json({"alg": "HS256", "typ": "JWT", "kid": self.kid})
        signing_input = f"{header}.{_b64json(self.claims())}"
        mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(mac)}"

    def unsigned(self) -> str:
        """alg "none", empty signature."""
        header = {"alg": "none", "typ": "JWT", "kid": self.kid}
        return f"{_b64json(header)}.{_b64json(self.claims())}."

    def signed_raw(self, header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
        """Correctly RS256-signed, with any header (pyjwt checks headers it encodes)."""
        signing_input = f"{_b64json(header)}.{_b64json(claims)}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}"

    def jwks(self) -> dict[str, Any]:
        entry: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        entry.update(kid=self.kid, alg="RS256", use="sig")
        return {"keys": [entry]}

    def _handler(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        assert str(request.url) == JWKS_URL
        return httpx.Response(200, json=self.jwks(), headers={"Cache-Control": "max-age=21600"})

    def verifier(self, settings: AppCheckSettings) -> AppCheckVerifier:
        """A verifier whose JWKS fetches are answered by this factory, in process."""
        http = httpx.AsyncClient(transport=httpx.MockTransport(self._handler))
        return AppCheckVerifier.from_settings(settings, http=http)

    def attacks(self) -> dict[str, str]:
        """Every token `enforce` must refuse, by name (SPEC §11's attack table)."""
        now = int(time.time())
        table = {
            "wrong-iss-project": self.mint(
                iss=f"https://firebaseappcheck.googleapis.com/{OTHER_PROJECT_NUMBER}"
            ),
            "wrong-iss-id-token": self.mint(iss=f"https://securetoken.google.com/{PROJECT_NUMBER}"),
            "aud-other-project": self.mint(
                aud=[f"projects/{OTHER_PROJECT_NUMBER}", "projects/someone-else"]
            ),
            "aud-string": self.mint(aud=f"projects/{self.project_number}"),
            "expired": self.mint(iat=now - 7200, exp=now - 3600),
            "iat-in-future": self.mint(iat=now + 600, exp=now + 4200),
            "hs256-public-key": self.hs256_with_public_key(),
            "alg-none": self.unsigned(),
            "unknown-kid": self.mint(headers={"kid": "not-a-published-kid"}),
            "typ-not-jwt": self.mint(headers={"typ": "at+jwt"}),
            "forged-signature": self.mint(rogue=True),
            "app-not-allowed": self.mint(OTHER_APP_ID),
            "garbage": "not-an-app-check-token",
            "garbage-three-parts": "abc.def.ghi",
        }
        assert tuple(table) == ATTACKS
        return table


def app_check(token: str) -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying an App Check token."""
    return ((METADATA_KEY, token),)
