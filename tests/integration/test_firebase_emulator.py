"""`TokenVerifier` against ID tokens minted by the REAL Firebase Auth Emulator (SPEC §4).

SPEC §4: "Tokens issued by the real Firebase Auth Emulator (`firebase emulators:start --only
auth`) must work" in emulator mode, and the same tokens (unsigned, `alg: none`) must be rejected
outside it. The emulator is started once per session by the `firebase_auth_emulator` fixture
(tests/integration/conftest.py); users are created through its Identity Toolkit REST API, exactly
as the Firebase client SDKs do. Tokens are never printed: they are wrapped in `IdToken`, whose repr
is redacted, and failure messages name fields, not values.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import httpx
import pytest

from rpc_common.auth import AuthError, Caller, TokenVerifier

pytestmark = pytest.mark.emulator

API_KEY: Final = "fake-api-key"  # the emulator accepts any API key
HTTP_TIMEOUT: Final = httpx.Timeout(10.0)
OTHER_PROJECT_ID: Final = "demo-some-other-project"
# Never contacted: the non-emulator verifier's HTTP client is backed by a MockTransport.
MOCK_CERTS_URL: Final = (
    "https://certs.invalid/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"
)


class AuthEmulator(Protocol):
    """What these tests use of conftest's `AuthEmulator` (conftest is not importable as a module)."""

    @property
    def base_url(self) -> str: ...

    @property
    def project_id(self) -> str: ...


class IdToken:
    """An ID (or refresh) token whose repr never shows the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "IdToken(<redacted>)"

    __str__ = __repr__

    def segments(self) -> list[str]:
        return self._value.split(".")

    def header(self) -> dict[str, Any]:
        first = self.segments()[0]
        try:
            decoded = json.loads(base64.urlsafe_b64decode(first + "=" * (-len(first) % 4)))
        except (binascii.Error, ValueError) as exc:
            raise AssertionError("the token header is not base64url-encoded JSON") from exc
        if not isinstance(decoded, dict):
            raise AssertionError("the token header is not a JSON object")
        return decoded

    def leaked_in(self, text: str) -> bool:
        """Whether `text` contains the token or its payload segment."""
        segments = self.segments()
        payload = segments[1] if len(segments) > 1 else self._value
        return self._value in text or (len(payload) >= 16 and payload in text)


@dataclass(frozen=True, slots=True)
class Account:
    local_id: str
    email: str
    password: str = field(repr=False)
    id_token: IdToken
    refresh_token: IdToken


def _field(body: Mapping[str, Any], name: str, what: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise AssertionError(
            f"{what}: no non-empty string {name!r}; fields present: {sorted(body)}"
        )
    return value


async def _post(client: httpx.AsyncClient, request: httpx.Request, what: str) -> Mapping[str, Any]:
    """Send `request` (built by the caller: a Request's repr never shows its body, which may hold
    a password or refresh token) and return its JSON object body."""
    try:
        response = await client.send(request)
    except httpx.HTTPError as exc:
        raise AssertionError(f"{what}: {type(exc).__name__}: {exc}") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != httpx.codes.OK or not isinstance(body, dict):
        # The emulator's error bodies carry a code such as EMAIL_EXISTS, never a token.
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        raise AssertionError(
            f"{what}: HTTP {response.status_code} ({message or 'no error message'})"
        )
    return body


def _request(client: httpx.AsyncClient, path: str, **body: Any) -> httpx.Request:
    return client.build_request("POST", path, params={"key": API_KEY}, **body)


async def sign_up(client: httpx.AsyncClient) -> Account:
    """Create an email/password user (`accounts:signUp`), as the client SDKs do."""
    email = f"user-{uuid.uuid4().hex}@example.com"
    password = secrets.token_urlsafe(18)
    request = _request(
        client,
        "/identitytoolkit.googleapis.com/v1/accounts:signUp",
        json={"email": email, "password": password, "returnSecureToken": True},
    )
    body = await _post(client, request, "accounts:signUp")
    return Account(
        local_id=_field(body, "localId", "accounts:signUp"),
        email=email,
        password=password,
        id_token=IdToken(_field(body, "idToken", "accounts:signUp")),
        refresh_token=IdToken(_field(body, "refreshToken", "accounts:signUp")),
    )


async def sign_in(client: httpx.AsyncClient, account: Account) -> tuple[str, IdToken]:
    """`accounts:signInWithPassword`; returns (localId, idToken)."""
    request = _request(
        client,
        "/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword",
        json={"email": account.email, "password": account.password, "returnSecureToken": True},
    )
    body = await _post(client, request, "accounts:signInWithPassword")
    return (
        _field(body, "localId", "accounts:signInWithPassword"),
        IdToken(_field(body, "idToken", "accounts:signInWithPassword")),
    )


async def refresh(client: httpx.AsyncClient, account: Account) -> tuple[str, IdToken]:
    """Exchange the refresh token (securetoken `token` endpoint); returns (user_id, id_token)."""
    request = _request(
        client,
        "/securetoken.googleapis.com/v1/token",
        data={"grant_type": "refresh_token", "refresh_token": account.refresh_token.reveal()},
    )
    body = await _post(client, request, "securetoken token refresh")
    return (
        _field(body, "user_id", "securetoken token refresh"),
        IdToken(_field(body, "id_token", "securetoken token refresh")),
    )


@pytest.fixture
async def emulator_http(firebase_auth_emulator: AuthEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=firebase_auth_emulator.base_url, timeout=HTTP_TIMEOUT, trust_env=False
    ) as client:
        yield client


@pytest.fixture
async def account(emulator_http: httpx.AsyncClient) -> Account:
    return await sign_up(emulator_http)


@pytest.fixture
async def emulator_verifier(firebase_auth_emulator: AuthEmulator) -> AsyncIterator[TokenVerifier]:
    verifier = TokenVerifier(firebase_auth_emulator.project_id, emulator=True)
    try:
        yield verifier
    finally:
        await verifier.aclose()


def _describe(exc: BaseException, token: IdToken) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return "<message withheld: it contains the token>" if token.leaked_in(text) else text


async def _verify(verifier: TokenVerifier, token: IdToken) -> Caller:
    """`verifier.verify`, but an unexpected exception becomes a plain AssertionError raised from
    None, so pytest's traceback never shows the verifier's frames (whose arguments hold the raw
    token)."""
    try:
        return await verifier.verify(token.reveal())
    except Exception as exc:
        raise AssertionError(f"verify() raised {_describe(exc, token)}") from None


async def assert_verifies_as(
    verifier: TokenVerifier, token: IdToken, uid: str, project: str
) -> None:
    caller = await _verify(verifier, token)
    assert caller.uid == uid
    same_token = secrets.compare_digest(caller.token, token.reveal())
    assert same_token, "Caller.token is not the token that was verified"
    claims = caller.claims
    assert claims["sub"] == uid
    assert claims["aud"] == project
    assert claims["iss"] == f"https://securetoken.google.com/{project}"
    assert claims["firebase"]["sign_in_provider"] == "password"


async def assert_rejected(verifier: TokenVerifier, token: IdToken) -> None:
    """`verify` must raise AuthError (UNAUTHENTICATED) whose message does not echo the token."""
    try:
        await verifier.verify(token.reveal())
    except AuthError as exc:
        # Only a bool survives the block, so not even `pytest -l` can show a leaking message.
        leaked = token.leaked_in(str(exc)) or token.leaked_in(repr(exc))
    except Exception as exc:
        raise AssertionError(
            f"expected AuthError, verify() raised {_describe(exc, token)}"
        ) from None
    else:
        raise AssertionError("verify() accepted the token")
    assert not leaked, "the AuthError message echoes the token"


async def test_emulator_tokens_are_unsigned(account: Account) -> None:
    """The format documented in reference/security.md §1.7: `alg: none`, empty signature.

    If this fails, the emulator changed its token format and emulator mode needs a look.
    """
    segments = account.id_token.segments()
    assert len(segments) == 3
    assert account.id_token.header().get("alg") == "none"
    assert segments[2] == ""


async def test_emulator_mode_accepts_sign_up_token(
    firebase_auth_emulator: AuthEmulator, emulator_verifier: TokenVerifier, account: Account
) -> None:
    await assert_verifies_as(
        emulator_verifier, account.id_token, account.local_id, firebase_auth_emulator.project_id
    )
    caller = await _verify(emulator_verifier, account.id_token)
    assert caller.claims["email"] == account.email


async def test_emulator_mode_accepts_sign_in_token(
    firebase_auth_emulator: AuthEmulator,
    emulator_http: httpx.AsyncClient,
    emulator_verifier: TokenVerifier,
    account: Account,
) -> None:
    local_id, id_token = await sign_in(emulator_http, account)
    assert local_id == account.local_id
    await assert_verifies_as(
        emulator_verifier, id_token, account.local_id, firebase_auth_emulator.project_id
    )


async def test_emulator_mode_accepts_refreshed_token(
    firebase_auth_emulator: AuthEmulator,
    emulator_http: httpx.AsyncClient,
    emulator_verifier: TokenVerifier,
    account: Account,
) -> None:
    user_id, id_token = await refresh(emulator_http, account)
    assert user_id == account.local_id
    await assert_verifies_as(
        emulator_verifier, id_token, account.local_id, firebase_auth_emulator.project_id
    )


async def test_emulator_mode_still_checks_the_project(account: Account) -> None:
    """Emulator mode skips the signature only: a token for another project is rejected."""
    verifier = TokenVerifier(OTHER_PROJECT_ID, emulator=True)
    try:
        await assert_rejected(verifier, account.id_token)
    finally:
        await verifier.aclose()


async def test_emulator_mode_rejects_a_token_with_a_signature_added(
    emulator_verifier: TokenVerifier, account: Account
) -> None:
    """Only the emulator's exact shape is accepted: `alg: none` with an EMPTY signature."""
    forged = IdToken(account.id_token.reveal() + "c2lnbmF0dXJl")
    await assert_rejected(emulator_verifier, forged)


async def test_normal_mode_rejects_emulator_tokens(
    firebase_auth_emulator: AuthEmulator, emulator_http: httpx.AsyncClient, account: Account
) -> None:
    """Outside emulator mode an unsigned token is rejected, never verified against any key."""
    requested: list[str] = []

    def serve_no_keys(request: httpx.Request) -> httpx.Response:
        requested.append(str(request.url))
        if str(request.url) != MOCK_CERTS_URL:
            return httpx.Response(404)
        return httpx.Response(200, json={}, headers={"Cache-Control": "public, max-age=3600"})

    _, signed_in_token = await sign_in(emulator_http, account)
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(serve_no_keys), timeout=HTTP_TIMEOUT
    ) as http:
        verifier = TokenVerifier(
            firebase_auth_emulator.project_id, emulator=False, certs_url=MOCK_CERTS_URL, http=http
        )
        try:
            for token in (account.id_token, signed_in_token):
                await assert_rejected(verifier, token)
        finally:
            await verifier.aclose()
    assert all(url == MOCK_CERTS_URL for url in requested), (
        "requested a URL other than the certs URL"
    )
