"""bind_server: health and reflection are served, shutdown flips health and drains."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from rpc_common.serve import bind_server

SERVICE = "test.v1.SlowService"


def _register(server: grpc.aio.Server) -> None:
    async def slow(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await asyncio.sleep(0.3)
        return request

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(slow)}
    )
    server.add_generic_rpc_handlers((handler,))


async def test_health_reflection_and_graceful_stop() -> None:
    serving = bind_server("127.0.0.1:0", _register, [SERVICE])
    assert serving.port > 0
    await serving.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{serving.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = set()
        async for response in responses:
            names = {s.name for s in response.list_services_response.service}
        assert {SERVICE, "grpc.health.v1.Health"} <= names

        echo: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            f"/{SERVICE}/Echo"
        )
        in_flight = asyncio.ensure_future(echo(b"payload"))
        await asyncio.sleep(0.05)
        await serving.stop(grace_seconds=5)
        assert await in_flight == b"payload"  # drained, not cut


async def test_bind_failure_is_an_error() -> None:
    serving = bind_server("127.0.0.1:0", _register, [SERVICE])
    with pytest.raises(OSError, match="cannot listen"):
        bind_server(f"127.0.0.1:{serving.port}", _register, [SERVICE])
