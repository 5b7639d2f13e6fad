"""The gRPC status -> HTTP table, end to end: a scripted GatewayService aborts with each status
(with its ErrorInfo in the trailers, exactly as our services send them), and the real bridge
must answer with the right status, OpenAI envelope and headers, for unary, streamed (before and
after the head) and list calls alike."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import pytest_asyncio

from native1api.gateway.v1 import chat_pb2, gateway_service_pb2, gateway_service_pb2_grpc
from rpc_common.status import RpcError, abort
from tests.bridge.support import Bridge, bridge_settings, chat_body, serve_bridge, stream_chat

pytestmark = pytest.mark.asyncio(loop_scope="module")

C = grpc.StatusCode
Context = grpc.aio.ServicerContext[Any, Any]


@dataclass
class Script:
    """What the scripted gateway does next, and what it saw."""

    error: RpcError | None = None
    raw: tuple[grpc.StatusCode, str] | None = None  # abort without ErrorInfo
    chunks_before_error: int = 0
    metadata: list[dict[str, str]] = field(default_factory=list)


class ScriptedGateway(gateway_service_pb2_grpc.GatewayServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    async def _fail(self, context: Context) -> None:
        self.script.metadata.append(
            {
                key: value
                for key, value in context.invocation_metadata() or ()
                if isinstance(value, str)
            }
        )
        if self.script.raw is not None:
            await context.abort(*self.script.raw)
        assert self.script.error is not None
        await abort(context, self.script.error)

    async def CreateChatCompletion(self, request: Any, context: Context) -> Any:
        await self._fail(context)

    async def ListModels(self, request: Any, context: Context) -> Any:
        await self._fail(context)

    async def GetUsage(self, request: Any, context: Context) -> Any:
        await self._fail(context)

    async def StreamChatCompletion(self, request: Any, context: Context) -> AsyncIterator[Any]:
        chunk = chat_pb2.ChatCompletionChunk(
            id="chatcmpl-x", created=1, model=request.request.model
        )
        chunk.choices.add(
            index=0, delta=chat_pb2.ChoiceDelta(role=chat_pb2.ROLE_ASSISTANT, content="")
        )
        for _ in range(self.script.chunks_before_error):
            yield gateway_service_pb2.StreamChatCompletionResponse(
                chunk=chunk, provider=gateway_service_pb2.PROVIDER_WORKERS_AI
            )
        await self._fail(context)


@dataclass
class Scripted:
    script: Script
    bridge: Bridge


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scripted() -> AsyncIterator[Scripted]:
    script = Script()
    server = grpc.aio.server()
    gateway_service_pb2_grpc.add_GatewayServiceServicer_to_server(ScriptedGateway(script), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with serve_bridge(bridge_settings(f"127.0.0.1:{port}", "127.0.0.1:9")) as bridge:
            yield Scripted(script, bridge)
    finally:
        await server.stop(None)


def err(status: grpc.StatusCode, reason: str, **meta: str) -> RpcError:
    return RpcError(status, reason, f"Shown to the user ({reason}).", meta)


# (error, HTTP status, type, code, param, extra headers)
TABLE: list[tuple[RpcError, int, str, str | None, str | None, dict[str, str]]] = [
    (err(C.INVALID_ARGUMENT, "INVALID_VALUE", param="temperature", code="decimal_above_max_value"), 400, "invalid_request_error", "decimal_above_max_value", "temperature", {}),
    (err(C.FAILED_PRECONDITION, "SOMETHING"), 400, "invalid_request_error", None, None, {}),
    (err(C.OUT_OF_RANGE, "SOMETHING"), 400, "invalid_request_error", None, None, {}),
    (err(C.UNAUTHENTICATED, "TOKEN_EXPIRED"), 401, "invalid_request_error", "invalid_api_key", None, {"www-authenticate": 'Bearer error="invalid_token"'}),
    (err(C.FAILED_PRECONDITION, "BYOK_KEY_REJECTED", provider="openrouter", code="invalid_api_key"), 401, "invalid_request_error", "invalid_api_key", None, {"www-authenticate": "Bearer"}),
    (err(C.FAILED_PRECONDITION, "BYOK_KEY_UNREADABLE", code="invalid_api_key"), 400, "invalid_request_error", "invalid_api_key", None, {}),
    (err(C.PERMISSION_DENIED, "CONTENT_BLOCKED", code="model_not_allowed"), 403, "permission_error", "model_not_allowed", None, {}),
    (err(C.NOT_FOUND, "MODEL_NOT_FOUND", code="model_not_found", param="model"), 404, "invalid_request_error", "model_not_found", "model", {}),
    (err(C.ALREADY_EXISTS, "EXISTS"), 409, "invalid_request_error", None, None, {}),
    (err(C.ABORTED, "CONFLICT"), 409, "invalid_request_error", None, None, {}),
    (err(C.RESOURCE_EXHAUSTED, "RATE_LIMITED", code="rate_limit_exceeded", retry_after="2.2"), 429, "requests", "rate_limit_exceeded", None, {"retry-after": "3", "retry-after-ms": "2200"}),
    (err(C.RESOURCE_EXHAUSTED, "INSUFFICIENT_QUOTA", code="insufficient_quota"), 429, "insufficient_quota", "insufficient_quota", None, {}),
    (err(C.CANCELLED, "CANCELLED"), 499, "invalid_request_error", None, None, {}),
    (err(C.UNIMPLEMENTED, "NOPE"), 501, "server_error", None, None, {}),
    (err(C.UNAVAILABLE, "VAULT_UNAVAILABLE", code="service_unavailable", retry_after="1"), 503, "service_unavailable_error", "service_unavailable", None, {"retry-after": "1"}),
    (err(C.UNAVAILABLE, "UPSTREAM_ERROR", code="upstream_error"), 502, "server_error", "upstream_error", None, {}),
    (err(C.UNAVAILABLE, "UPSTREAM_UNREACHABLE", code="upstream_unreachable"), 502, "server_error", "upstream_unreachable", None, {}),
    (err(C.UNAVAILABLE, "UPSTREAM_STREAM_INTERRUPTED", code="upstream_stream_interrupted"), 502, "server_error", "upstream_stream_interrupted", None, {}),
    (err(C.INTERNAL, "UPSTREAM_PROTOCOL_ERROR", code="upstream_error"), 502, "server_error", "upstream_error", None, {}),
    (err(C.INTERNAL, "UPSTREAM_AUTH_FAILED", code="upstream_auth_failed"), 502, "server_error", "upstream_auth_failed", None, {}),
    (err(C.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", code="upstream_timeout"), 504, "server_error", "upstream_timeout", None, {}),
    (err(C.INTERNAL, "INTERNAL"), 500, "server_error", None, None, {}),
    (err(C.UNKNOWN, "WHAT"), 500, "server_error", None, None, {}),
    (err(C.DATA_LOSS, "LOST"), 500, "server_error", None, None, {}),
    # Admission control (SPEC §10): the 429's type names the limit; Retry-After is whole seconds
    # (at least 1) and retry-after-ms exact.
    (err(C.RESOURCE_EXHAUSTED, "RATE_LIMITED", code="rate_limit_exceeded", limit="requests", retry_after="0.250"), 429, "requests", "rate_limit_exceeded", None, {"retry-after": "1", "retry-after-ms": "250"}),
    (err(C.RESOURCE_EXHAUSTED, "RATE_LIMITED", code="rate_limit_exceeded", limit="tokens", retry_after="1800.5"), 429, "tokens", "rate_limit_exceeded", None, {"retry-after": "1801", "retry-after-ms": "1800500"}),
    (err(C.RESOURCE_EXHAUSTED, "RATE_LIMITED", code="rate_limit_exceeded", limit="concurrency", retry_after="1.000"), 429, "concurrency", "rate_limit_exceeded", None, {"retry-after": "1", "retry-after-ms": "1000"}),
    (err(C.RESOURCE_EXHAUSTED, "RATE_LIMITED", code="rate_limit_exceeded", limit="bogus"), 429, "requests", "rate_limit_exceeded", None, {}),
    (err(C.UNAVAILABLE, "RATE_LIMITER_UNAVAILABLE", code="rate_limiter_unavailable", retry_after="1"), 503, "service_unavailable_error", "rate_limiter_unavailable", None, {"retry-after": "1", "retry-after-ms": "1000"}),
]  # fmt: skip


def check(response_status: int, headers: Any, body: dict[str, Any], row: tuple[Any, ...]) -> None:
    error, status, kind, code, param, extra = row
    assert response_status == status
    assert body == {"error": {"message": error.message, "type": kind, "param": param, "code": code}}
    for name, value in extra.items():
        assert headers[name] == value
    if "www-authenticate" not in extra:
        assert "www-authenticate" not in headers
    if "retry-after" not in extra:
        assert "retry-after" not in headers
        assert "retry-after-ms" not in headers


@pytest.mark.parametrize("row", TABLE, ids=lambda row: f"{row[0].code.name}-{row[0].reason}")
async def test_status_table_unary_stream_and_list(scripted: Scripted, row: tuple[Any, ...]) -> None:
    scripted.script.error, scripted.script.raw = row[0], None
    scripted.script.chunks_before_error = 0
    async with scripted.bridge.client("scripted.token.value") as http:
        response = await http.post("/v1/chat/completions", json=chat_body("x"))
        check(response.status_code, response.headers, response.json(), row)
        # An error before the first chunk: the same JSON error, not a 200 stream.
        result = await stream_chat(http, chat_body("x", stream=True))
        check(result.response.status_code, result.response.headers, result.response.json(), row)
        response = await http.get("/v1/models")
        check(response.status_code, response.headers, response.json(), row)
        response = await http.get("/v1/usage")
        check(response.status_code, response.headers, response.json(), row)


async def test_error_after_the_first_chunk_is_one_frame(scripted: Scripted) -> None:
    row = TABLE[17]  # UPSTREAM_STREAM_INTERRUPTED
    scripted.script.error, scripted.script.raw = row[0], None
    scripted.script.chunks_before_error = 2
    async with scripted.bridge.client("scripted.token.value") as http:
        result = await stream_chat(http, chat_body("x", stream=True))
    assert result.response.status_code == 200
    assert result.response.headers["x-native1api-provider"] == "workers-ai"
    *chunks, last = [json.loads(data) for data in result.data]
    assert len(chunks) == 2
    assert last == {
        "error": {
            "message": row[0].message,
            "type": "server_error",
            "param": None,
            "code": "upstream_stream_interrupted",
        }
    }


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (C.UNAVAILABLE, 503),
        (C.INTERNAL, 500),
        (C.DEADLINE_EXCEEDED, 504),
        (C.RESOURCE_EXHAUSTED, 429),
    ],
)
async def test_status_without_error_info_gets_a_generic_message(
    scripted: Scripted, code: grpc.StatusCode, status: int
) -> None:
    scripted.script.raw = (code, "failed to connect to 10.1.2.3:50051 (internal detail)")
    async with scripted.bridge.client("scripted.token.value") as http:
        response = await http.post("/v1/chat/completions", json=chat_body("x"))
    scripted.script.raw = None
    assert response.status_code == status
    error = response.json()["error"]
    assert "10.1.2.3" not in error["message"] and "internal detail" not in error["message"]
    assert error["message"]


async def test_caller_credential_and_request_id_are_forwarded(scripted: Scripted) -> None:
    scripted.script.error, scripted.script.raw = TABLE[0][0], None
    async with scripted.bridge.client("abc.def.ghi") as http:
        await http.post(
            "/v1/chat/completions", json=chat_body("x"), headers={"x-request-id": "fwd-1"}
        )
        await http.get("/v1/models", headers={"authorization": "bearer   xyz.123"})
    unary, listing = scripted.script.metadata[-2:]
    assert unary["authorization"] == "Bearer abc.def.ghi"
    assert unary["x-request-id"] == "fwd-1"
    assert listing["authorization"] == "Bearer xyz.123"
    assert len(listing["x-request-id"]) == 32
