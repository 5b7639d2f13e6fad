"""`POST /v1/chat/completions` is served ahead of FastAPI's router (rest_bridge/fast_path.py),
with everything around it unchanged: edge middleware, CORS, envelopes, OpenAPI, 405s."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from fastapi.routing import APIRoute
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Receive, Scope, Send

from tests.bridge.support import Bridge, bridge_settings, chat_body, serve_bridge
from tests.support.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_chat_completions_never_reach_the_router(
    stack: Stack, bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: APIRoute, scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError(f"the router served {scope['method']} {scope['path']}")

    monkeypatch.setattr(APIRoute, "handle", broken)
    async with bridge.client(stack.tokens.mint("fast-path")) as http:
        unary = await http.post("/v1/chat/completions", json=chat_body("hello"))
        streamed = await http.post("/v1/chat/completions", json=chat_body("hi", stream=True))
        routed = await http.get("/v1/models")
    assert unary.status_code == 200, unary.text
    assert unary.json()["object"] == "chat.completion"
    assert streamed.status_code == 200
    assert streamed.text.rstrip().endswith("data: [DONE]")
    # The patch bites: a route that goes through the router fails (a 500 envelope).
    assert routed.status_code == 500
    assert routed.json()["error"]["type"] == "server_error"


async def test_errors_on_the_fast_path_are_the_usual_envelopes(
    stack: Stack, bridge: Bridge
) -> None:
    async with bridge.client(stack.tokens.mint("fast-path-errors")) as http:
        bad_json = await http.post(
            "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
        )
        bad_type = await http.post(
            "/v1/chat/completions", content=b"{}", headers={"content-type": "text/plain"}
        )
        no_model = await http.post("/v1/chat/completions", json={"messages": []})
    async with bridge.client() as anonymous:
        no_token = await anonymous.post("/v1/chat/completions", json=chat_body("x"))
    assert (bad_json.status_code, bad_json.json()["error"]["type"]) == (
        400,
        "invalid_request_error",
    )
    assert bad_type.status_code == 415
    assert no_model.status_code == 400
    assert no_model.json()["error"]["param"] == "model"
    assert no_token.status_code == 401
    assert no_token.headers["www-authenticate"].startswith("Bearer")
    for response in (bad_json, bad_type, no_model, no_token):
        assert re.fullmatch(r"[\w-]+", response.headers["x-request-id"])


async def test_other_methods_on_the_path_still_get_the_routers_405(bridge: Bridge) -> None:
    async with bridge.client() as http:
        response = await http.get("/v1/chat/completions")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"


async def test_the_openapi_document_still_describes_the_route(bridge: Bridge) -> None:
    async with bridge.client() as http:
        schema = (await http.get("/openapi.json")).json()
    operation = schema["paths"]["/v1/chat/completions"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert "model" in body["properties"]
    assert {"200", "400", "401", "429"} <= set(operation["responses"])


@pytest_asyncio.fixture(loop_scope="module")
async def fresh_bridge(stack: Stack) -> AsyncIterator[Bridge]:
    """A bridge of its own, with its metrics listener on a free port."""
    settings = bridge_settings(
        stack.gateway_address, stack.vault_address, metrics_addr="127.0.0.1:0"
    )
    async with serve_bridge(settings) as b:
        yield b


async def test_metrics_label_fast_path_requests_with_the_route(
    stack: Stack, fresh_bridge: Bridge
) -> None:
    assert fresh_bridge.metrics_url is not None
    async with fresh_bridge.client(stack.tokens.mint("fast-path-metrics")) as http:
        assert (await http.post("/v1/chat/completions", json=chat_body("m"))).status_code == 200
        text = (await http.get(fresh_bridge.metrics_url)).text
    routes = {
        sample.labels.get("route")
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("method") == "POST"
    }
    assert "/v1/chat/completions" in routes
