"""The three processes as subprocesses (the commands compose runs), against fake upstreams."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from fakes.content import reply_text
from tests.support.e2e import E2E, MODEL, OR_KEY, running_processes

pytestmark = pytest.mark.e2e


@pytest.fixture
def e2e(tmp_path: Path) -> Iterator[E2E]:
    with running_processes(tmp_path) as stack:
        yield stack


def _stream(client: httpx.Client, e2e: E2E, uid: str, prompt: str) -> tuple[str, str, list[str]]:
    """(provider header, content, raw data payloads) of one streamed completion."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "stream": True}
    with connect_sse(
        client, "POST", f"{e2e.bridge_url}/v1/chat/completions", json=body, headers=e2e.headers(uid)
    ) as source:
        assert source.response.status_code == 200
        provider = source.response.headers["x-native1api-provider"]
        payloads = [event.data for event in source.iter_sse()]
    content = "".join(
        choice["delta"].get("content") or ""
        for data in payloads
        if data != "[DONE]"
        for choice in json.loads(data)["choices"]
    )
    return provider, content, payloads


def test_byok_round_trip_and_restart_keeps_keys(e2e: E2E) -> None:
    with httpx.Client(timeout=30) as client:
        provider, content, payloads = _stream(client, e2e, "erin", "hello workers")
        assert (provider, content) == ("workers-ai", reply_text("hello workers"))
        assert payloads[-1] == "[DONE]"

        saved = client.post(
            f"{e2e.bridge_url}/v1/vault", json={"apiKey": OR_KEY}, headers=e2e.headers("erin")
        )
        assert saved.status_code == 200
        assert saved.json() == {"exists": True, "provider": "openrouter"}
        assert OR_KEY not in saved.text

        provider, content, _ = _stream(client, e2e, "erin", "hello byok")
        assert (provider, content) == ("openrouter", reply_text("hello byok"))

        # The gateway's own Prometheus endpoint counted both completions, without user ids.
        metrics = client.get(f"http://{e2e.env['GATEWAY_METRICS_ADDR']}/metrics").text
        assert (
            'native1api_gateway_tokens_total{kind="completion",model="@cf/meta/llama-3.2-3b-instruct",provider="openrouter"}'
            in metrics
        )
        assert 'provider="workers-ai",rpc="StreamChatCompletion",status="OK"' in metrics
        assert "erin" not in metrics

        # The vault restarts; the key is still there.
        assert e2e.services["vault"].terminate() == 0
        e2e.start("vault")
        status = client.get(f"{e2e.bridge_url}/v1/vault", headers=e2e.headers("erin"))
        assert status.json() == {"exists": True, "provider": "openrouter"}

        deleted = client.delete(f"{e2e.bridge_url}/v1/vault", headers=e2e.headers("erin"))
        assert deleted.json() == {"exists": False}
        provider, _, _ = _stream(client, e2e, "erin", "back home")
        assert provider == "workers-ai"


def test_killed_vault_is_503_and_recovers(e2e: E2E) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(timeout=30) as client:
        e2e.services["vault"].kill()
        down = client.post(
            f"{e2e.bridge_url}/v1/chat/completions", json=body, headers=e2e.headers("finn")
        )
        assert down.status_code == 503
        assert down.json()["error"]["type"]
        e2e.start("vault")
        deadline = time.monotonic() + 15
        status = 0
        while time.monotonic() < deadline:
            status = client.post(
                f"{e2e.bridge_url}/v1/chat/completions", json=body, headers=e2e.headers("finn")
            ).status_code
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200


def test_sigterm_lets_an_in_flight_stream_finish(e2e: E2E) -> None:
    prompt = "slow one [[fake:chunks=20,chunk_delay=0.1]]"
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "stream": True}
    payloads: list[str] = []
    with (
        httpx.Client(timeout=30) as client,
        connect_sse(
            client,
            "POST",
            f"{e2e.bridge_url}/v1/chat/completions",
            json=body,
            headers=e2e.headers("gus"),
        ) as source,
    ):
        for event in source.iter_sse():
            payloads.append(event.data)
            if len(payloads) == 3:
                gateway = e2e.services["gateway"]
                assert gateway.process is not None
                gateway.process.send_signal(signal.SIGTERM)
    # Either the whole answer arrived, or the stream ended with one error frame: never a hang
    # and never a silent truncation.
    last = payloads[-1]
    if last == "[DONE]":
        content = "".join(
            c["delta"].get("content") or "" for d in payloads[:-1] for c in json.loads(d)["choices"]
        )
        assert content == reply_text("slow one", chunks=20)
    else:
        assert "error" in json.loads(last)
    assert e2e.services["gateway"].wait_exit() == 0
