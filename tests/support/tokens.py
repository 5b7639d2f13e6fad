"""Minting Firebase-style ID tokens for tests, and a stand-in for Google's key endpoint."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from rpc_common.auth import TokenVerifier

PROJECT_ID = "native1api-test"
CERTS_URL = "https://certs.test/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"


def _self_signed_pem(key: rsa.RSAPrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "securetoken.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class TokenFactory:
    """An RSA signing key published like Google's securetoken keys, and ID tokens signed by it."""

    def __init__(self, project_id: str = PROJECT_ID, kid: str = "test-kid-1") -> None:
        self.project_id = project_id
        self.kid = kid
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._pem = _self_signed_pem(self._key)
        self.fetches = 0

    def claims(self, uid: str, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": f"https://securetoken.google.com/{self.project_id}",
            "aud": self.project_id,
            "auth_time": now - 10,
            "user_id": uid,
            "sub": uid,
            "iat": now - 10,
            "exp": now + 3600,
            "firebase": {"identities": {}, "sign_in_provider": "password"},
        }
        claims.update(overrides)
        return claims

    def mint(self, uid: str, **overrides: Any) -> str:
        """A valid RS256 ID token for `uid` (claims overridable)."""
        return jwt.encode(
            self.claims(uid, **overrides), self._key, algorithm="RS256", headers={"kid": self.kid}
        )

    def mint_emulator(self, uid: str, **overrides: Any) -> str:
        """An unsigned token shaped like the Firebase Auth Emulator's (alg none, no signature)."""
        return jwt.encode(self.claims(uid, **overrides), "", algorithm="none")

    def _handler(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        return httpx.Response(
            200,
            json={self.kid: self._pem},
            headers={"Cache-Control": "public, max-age=3600"},
        )

    def verifier(self, **options: Any) -> TokenVerifier:
        """A verifier whose key fetches are answered by this factory, in process; `options`
        are TokenVerifier's (e.g. allowed_sign_in_providers)."""
        http = httpx.AsyncClient(transport=httpx.MockTransport(self._handler))
        return TokenVerifier(self.project_id, certs_url=CERTS_URL, http=http, **options)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying `token` as the caller's credential."""
    return (("authorization", f"Bearer {token}"),)
