"""Test helpers: RSA keys, self-signed certificates, a fake Google key endpoint, token minting."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import RSAAlgorithm

PROJECT = "demo-native1api"
ISSUER = f"https://securetoken.google.com/{PROJECT}"
CERTS_URL = "https://keys.test/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"
# A fixed instant far from the wall clock: proves every time check uses the injected clock.
T0 = 1_900_000_000
DROP = object()  # claim override meaning "leave this claim out"


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey
    cert_pem: str

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def jwk(self) -> dict[str, Any]:
        entry: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        entry.update(kid=self.kid, alg="RS256", use="sig")
        return entry


def make_signing_key(kid: str) -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "securetoken.system.test")])
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=3650))
        .sign(private, hashes.SHA256())
    )
    return SigningKey(kid, private, cert.public_bytes(serialization.Encoding.PEM).decode())


@dataclass
class FakeKeyServer:
    """Google's key endpoint, served through an httpx.MockTransport; counts the fetches."""

    keys: list[SigningKey]
    fmt: str = "x509"  # or "jwks"
    max_age: int | None = 3600
    status: int = 200
    error: Exception | None = None
    delay: float = 0.0
    fetches: int = 0
    urls: list[str] = field(default_factory=list)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        self.urls.append(str(request.url))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        if self.status != 200:
            return httpx.Response(self.status, json={"error": "boom"})
        body: dict[str, Any]
        if self.fmt == "jwks":
            body = {"keys": [key.jwk() for key in self.keys]}
        else:
            body = {key.kid: key.cert_pem for key in self.keys}
        headers = (
            {} if self.max_age is None else {"Cache-Control": f"public, max-age={self.max_age}"}
        )
        return httpx.Response(200, json=body, headers=headers)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))


def claims(now: float, **overrides: Any) -> dict[str, Any]:
    """Claims of a valid Firebase ID token issued at `now`; `name=DROP` removes a claim."""
    t = int(now)
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": PROJECT,
        "auth_time": t - 60,
        "user_id": "user-1",
        "sub": "user-1",
        "iat": t,
        "exp": t + 3600,
        "email": "user@example.test",
        "firebase": {"identities": {}, "sign_in_provider": "password"},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not DROP}


def sign(
    payload: Mapping[str, Any],
    key: SigningKey,
    *,
    kid: str | object | None = None,
    alg: str = "RS256",
    headers: Mapping[str, Any] | None = None,
) -> str:
    """An RS* token signed by `key`; `kid` defaults to the key's own, DROP leaves it out."""
    header: dict[str, Any] = dict(headers or {})
    if kid is not DROP:
        header["kid"] = key.kid if kid is None else kid
    return jwt.encode(dict(payload), key.private, algorithm=alg, headers=header)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: Mapping[str, Any]) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def unsigned(payload: Mapping[str, Any], *, signature: str = "", **header: Any) -> str:
    """An alg:none token as the Auth Emulator mints it: empty third segment."""
    return f"{b64json({'alg': 'none', 'typ': 'JWT', **header})}.{b64json(payload)}.{signature}"


def hs256_with_public_pem(payload: Mapping[str, Any], key: SigningKey) -> str:
    """The key-confusion attack: HS256 with the RSA public key PEM as the HMAC secret.

    Built by hand because pyjwt (rightly) refuses a PEM as an HMAC secret.
    """
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': key.kid})}.{b64json(payload)}"
    mac = hmac.new(key.public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def rs256_raw(header: Mapping[str, Any], payload: Mapping[str, Any], key: SigningKey) -> str:
    """A correctly RS256-signed token with an arbitrary header (pyjwt validates headers it encodes)."""
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    signature = key.private.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"
