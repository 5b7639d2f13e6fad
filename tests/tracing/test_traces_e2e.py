"""Traces across the three real processes, exported over OTLP/gRPC to a receiver this test runs.

One REST request is one trace: the bridge's HTTP span, the gateway's RPC span under it, the
vault lookup (or the gateway's cache hit), admission, and the upstream call with the GenAI
attributes; and nothing secret or private in any byte that was exported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from fakes.content import reply_text
from gateway_service.request_log import hash_uid
from tests.support.e2e import CF_TOKEN, E2E, MODEL, OR_KEY, running_processes
from tests.tracing.otlp_receiver import ExportedSpan, OtlpReceiver

pytestmark = pytest.mark.e2e

UID = "uid-tracing-7f3a9c"
BRIDGE_CHAT = "POST /v1/chat/completions"
GATEWAY = "native1api.gateway.v1.GatewayService/"
VAULT_ACCESS = "native1api.vault.v1.VaultService/AccessApiKey"
SERVER, CLIENT = 2, 3  # OTLP's SpanKind numbers


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[tuple[E2E, OtlpReceiver]]:
    with OtlpReceiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "50",  # milliseconds: spans arrive at once
            # A cache hit for the second request, whatever the default TTL becomes.
            "GATEWAY_VAULT_CACHE_SECONDS": "60",
        }
        with running_processes(tmp_path, extra_env=env) as stack:
            yield stack, receiver


def _trace(spans: list[ExportedSpan], request_id: str) -> list[ExportedSpan]:
    """Every span of the trace whose bridge span has `request_id`."""
    roots = [
        s
        for s in spans
        if s.service == "rest_bridge" and s.attributes.get("native1api.request_id") == request_id
    ]
    if len(roots) != 1:
        return []
    return [s for s in spans if s.trace_id == roots[0].trace_id]


def _complete(names: set[str]) -> Callable[[list[ExportedSpan]], bool]:
    return lambda spans: names <= {s.name for s in spans}


def _one(spans: list[ExportedSpan], name: str) -> ExportedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, sorted(s.name for s in spans))
    return found[0]


def _wait_trace(receiver: OtlpReceiver, request_id: str, names: set[str]) -> list[ExportedSpan]:
    receiver.wait_for(lambda spans: _complete(names)(_trace(spans, request_id)))
    return _trace(receiver.spans(), request_id)


def _stream(client: httpx.Client, stack: E2E, prompt: str, request_id: str) -> str:
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "stream": True}
    headers = {**stack.headers(UID), "X-Request-Id": request_id}
    with connect_sse(
        client, "POST", f"{stack.bridge_url}/v1/chat/completions", json=body, headers=headers
    ) as source:
        assert source.response.status_code == 200
        payloads = [event.data for event in source.iter_sse()]
    return "".join(
        choice["delta"].get("content") or ""
        for data in payloads
        if data != "[DONE]"
        for choice in json.loads(data)["choices"]
    )


def test_one_request_is_one_trace_across_the_three_processes(
    traced: tuple[E2E, OtlpReceiver],
) -> None:
    stack, receiver = traced
    prompts = ["trace me streaming 51d2", "trace me unary 8e07", "trace me byok 33c1"]
    tokens: list[str] = []
    # The gateway caches the vault's answers only while it follows the vault's change feed.
    deadline = time.monotonic() + 10
    while "caching vault answers" not in stack.services["gateway"].log:
        assert time.monotonic() < deadline, "the gateway never followed the vault's feed"
        time.sleep(0.05)
    with httpx.Client(timeout=30) as client:
        # 1. A stream: the gateway asks the vault (nothing cached yet).
        tokens.append(stack.headers(UID)["Authorization"].removeprefix("Bearer "))
        content = _stream(client, stack, prompts[0], "req-trace-stream")
        assert content == reply_text(prompts[0])
        gateway_stream = GATEWAY + "StreamChatCompletion"
        spans = _wait_trace(
            receiver,
            "req-trace-stream",
            {BRIDGE_CHAT, gateway_stream, "gateway.vault_lookup", VAULT_ACCESS},
        )
        assert {s.service for s in spans} == {"rest_bridge", "gateway_service", "vault_service"}
        bridge = _one(spans, BRIDGE_CHAT)
        assert (bridge.service, bridge.span.kind, bridge.parent_id) == ("rest_bridge", SERVER, "")
        assert bridge.attributes["http.route"] == "/v1/chat/completions"
        assert bridge.attributes["http.response.status_code"] == 200
        gateway = _one(spans, gateway_stream)
        assert (gateway.service, gateway.span.kind) == ("gateway_service", SERVER)
        assert gateway.parent_id == bridge.span_id
        assert gateway.attributes["rpc.system.name"] == "grpc"
        assert gateway.attributes["rpc.method"] == gateway_stream
        assert gateway.attributes["rpc.response.status_code"] == "OK"
        assert gateway.attributes["rpc.grpc.status_code"] == 0
        assert gateway.attributes["user.hash"] == hash_uid(UID)
        assert gateway.attributes["native1api.request_id"] == "req-trace-stream"
        lookup = _one(spans, "gateway.vault_lookup")
        assert lookup.parent_id == gateway.span_id
        vault = _one(spans, VAULT_ACCESS)
        assert (vault.service, vault.span.kind, vault.parent_id) == (
            "vault_service",
            SERVER,
            lookup.span_id,
        )
        admission = _one(spans, "gateway.admission")
        assert admission.parent_id == gateway.span_id
        upstream = _one(spans, f"chat {MODEL}")
        assert (upstream.span.kind, upstream.parent_id) == (CLIENT, gateway.span_id)
        attributes = upstream.attributes
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.provider.name"] == attributes["gen_ai.system"] == "workers-ai"
        assert attributes["gen_ai.request.model"] == MODEL
        assert attributes["native1api.requested_model"] == MODEL
        assert attributes["gen_ai.response.model"] == MODEL
        assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
        assert attributes["gen_ai.usage.input_tokens"] > 0
        assert attributes["gen_ai.usage.output_tokens"] > 0
        assert attributes["native1api.byok"] is False
        ttft = upstream.events["first_token"]["gen_ai.response.time_to_first_chunk"]
        assert 0 < ttft == attributes["gen_ai.response.time_to_first_chunk"]
        # The upstream's response head came before its first token (the HTTP client marks it).
        first_byte = upstream.events["first_byte"]["native1api.upstream.time_to_first_byte"]
        assert 0 < first_byte <= ttft
        # The spans nest in time as they do in the tree.
        assert bridge.span.start_time_unix_nano <= gateway.span.start_time_unix_nano
        assert upstream.span.end_time_unix_nano <= gateway.span.end_time_unix_nano
        assert gateway.span.end_time_unix_nano <= bridge.span.end_time_unix_nano

        # 2. Unary, same user: the gateway's cache answers, the vault is not asked.
        body = {"model": MODEL, "messages": [{"role": "user", "content": prompts[1]}]}
        reply = client.post(
            f"{stack.bridge_url}/v1/chat/completions",
            json=body,
            headers={**stack.headers(UID), "X-Request-Id": "req-trace-unary"},
        )
        assert reply.status_code == 200
        assert reply.json()["choices"][0]["message"]["content"] == reply_text(prompts[1])
        gateway_unary = GATEWAY + "CreateChatCompletion"
        spans = _wait_trace(
            receiver,
            "req-trace-unary",
            {BRIDGE_CHAT, gateway_unary, "gateway.vault_cache_hit", f"chat {MODEL}"},
        )
        assert {s.service for s in spans} == {"rest_bridge", "gateway_service"}
        bridge = _one(spans, BRIDGE_CHAT)
        gateway = _one(spans, gateway_unary)
        assert gateway.parent_id == bridge.span_id
        assert _one(spans, "gateway.vault_cache_hit").parent_id == gateway.span_id
        assert "gateway.vault_lookup" not in {s.name for s in spans}
        assert _one(spans, "gateway.admission").parent_id == gateway.span_id
        upstream = _one(spans, f"chat {MODEL}")
        assert upstream.parent_id == gateway.span_id
        attributes = upstream.attributes
        assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
        assert attributes["gen_ai.usage.input_tokens"] > 0
        assert attributes["gen_ai.response.model"] == MODEL
        assert "first_token" not in upstream.events
        assert upstream.events["first_byte"]["native1api.upstream.time_to_first_byte"] > 0

        # 3. BYOK: the key is saved (the vault's PutApiKey joins the bridge's trace), then a
        # stream runs on OpenRouter with it; a caller's own traceparent is continued.
        saved = client.post(
            f"{stack.bridge_url}/v1/vault",
            json={"apiKey": OR_KEY},
            headers={**stack.headers(UID), "X-Request-Id": "req-trace-save"},
        )
        assert saved.status_code == 200
        spans = _wait_trace(
            receiver,
            "req-trace-save",
            {"POST /v1/vault", "native1api.vault.v1.VaultService/PutApiKey"},
        )
        put = _one(spans, "native1api.vault.v1.VaultService/PutApiKey")
        assert put.parent_id == _one(spans, "POST /v1/vault").span_id

        caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        body = {"model": MODEL, "messages": [{"role": "user", "content": prompts[2]}]}
        reply = client.post(
            f"{stack.bridge_url}/v1/chat/completions",
            json=body,
            headers={
                **stack.headers(UID),
                "X-Request-Id": "req-trace-byok",
                "traceparent": f"00-{caller_trace}-{caller_span}-01",
            },
        )
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-native1api-provider"] == "openrouter"
        spans = _wait_trace(
            receiver, "req-trace-byok", {BRIDGE_CHAT, gateway_unary, "gateway.vault_lookup"}
        )
        bridge = _one(spans, BRIDGE_CHAT)
        assert (bridge.trace_id, bridge.parent_id) == (caller_trace, caller_span)
        upstream = next(s for s in spans if s.name.startswith("chat "))
        assert upstream.attributes["gen_ai.provider.name"] == "openrouter"
        assert upstream.attributes["native1api.byok"] is True

        # 4. A refused request: the status codes say so, on both sides.
        body = {"model": "@cf/nobody/no-such-model", "messages": [{"role": "user", "content": "x"}]}
        reply = client.post(
            f"{stack.bridge_url}/v1/chat/completions",
            json=body,
            headers={**stack.headers(UID), "X-Request-Id": "req-trace-refused"},
        )
        assert reply.status_code == 404
        spans = _wait_trace(receiver, "req-trace-refused", {BRIDGE_CHAT, gateway_unary})
        assert _one(spans, BRIDGE_CHAT).attributes["http.response.status_code"] == 404
        gateway = _one(spans, gateway_unary)
        assert gateway.attributes["rpc.response.status_code"] == "NOT_FOUND"
        assert gateway.attributes["rpc.grpc.status_code"] == 5

        tokens.append(stack.headers(UID)["Authorization"].removeprefix("Bearer "))

    # Nothing private in any byte that was exported: no credential, no prompt, no completion,
    # not even the user id (only its hash).
    exported = receiver.raw()
    # The search looks at the right bytes: what the spans do carry is there.
    assert hash_uid(UID).encode() in exported and MODEL.encode() in exported
    secrets = {
        "the provider key saved in the vault": OR_KEY,
        "the Workers AI token": CF_TOKEN,
        "the service token": stack.env["SERVICE_TOKEN"],
        "the vault master key": stack.env["VAULT_MASTER_KEY"],
        "the user id": UID,
        **{f"ID token {n}": token for n, token in enumerate(tokens)},
        **{f"prompt {n}": prompt for n, prompt in enumerate(prompts)},
        **{f"completion {n}": reply_text(prompt) for n, prompt in enumerate(prompts)},
    }
    for what, secret in secrets.items():
        assert secret.encode() not in exported, f"{what} was exported"
    # Emulator-mode ID tokens are unsigned JWTs: their payload segment alone is identifying too.
    for token in tokens:
        assert token.split(".")[1].encode() not in exported
