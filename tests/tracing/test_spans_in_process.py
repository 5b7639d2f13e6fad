"""The gateway's and the vault's spans on the ways a call ends, with real servers in one process.

Tracing is switched on for these tests with the SDK's in-memory exporter (`tracing.start`), so
every span can be looked at once it ended; the servers are built afterwards, as in production
(`setup` runs before the server is bound).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway_service import tracing as gateway_tracing
from gateway_service.request_log import hash_uid
from gateway_service.routing import Route
from native1api.gateway.v1 import chat_pb2, gateway_service_pb2
from rpc_common import tracing
from tests.support.stack import Stack, running_stack
from tests.support.tokens import TokenFactory
from vault_service.crypto import KeyRing

MODEL = "@cf/meta/llama-3.2-3b-instruct"
STREAM = "native1api.gateway.v1.GatewayService/StreamChatCompletion"
UNARY = "native1api.gateway.v1.GatewayService/CreateChatCompletion"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.start(provider)
    try:
        yield memory
    finally:
        tracing.stop()
        provider.shutdown()


@pytest.fixture
async def stack(
    exporter: InMemorySpanExporter, tmp_path: Path, tokens: TokenFactory, keyring: KeyRing
) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path, tokens, keyring) as running:
        yield running


def _request(prompt: str) -> chat_pb2.ChatCompletionRequest:
    return chat_pb2.ChatCompletionRequest(
        model=MODEL, messages=[chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, text=prompt)]
    )


async def _ended(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    """The one ended span called `name` (a server span ends just after the client's call)."""
    for _ in range(200):
        found = [s for s in exporter.get_finished_spans() if s.name == name]
        if found:
            assert len(found) == 1, name
            return found[0]
        await asyncio.sleep(0.01)
    raise AssertionError(
        f"no ended span {name!r}: {[s.name for s in exporter.get_finished_spans()]}"
    )


async def test_a_client_that_leaves_mid_stream_ends_every_span_as_cancelled(
    stack: Stack, exporter: InMemorySpanExporter
) -> None:
    request = gateway_service_pb2.StreamChatCompletionRequest(
        request=_request("leave early [[fake:chunks=50,chunk_delay=0.05]]")
    )
    call = stack.gateway.StreamChatCompletion(request, metadata=stack.user("leaver"))
    for _ in range(2):  # the role chunk, then the first content
        message = await call.read()
        assert isinstance(message, gateway_service_pb2.StreamChatCompletionResponse)
        assert message.chunk.choices
    call.cancel()
    server = await _ended(exporter, STREAM)
    upstream = await _ended(exporter, f"chat {MODEL}")
    assert server.kind is SpanKind.SERVER
    assert server.attributes is not None and upstream.attributes is not None
    assert server.attributes["rpc.response.status_code"] == "CANCELLED"
    assert server.status.status_code is StatusCode.UNSET  # the client's choice, not our error
    assert server.attributes["user.hash"] == hash_uid("leaver")
    assert upstream.parent is not None and upstream.parent.span_id == server.context.span_id
    assert upstream.attributes["error.type"] == "cancelled"
    assert [event.name for event in upstream.events] == ["first_byte", "first_token"]


class _Context:
    """What the server wrapper reads of a grpc.aio ServicerContext."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-request-id", "req-abandoned"),)

    def code(self) -> None:
        return None


async def test_a_stream_closed_outside_its_call_ends_its_span_and_its_servicer_quietly(
    exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that leaves while gRPC is blocked sending: the event loop closes the abandoned
    response generator later, in a copy of the call's context. The servicer's `finally` still
    runs at that moment, the span ends as CANCELLED, and nothing is logged as an error."""
    closed = asyncio.Event()

    async def servicer(request: object, context: object) -> AsyncIterator[str]:
        try:
            for n in range(100):
                yield f"chunk {n}"
        finally:
            closed.set()

    handler: tracing.Handler = grpc.unary_stream_rpc_method_handler(servicer)
    wrapped = tracing._wrap("/native1api.test.v1.Test/Stream", handler)
    assert wrapped is not handler and wrapped.unary_stream is not None
    stream = wrapped.unary_stream(object(), _Context())  # type: ignore[arg-type]

    async def call() -> None:
        assert await stream.__anext__() == "chunk 0"  # type: ignore[attr-defined]

    await asyncio.get_running_loop().create_task(call())
    # Closed from another task and context, as the loop's async-generator finalizer does.
    await asyncio.get_running_loop().create_task(
        stream.aclose(),  # type: ignore[attr-defined]
        context=contextvars.copy_context(),
    )
    assert closed.is_set()
    (span,) = exporter.get_finished_spans()
    assert span.name == "native1api.test.v1.Test/Stream"
    assert span.attributes is not None
    assert span.attributes["rpc.response.status_code"] == "CANCELLED"
    assert span.attributes["native1api.request_id"] == "req-abandoned"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_an_upstream_error_marks_the_upstream_span_and_the_rpc_failed(
    stack: Stack, exporter: InMemorySpanExporter
) -> None:
    request = gateway_service_pb2.CreateChatCompletionRequest(
        request=_request("fail please [[fake:status=500]]")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.gateway.CreateChatCompletion(request, metadata=stack.user("unlucky"))
    server = await _ended(exporter, UNARY)
    upstream = await _ended(exporter, f"chat {MODEL}")
    assert server.attributes is not None and upstream.attributes is not None
    code = caught.value.code()
    assert server.attributes["rpc.response.status_code"] == code.name
    assert server.attributes["rpc.grpc.status_code"] == code.value[0]
    assert upstream.status.status_code is StatusCode.ERROR
    reason = upstream.attributes["error.type"]  # the RpcError's reason, e.g. UPSTREAM_ERROR
    assert isinstance(reason, str) and reason.isupper()
    # The upstream's error text is never span data (it could quote the prompt).
    assert upstream.status.description == upstream.attributes["error.type"]
    # The error's head arrived (first_byte: retries with max_retries=2 mark each attempt's); no
    # token ever did.
    assert {event.name for event in upstream.events} == {"first_byte"}
    for span in exporter.get_finished_spans():
        assert "fail please" not in str(span.to_json())


async def test_a_vault_call_is_a_child_of_the_lookup_and_a_cache_hit_skips_it(
    stack: Stack, exporter: InMemorySpanExporter
) -> None:
    vault = stack.gateway_app.vault
    assert vault is not None
    for _ in range(500):  # the gateway caches only while it follows the vault's change feed
        if vault.cache_live:
            break
        await asyncio.sleep(0.01)
    assert vault.cache_live
    request = gateway_service_pb2.CreateChatCompletionRequest(request=_request("hello"))
    await stack.gateway.CreateChatCompletion(request, metadata=stack.user("cached"))
    lookup = await _ended(exporter, "gateway.vault_lookup")
    access = await _ended(exporter, "native1api.vault.v1.VaultService/AccessApiKey")
    assert access.parent is not None and access.parent.span_id == lookup.context.span_id
    assert access.parent.is_remote  # it crossed gRPC as traceparent
    exporter.clear()
    await stack.gateway.CreateChatCompletion(request, metadata=stack.user("cached"))
    hit = await _ended(exporter, "gateway.vault_cache_hit")
    server = await _ended(exporter, UNARY)
    assert hit.parent is not None and hit.parent.span_id == server.context.span_id
    names = {span.name for span in exporter.get_finished_spans()}
    assert "gateway.vault_lookup" not in names
    assert "native1api.vault.v1.VaultService/AccessApiKey" not in names


def test_off_installs_nothing_and_the_helpers_are_shared_no_ops() -> None:
    assert not tracing.enabled
    assert tracing.server_interceptors() == ()
    assert tracing.outgoing_metadata() == ()
    # One shared object each: no allocation and no work per call while tracing is off.
    assert tracing.span("a") is tracing.span("b")
    assert gateway_tracing.admission("u1") is gateway_tracing.admission("u2")
    first = gateway_tracing.upstream(None, "m1")  # type: ignore[arg-type]
    assert first is gateway_tracing.upstream(None, "m2")  # type: ignore[arg-type]
    with first as call:
        call.first_token()
        call.end(None, [])


def test_first_byte_marks_the_running_upstream_call_only(exporter: InMemorySpanExporter) -> None:
    provider = SimpleNamespace(name="together")
    route = Route(
        provider=provider,  # only its name is read
        model="meta-llama/x",
        api_key="tgp_secret",
        byok=True,
    )
    gateway_tracing.first_byte()  # outside any upstream call: nothing to mark, no error
    with gateway_tracing.upstream(route, "@cf/meta/x") as call:
        gateway_tracing.first_byte()
        call.completed(chat_pb2.ChatCompletion(model="@cf/meta/x"))
    gateway_tracing.first_byte()  # after it ended: nothing
    (span,) = exporter.get_finished_spans()
    assert span.name == "chat meta-llama/x"
    assert [event.name for event in span.events] == ["first_byte"]
    assert span.attributes is not None
    elapsed = span.attributes["native1api.upstream.time_to_first_byte"]
    assert isinstance(elapsed, float) and elapsed > 0
    assert span.attributes["gen_ai.system"] == "together"
    assert "tgp_secret" not in span.to_json()
