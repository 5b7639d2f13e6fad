"""The bridge's two long-lived gRPC channels (gateway, vault) and their stubs.

One channel per backend for the life of the process: gRPC multiplexes every request over it,
so a request never pays for a connection. `GATEWAY_ADDR` / `VAULT_ADDR` may name several
replicas; each channel balances over the healthy ones (`rpc_common.channels`). Channels are
created inside the running event loop (the app's lifespan), as grpc.aio requires.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from native1api.gateway.v1 import gateway_service_pb2, gateway_service_pb2_grpc
from native1api.vault.v1 import vault_service_pb2, vault_service_pb2_grpc
from rpc_common.tls import TlsSettings

GATEWAY_SERVICE: Final = gateway_service_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name
VAULT_SERVICE: Final = vault_service_pb2.DESCRIPTOR.services_by_name["VaultService"].full_name

CHANNEL_OPTIONS: Final[tuple[tuple[str, int], ...]] = (
    # Keep-alives let a long, quiet stream survive and a dead backend be noticed.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # A body may be 4 MiB of JSON by default and completions can be long; stay above both.
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    # Reconnect quickly after a backend restart instead of backing off for up to 2 minutes.
    ("grpc.max_reconnect_backoff_ms", 5_000),
)


@dataclass(frozen=True, slots=True)
class Backends:
    """Stubs over the two channels; `aclose` closes the channels."""

    gateway_channel: grpc.aio.Channel
    vault_channel: grpc.aio.Channel
    gateway: gateway_service_pb2_grpc.GatewayServiceAsyncStub
    vault: vault_service_pb2_grpc.VaultServiceAsyncStub

    @classmethod
    def open(cls, gateway_addr: str, vault_addr: str, tls: TlsSettings | None = None) -> Backends:
        tls = tls or TlsSettings()
        # Balanced over every replica the targets name, healthy ones only (rpc_common.channels).
        gateway_channel = tls.aio_channel(
            gateway_addr, options=CHANNEL_OPTIONS, health_service=GATEWAY_SERVICE
        )
        vault_channel = tls.aio_channel(
            vault_addr, options=CHANNEL_OPTIONS, health_service=VAULT_SERVICE
        )
        return cls(
            gateway_channel,
            vault_channel,
            gateway_service_pb2_grpc.GatewayServiceStub(gateway_channel),
            vault_service_pb2_grpc.VaultServiceStub(vault_channel),
        )

    async def aclose(self, grace: float | None = None) -> None:
        await asyncio.gather(self.gateway_channel.close(grace), self.vault_channel.close(grace))

    async def ready(self, timeout_seconds: float) -> dict[str, bool]:
        """Ask both backends' `grpc.health.v1.Health/Check` for their service, concurrently.

        Over the balanced channels: with several replicas, one healthy replica of each service
        answering is enough (the channels send calls to the healthy ones only)."""
        gateway, vault = await asyncio.gather(
            _serving(self.gateway_channel, GATEWAY_SERVICE, timeout_seconds),
            _serving(self.vault_channel, VAULT_SERVICE, timeout_seconds),
        )
        return {"gateway": gateway, "vault": vault}


async def _serving(channel: grpc.aio.Channel, service: str, timeout_seconds: float) -> bool:
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        reply = await stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout_seconds
        )
    except grpc.aio.AioRpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
