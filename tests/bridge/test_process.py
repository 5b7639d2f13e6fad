"""`python -m rest_bridge` as a real process: start, serve, fail fast on bad config, SIGTERM -> 0."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from fakes.content import reply_text
from tests.bridge.support import chat_body
from tests.support.procs import Service, free_port, run_module
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e


def test_serves_and_exits_zero_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "BRIDGE_LISTEN_ADDR": f"127.0.0.1:{port}",
        "BRIDGE_METRICS_ADDR": f"127.0.0.1:{free_port()}",
        # Nothing listens there: the process is alive but not ready.
        "GATEWAY_ADDR": f"127.0.0.1:{free_port()}",
        "VAULT_ADDR": f"127.0.0.1:{free_port()}",
        "BRIDGE_READY_TIMEOUT_SECONDS": "0.5",
        "LOG_LEVEL": "INFO",
    }
    service = Service("rest_bridge", env, tmp_path / "bridge.log").start()
    try:
        base = f"http://127.0.0.1:{port}"
        service.wait_http_ready(f"{base}/healthz")
        with httpx.Client(base_url=base, timeout=5) as http:
            assert http.get("/readyz").status_code == 503
            response = http.post("/v1/chat/completions", json={"model": "m", "messages": []})
            assert response.status_code == 401
            # Whatever socket uvicorn opens itself, responses must not stall on Nagle.
            started = time.perf_counter()
            for _ in range(20):
                assert http.get("/healthz").status_code == 200
            assert time.perf_counter() - started < 0.5
    finally:
        status = service.terminate()
    assert status == 0, service.log[-3000:]
    log = service.log
    assert "Traceback" not in log
    assert "GET /readyz 503" in log  # the access line
    assert "POST /v1/chat/completions 401" in log


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"BRIDGE_LISTEN_ADDR": "nowhere"}, "BRIDGE_LISTEN_ADDR"),
        ({"BRIDGE_MAX_BODY_BYTES": "-1"}, "BRIDGE_MAX_BODY_BYTES"),
        ({"BRIDGE_CORS_ORIGINS": "app.example.com"}, "BRIDGE_CORS_ORIGINS"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ],
)
def test_bad_config_fails_fast_naming_the_variable(env: dict[str, str], variable: str) -> None:
    result = run_module("rest_bridge", [], env, timeout=30)
    assert result.returncode == 2
    assert variable in result.stderr


@pytest.mark.asyncio(loop_scope="module")
async def test_process_bridges_to_the_real_backends(stack: Stack, tmp_path: Path) -> None:
    """The production event loop (uvloop when installed) with grpc.aio, end to end."""
    port = free_port()
    env = {
        "BRIDGE_LISTEN_ADDR": f"127.0.0.1:{port}",
        "BRIDGE_METRICS_ADDR": f"127.0.0.1:{free_port()}",
        "GATEWAY_ADDR": stack.gateway_address,
        "VAULT_ADDR": stack.vault_address,
    }
    service = Service("rest_bridge", env, tmp_path / "bridge.log").start()
    token = stack.tokens.mint("process-user")
    try:
        # /healthz needs no backend, so a blocking wait does not starve the in-process stack.
        service.wait_http_ready(f"http://127.0.0.1:{port}/healthz")
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"authorization": f"Bearer {token}"},
            timeout=10,
        ) as http:
            assert (await http.get("/readyz")).status_code == 200
            response = await http.post("/v1/chat/completions", json=chat_body("from a process"))
            assert response.status_code == 200
            assert response.json()["choices"][0]["message"]["content"] == reply_text(
                "from a process"
            )
            response = await http.post(
                "/v1/chat/completions", json=chat_body("streamed", stream=True)
            )
            assert response.status_code == 200
            assert response.text.endswith("data: [DONE]\n\n")
            assert (await http.get("/v1/vault")).json() == {"exists": False}
    finally:
        status = await asyncio.to_thread(service.terminate)
    assert status == 0, service.log[-3000:]
    assert token not in service.log
