"""`/v1/vault` through the real bridge and vault: save, status, delete, provider inference, bad
keys, `Cache-Control: no-store`, and the key never coming back or reaching a log line."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.bridge.support import Bridge, chat_body
from tests.support.logcheck import assert_logs_clean
from tests.support.stack import OPENROUTER_KEY, TOGETHER_KEY, Stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

# A key no redaction pattern recognises, so only the bridge's own discipline keeps it out.
ODD_KEY = "odd-provider-key-Zq81xP0w"


@pytest_asyncio.fixture(loop_scope="module")
async def client(
    stack: Stack, bridge: Bridge, request: pytest.FixtureRequest
) -> AsyncIterator[httpx.AsyncClient]:
    uid = f"vault-{request.node.name}"[:100]
    async with bridge.client(stack.tokens.mint(uid)) as http:
        yield http
        await http.delete("/v1/vault")


def assert_no_key(response: httpx.Response, *keys: str) -> None:
    assert response.headers["cache-control"] == "no-store"
    exposed = response.text + "".join(f"{k}: {v}" for k, v in response.headers.items())
    for key in keys:
        assert key not in exposed


@pytest.mark.parametrize(
    ("body", "provider"),
    [
        ({"apiKey": OPENROUTER_KEY}, "openrouter"),
        ({"apiKey": TOGETHER_KEY}, "together"),
        ({"apiKey": "ab12" * 16}, "together"),  # 64 hex digits
        ({"apiKey": ODD_KEY, "provider": "openrouter"}, "openrouter"),
        ({"apiKey": OPENROUTER_KEY, "provider": None, "validate": False}, "openrouter"),
    ],
)
async def test_put_get_delete(
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    body: dict[str, Any],
    provider: str,
) -> None:
    key = body["apiKey"]
    response = await client.get("/v1/vault")
    assert response.status_code == 200
    assert response.json() == {"exists": False}
    assert_no_key(response, key)

    response = await client.post("/v1/vault", json=body)
    assert response.status_code == 200
    assert response.json() == {"exists": True, "provider": provider}
    assert_no_key(response, key)

    response = await client.get("/v1/vault")
    assert response.json() == {"exists": True, "provider": provider}
    assert_no_key(response, key)

    for _ in range(2):  # idempotent
        response = await client.delete("/v1/vault")
        assert response.status_code == 200
        assert response.json() == {"exists": False}
        assert_no_key(response, key)
    assert (await client.get("/v1/vault")).json() == {"exists": False}
    assert_logs_clean(caplog, key)


async def test_saved_key_routes_chat_to_its_provider(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    await client.post("/v1/vault", json={"apiKey": TOGETHER_KEY})
    response = await client.post("/v1/chat/completions", json=chat_body("byok via rest"))
    assert response.status_code == 200
    assert response.headers["x-native1api-provider"] == "together"
    models = await client.get("/v1/models")
    assert models.headers["x-native1api-provider"] == "together"
    await client.delete("/v1/vault")
    response = await client.post("/v1/chat/completions", json=chat_body("back home"))
    assert response.headers["x-native1api-provider"] == "workers-ai"


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"apiKey": ""}, "apiKey", "api_key_empty"),
        ({"apiKey": "sk-or-" + "k" * 1100}, "apiKey", "api_key_too_long"),
        ({"apiKey": "sk-or-v1 with space"}, "apiKey", "api_key_malformed"),
        ({"apiKey": "sk-or-v1-\u0000ctrl"}, "apiKey", "api_key_malformed"),
        ({"apiKey": "sk-or-v1-\u200bzw"}, "apiKey", "api_key_malformed"),
        ({"apiKey": ODD_KEY}, "provider", "provider_required"),
    ],
)
async def test_bad_keys_are_400(
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    body: dict[str, Any],
    param: str,
    code: str,
) -> None:
    response = await client.post("/v1/vault", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["code"] == code
    assert_no_key(response, body["apiKey"] or "\u0000never")
    assert (await client.get("/v1/vault")).json() == {"exists": False}
    assert_logs_clean(caplog, body["apiKey"] or "\u0000never")


async def test_lone_surrogate_key_is_400_not_500(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/vault",
        content=b'{"apiKey": "sk-or-v1-\\ud800x"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "apiKey"


async def test_validate_rejected_key_is_400_and_not_stored(
    stack: Stack, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    rejected = "sk-or-v1-" + "7" * 40
    response = await client.post("/v1/vault", json={"apiKey": rejected, "validate": True})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert error["param"] == "apiKey"
    assert_no_key(response, rejected)
    assert (await client.get("/v1/vault")).json() == {"exists": False}
    assert stack.openrouter.control.last.path.endswith("/key")  # checked upstream
    assert_logs_clean(caplog, rejected)


async def test_validate_accepted_key_is_stored(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/vault", json={"apiKey": OPENROUTER_KEY, "validate": True})
    assert response.status_code == 200
    assert response.json() == {"exists": True, "provider": "openrouter"}


async def test_validate_with_provider_down_is_502(stack: Stack, client: httpx.AsyncClient) -> None:
    stack.together.control.fail_next(503, scope="any")
    response = await client.post("/v1/vault", json={"apiKey": TOGETHER_KEY, "validate": True})
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "server_error"
    assert_no_key(response, TOGETHER_KEY)
