"""Firebase App Check through the REST bridge (SPEC §11): the real bridge in front of a stack whose
gateway and vault run APP_CHECK_MODE=enforce.

A valid `X-Firebase-AppCheck` header is forwarded as `x-firebase-appcheck` metadata and admitted;
a missing (or unforwardable) one is a 401 with `"code": "invalid_app_check_token"` on
`/v1/chat/completions` (streamed and not) and `/v1/vault`; `/v1/models` is not guarded. The Python
SDK's `app_check_token_provider` works end to end.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import pytest_asyncio

from fakes.content import reply_text
from gateway_service.upstream_http import HttpSettings
from rpc_common.auth import AppCheckMode
from tests.bridge.support import Bridge, chat_body, stream_chat
from tests.sdk.loader import load_sdk
from tests.support.app_check import AppCheckFactory
from tests.support.logcheck import assert_logs_clean
from tests.support.stack import OPENROUTER_KEY, Stack, running_stack
from tests.support.tokens import TokenFactory
from vault_service.crypto import KeyRing

if TYPE_CHECKING:
    import native1api_client as n1
else:
    n1 = load_sdk()

pytestmark = pytest.mark.asyncio(loop_scope="module")

HEADER = "X-Firebase-AppCheck"


@pytest.fixture(autouse=True)
def _call_logs_clean(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    # httpcore's DEBUG trace of a 401's headers shows `Bearer error="invalid_token"`, which the
    # redaction pattern (rightly) treats as credential-shaped.
    caplog.set_level(logging.INFO, logger="httpcore")
    yield
    assert_logs_clean(caplog)


@pytest.fixture(scope="module")
def factory() -> AppCheckFactory:
    return AppCheckFactory()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory,
    tokens: TokenFactory,
    keyring: KeyRing,
    factory: AppCheckFactory,
) -> AsyncIterator[Stack]:
    """This module's stack (overrides the bridge conftest's): App Check enforced."""
    async with running_stack(
        tmp_path_factory.mktemp("app-check"),
        tokens,
        keyring,
        app_check=factory.settings(AppCheckMode.ENFORCE),
        app_check_tokens=factory,
        http=HttpSettings(max_retries=0),
    ) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def client(
    stack: Stack, bridge: Bridge, request: pytest.FixtureRequest
) -> AsyncIterator[httpx.AsyncClient]:
    uid = f"ac-{request.node.name}"[:100]
    async with bridge.client(stack.tokens.mint(uid)) as http:
        yield http


def assert_refused(response: httpx.Response, *secrets: str) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"]["code"] == "invalid_app_check_token"
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("App Check token")
    assert response.headers["www-authenticate"].startswith("Bearer")
    for secret in secrets:
        assert secret not in response.text


async def test_a_valid_header_is_forwarded_and_admitted(
    client: httpx.AsyncClient, factory: AppCheckFactory, caplog: pytest.LogCaptureFixture
) -> None:
    token = factory.mint()
    headers = {HEADER: token}
    response = await client.post(
        "/v1/chat/completions", json=chat_body("ac bridge"), headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == reply_text("ac bridge")

    client.headers[HEADER] = token
    result = await stream_chat(client, chat_body("ac bridge stream", stream=True))
    assert result.response.status_code == 200
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in result.chunks() if c["choices"]
    )
    assert text == reply_text("ac bridge stream")

    response = await client.post("/v1/vault", json={"apiKey": OPENROUTER_KEY})
    assert response.status_code == 200, response.text
    assert (await client.get("/v1/vault")).json() == {"exists": True, "provider": "openrouter"}
    assert (await client.delete("/v1/vault")).json() == {"exists": False}
    assert_logs_clean(caplog, token, OPENROUTER_KEY)


# A header the bridge does not forward (not JWT-shaped) reaches the services as "missing".
@pytest.mark.parametrize(
    "header", [None, "", "not a token!"], ids=["absent", "empty", "unforwarded"]
)
async def test_missing_is_401_invalid_app_check_token(
    client: httpx.AsyncClient, header: str | None
) -> None:
    headers = {HEADER: header} if header is not None else {}
    response = await client.post("/v1/chat/completions", json=chat_body("ac x"), headers=headers)
    assert_refused(response)
    client.headers.update(headers)
    streamed = await stream_chat(client, chat_body("ac x", stream=True))
    assert_refused(streamed.response)
    assert_refused(await client.get("/v1/vault"))
    assert_refused(await client.post("/v1/vault", json={"apiKey": OPENROUTER_KEY}))
    assert_refused(await client.delete("/v1/vault"))


async def test_an_invalid_token_is_401_without_echoing_it(
    client: httpx.AsyncClient, factory: AppCheckFactory, caplog: pytest.LogCaptureFixture
) -> None:
    attacks = factory.attacks()
    for name in ("expired", "forged-signature", "app-not-allowed", "garbage-three-parts"):
        client.headers[HEADER] = attacks[name]
        response = await client.post("/v1/chat/completions", json=chat_body("ac bad"))
        assert_refused(response, attacks[name])
        assert_refused(await client.get("/v1/vault"), attacks[name])
    assert_logs_clean(caplog, *attacks.values())


async def test_models_are_not_guarded(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models")
    assert response.status_code == 200
    assert response.json()["data"]


async def test_the_python_sdk_sends_the_app_check_token(
    stack: Stack, bridge: Bridge, factory: AppCheckFactory
) -> None:
    id_token = stack.tokens.mint("ac-sdk")
    minted: list[str] = []

    async def app_check_token() -> str:
        minted.append(factory.mint())
        return minted[-1]

    async with n1.AsyncNative1API(
        bridge.base_url, token=id_token, app_check_token_provider=app_check_token
    ) as sdk:
        completion = await sdk.chat.completions.create(
            model=chat_body("")["model"], messages=[{"role": "user", "content": "ac sdk"}]
        )
        assert completion["choices"][0]["message"]["content"] == reply_text("ac sdk")
        assert (await sdk.vault.exists()) == {"exists": False}
    assert len(minted) == 2

    async with n1.AsyncNative1API(bridge.base_url, token=id_token) as sdk:
        with pytest.raises(n1.AuthenticationError) as info:
            await sdk.vault.exists()
    error: Any = info.value
    assert (error.status_code, error.code) == (401, "invalid_app_check_token")
