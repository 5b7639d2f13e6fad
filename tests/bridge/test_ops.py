"""Operations surface: health and readiness, metrics, request ids, provider/overhead headers,
CORS, and the access log."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from rpc_common.auth import AuthSettings
from tests.bridge.support import (
    LLAMA,
    Bridge,
    bridge_settings,
    chat_body,
    serve_bridge,
    stream_chat,
)
from tests.support.stack import SERVICE_TOKEN, Stack
from tests.support.tokens import PROJECT_ID, TokenFactory
from vault_service.config import VaultSettings
from vault_service.crypto import KeyRing
from vault_service.server import build_vault

pytestmark = pytest.mark.asyncio(loop_scope="module")

ORIGIN = "https://app.example.com"


async def test_healthz(bridge: Bridge) -> None:
    async with bridge.client() as http:
        response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_follows_the_backends(
    stack: Stack, tokens: TokenFactory, keyring: KeyRing, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Ready with both backends serving; 503 naming the vault once the vault has stopped."""
    vault = await build_vault(
        VaultSettings(
            auth=AuthSettings(project_id=PROJECT_ID, certs_url="https://certs.test/x509"),
            master_key="m" * 40,
            previous_master_keys=(),
            service_token=SERVICE_TOKEN,
            listen_addr="127.0.0.1:0",
            database_url=f"sqlite:///{tmp_path_factory.mktemp('ready')}/vault.db",
        ),
        keyring=keyring,
        verifier=tokens.verifier(),
    )
    await vault.serving.start()
    stopped = False
    try:
        address = f"127.0.0.1:{vault.serving.port}"
        async with (
            serve_bridge(bridge_settings(stack.gateway_address, address)) as bridge,
            bridge.client() as http,
        ):
            response = await http.get("/readyz")
            assert response.status_code == 200
            assert response.json() == {
                "status": "ready",
                "backends": {"gateway": True, "vault": True},
            }

            await vault.serving.stop(None)
            stopped = True
            response = await http.get("/readyz")
            assert response.status_code == 503
            error = response.json()["error"]
            assert error["type"] == "service_unavailable_error"
            assert "vault" in error["message"] and "gateway" not in error["message"]
            assert (await http.get("/healthz")).status_code == 200  # alive, just not ready
    finally:
        if not stopped:
            await vault.serving.stop(None)
        await vault.aclose()


@pytest_asyncio.fixture(loop_scope="module")
async def fresh_bridge(stack: Stack) -> AsyncIterator[Bridge]:
    """A bridge of its own, so its metrics hold only this test's requests, with its metrics
    listener on a free loopback port."""
    settings = bridge_settings(
        stack.gateway_address, stack.vault_address, metrics_addr="127.0.0.1:0"
    )
    async with serve_bridge(settings) as b:
        yield b


async def test_metrics_after_completions(stack: Stack, fresh_bridge: Bridge) -> None:
    uid = "metrics-user-7f3a"
    token = stack.tokens.mint(uid)
    async with fresh_bridge.client(token) as http:
        assert (
            await http.post("/v1/chat/completions", json=chat_body("count me"))
        ).status_code == 200
        result = await stream_chat(http, chat_body("stream me", stream=True))
        assert result.response.status_code == 200
        await http.get(f"/v1/unknown/{uid}")
        public = await http.get("/metrics")
    # Not on the public port: an unknown route like any other.
    assert public.status_code == 404
    assert public.json()["error"]["code"] == "unknown_url"
    assert fresh_bridge.metrics_url is not None
    async with httpx.AsyncClient(timeout=10) as scraper:
        response = await scraper.get(fresh_bridge.metrics_url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    chat = {"route": "/v1/chat/completions", "method": "POST", "status": "200"}
    assert value("native1api_bridge_requests_total", **chat) == 2
    assert value("native1api_bridge_request_duration_seconds_count", **chat) == 2
    assert (
        value("native1api_bridge_requests_total", route="unmatched", method="GET", status="404")
        == 2  # /v1/unknown/... and /metrics
    )
    # 6 completion tokens per reply (fakes.content), counted for the unary and the stream.
    tokens_labels = {"provider": "workers-ai", "model": LLAMA}
    assert (
        value("native1api_bridge_upstream_tokens_total", kind="completion", **tokens_labels) == 12
    )
    assert value("native1api_bridge_upstream_tokens_total", kind="prompt", **tokens_labels) > 0
    assert value("native1api_bridge_stream_first_chunk_seconds_count", provider="workers-ai") == 1
    assert value("native1api_bridge_streams_in_flight") == 0
    for name, labels in samples:
        for _, label_value in labels:
            assert uid not in label_value and token not in label_value, (name, labels)
            assert not label_value.startswith("eyJ"), (name, labels)


async def test_request_id_is_echoed_or_generated(
    stack: Stack, bridge: Bridge, caplog: pytest.LogCaptureFixture
) -> None:
    async with bridge.client(stack.tokens.mint("rid")) as http:
        sane = "req-2026.11:abc_DEF-123"
        response = await http.post(
            "/v1/chat/completions", json=chat_body("rid"), headers={"x-request-id": sane}
        )
        assert response.headers["x-request-id"] == sane
        # The gateway saw the same id (its request log line carries it).
        assert any(f"request_id={sane}" in r.getMessage() for r in caplog.records)

        generated = (await http.get("/v1/models")).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
        for insane in ("has spaces", "x" * 200, "semi;colon", 'quote"d'):
            response = await http.get("/healthz", headers={"x-request-id": insane})
            assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
        # Errors and streams carry one too.
        assert (await http.get("/nowhere")).headers["x-request-id"]
        result = await stream_chat(http, chat_body("rid stream", stream=True))
        assert result.response.headers["x-request-id"]


async def test_provider_and_overhead_headers(stack: Stack, bridge: Bridge) -> None:
    async with bridge.client(stack.tokens.mint("overhead")) as http:
        started = time.perf_counter()
        response = await http.post(
            "/v1/chat/completions", json=chat_body("slow upstream [[fake:delay_first=0.3]]")
        )
        total_ms = (time.perf_counter() - started) * 1000
    assert response.status_code == 200
    assert response.headers["x-native1api-provider"] == "workers-ai"
    overhead = float(response.headers["x-native1api-overhead-ms"])
    assert total_ms >= 300
    # The 300 ms the upstream took is not the stack's overhead.
    assert 0 <= overhead < 150


async def test_access_log_line_per_request(
    stack: Stack, bridge: Bridge, caplog: pytest.LogCaptureFixture
) -> None:
    token = stack.tokens.mint("logged")
    async with bridge.client(token) as http:
        rid = (await http.get("/v1/models", headers={"x-request-id": "log-me-1"})).headers[
            "x-request-id"
        ]
    lines = [r.getMessage() for r in caplog.records if r.name == "rest_bridge.access"]
    assert len([line for line in lines if "rid=log-me-1" in line]) == 1
    line = next(line for line in lines if f"rid={rid}" in line)
    assert re.fullmatch(r"GET /v1/models 200 \d+\.\dms rid=log-me-1", line)
    assert all(token not in r.getMessage() for r in caplog.records)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cors_bridge(stack: Stack) -> AsyncIterator[Bridge]:
    settings = bridge_settings(stack.gateway_address, stack.vault_address, cors_origins=(ORIGIN,))
    async with serve_bridge(settings) as b:
        yield b


def _preflight(origin: str) -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }


async def test_cors_preflight_allowed_for_a_configured_origin(
    stack: Stack, cors_bridge: Bridge
) -> None:
    async with cors_bridge.client() as http:
        response = await http.options("/v1/chat/completions", headers=_preflight(ORIGIN))
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ORIGIN
        allowed = response.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
        assert "POST" in response.headers["access-control-allow-methods"]
        assert response.headers["x-request-id"]

        refused = await http.options(
            "/v1/chat/completions", headers=_preflight("https://evil.example")
        )
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        assert set(refused.json()["error"]) == {"message", "type", "param", "code"}

    token = stack.tokens.mint("cors")
    async with cors_bridge.client(token) as http:
        response = await http.post(
            "/v1/chat/completions", json=chat_body("cors"), headers={"origin": ORIGIN}
        )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "x-request-id" in exposed and "x-native1api-provider" in exposed


async def test_no_cors_without_configured_origins(bridge: Bridge) -> None:
    async with bridge.client() as http:
        response = await http.options("/v1/chat/completions", headers=_preflight(ORIGIN))
        assert response.status_code == 405
        assert "access-control-allow-origin" not in response.headers
        response = await http.get("/healthz", headers={"origin": ORIGIN})
        assert "access-control-allow-origin" not in response.headers


async def test_unexpected_exception_is_a_logged_500_envelope(
    stack: Stack, bridge: Bridge, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(*args: object, **kwargs: object) -> object:
        raise RuntimeError("boom")

    monkeypatch.setattr("rest_bridge.routes.chat.completion_to_json", explode)
    async with bridge.client(stack.tokens.mint("boom")) as http:
        response = await http.post("/v1/chat/completions", json=chat_body("boom"))
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "server_error"
    assert "boom" not in error["message"]
    assert response.headers["x-request-id"]
    assert any(
        r.levelname == "ERROR" and r.name == "rest_bridge.middleware" for r in caplog.records
    )


async def test_http_client_keepalive_reuses_connections(bridge: Bridge) -> None:
    """Sanity of the serving setup itself: many small requests on one connection are fast."""
    async with bridge.client() as http:
        started = time.perf_counter()
        for _ in range(20):
            assert (await http.get("/healthz")).status_code == 200
        elapsed = time.perf_counter() - started
    assert elapsed < 1.0, "responses stall (Nagle/delayed ACK?)"
