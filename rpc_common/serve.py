"""Serving a gRPC service the same way in every process: health, reflection, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from rpc_common.tracing import server_interceptors

_LOGGER = logging.getLogger(__name__)

# Keep-alives let long streams survive idle proxies, and let a dead peer be noticed.
SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.max_send_message_length", 8 * 1024 * 1024),
    # Without this, a second process on the same port silently shares it (SO_REUSEPORT).
    ("grpc.so_reuseport", 0),
)


DRAIN_NOTICE_SECONDS = 0.5


@dataclass
class Serving:
    """A bound (not yet started) gRPC server and its health servicer."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: tuple[str, ...]
    #: Called when shutdown begins, before in-flight calls are drained: ends long-lived streams
    #: (the vault's change feeds) that would otherwise hold the drain for the whole grace period.
    on_stopping: list[Callable[[], None]] = field(default_factory=list)

    async def start(self) -> None:
        """Start serving and report every service as SERVING."""
        await self.server.start()
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_seconds: float | None) -> None:
        """Report NOT_SERVING, then let in-flight RPCs finish for up to `grace_seconds`.

        Between the two, clients that watch our health (round robin with health checking) get
        `DRAIN_NOTICE_SECONDS` to move away: a call that arrived after `server.stop` would be
        cancelled instead of refused, and so never retried on another replica.
        """
        await self.health.enter_graceful_shutdown()
        for callback in self.on_stopping:
            callback()
        if grace_seconds:
            await asyncio.sleep(min(DRAIN_NOTICE_SECONDS, grace_seconds))
        await self.server.stop(grace_seconds)


def bind_server(
    address: str,
    register: Callable[[grpc.aio.Server], None],
    service_names: Sequence[str],
    credentials: grpc.ServerCredentials | None = None,
) -> Serving:
    """Create a server with health and reflection, call `register` to add servicers, bind `address`
    (over TLS with `credentials`, see `rpc_common.tls`).

    Tests pass `127.0.0.1:0` and read the chosen port from the result.
    """
    # No interceptor at all while tracing is off: an untraced call costs exactly what it did.
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=server_interceptors())
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:  # grpcio's bind failure carries no errno; say what to do instead
        raise OSError(
            f"cannot listen on {address}: the address is in use or not available "
            "(stop the other process or choose another address)"
        ) from None
    return Serving(server, port, health_servicer, tuple(service_names))


async def serve_until_signal(
    serving: Serving,
    *,
    grace_seconds: float,
    on_stopped: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then drain gracefully and run `on_stopped`."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serving.start()
    _LOGGER.info("serving %s on port %d", ", ".join(serving.service_names), serving.port)
    await stop.wait()
    _LOGGER.info("shutting down: draining in-flight calls for up to %.0f s", grace_seconds)
    await serving.stop(grace_seconds)
    if on_stopped is not None:
        await on_stopped()
    _LOGGER.info("stopped")
