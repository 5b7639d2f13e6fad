"""Channels over several replicas (SPEC §12): the service config, targets, and what is retried.

In process, on loopback: two servers built like ours (`bind_server`: health, graceful stop)
behind one channel from `TlsSettings.aio_channel(..., health_service=...)`, the way the bridge and
the gateway build theirs. Each call counts where it ran, so "not retried" is a count of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
from grpc_health.v1 import health_pb2

from rpc_common.channels import (
    MAX_ATTEMPTS,
    balanced_options,
    grpc_target,
    parse_target,
    service_config,
)
from rpc_common.config import ConfigError
from rpc_common.serve import Serving, bind_server
from rpc_common.status import NO_RETRY, RpcError, unary_errors
from rpc_common.tls import TlsSettings
from tests.support.rpc import reason

SERVICE = "test.v1.Replicated"
WHO = f"/{SERVICE}/Who"
CALL_TIMEOUT = 5.0

Context = grpc.aio.ServicerContext[bytes, bytes]


# -- the service config and the options ----------------------------------------------------


def test_service_config_balances_healthy_replicas_and_retries_unavailable() -> None:
    config = service_config("native1api.vault.v1.VaultService")
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["healthCheckConfig"] == {"serviceName": "native1api.vault.v1.VaultService"}
    (method,) = config["methodConfig"]
    assert method["name"] == [{}]
    policy = method["retryPolicy"]
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert 2 <= policy["maxAttempts"] <= 5  # gRPC caps attempts at 5
    json.dumps(config)  # what the channel option carries


def test_the_callers_options_are_kept_and_win_over_the_defaults() -> None:
    caller = (
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.max_reconnect_backoff_ms", 1_000),
    )
    options = balanced_options("svc", caller)
    assert options[: len(caller)] == caller
    names = [name for name, _ in options]
    assert names.count("grpc.max_reconnect_backoff_ms") == 1
    assert names.count("grpc.service_config") == 1
    assert ("grpc.enable_retries", 1) in options
    config = json.loads(dict(options)["grpc.service_config"])
    assert config["healthCheckConfig"] == {"serviceName": "svc"}
    with pytest.raises(ValueError, match="service config"):
        balanced_options("svc", (("grpc.service_config", "{}"),))


# -- targets -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "127.0.0.1:50051",
        "vault:50051",
        "vault.internal.example:443",
        "[::1]:50051",
        "ipv4:127.0.0.1:50051,127.0.0.1:50061",
        "ipv4:10.0.0.5:50051",
        "ipv6:[::1]:50051,[fe80::1]:50052",
        "dns:///vault:50051",
        "dns:vault:50051",
        "dns://10.0.0.2:53/vault:50051",
        "unix:/run/native1api/vault.sock",
        "unix-abstract:native1api-vault",
    ],
)
def test_targets_gRPC_can_dial_are_accepted(target: str) -> None:
    assert parse_target("VAULT_ADDR", target) == target


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("vault", "no :PORT"),
        ("vault:", "port"),
        ("vault:http", "port"),
        ("vault:70000", "port"),
        ("vault:0", "port"),
        ("no port", "spaces"),
        ("vault:50051 ", "spaces"),
        ("http://vault:50051", "not a URL"),
        ("127.0.0.1:50051,127.0.0.1:50061", "ipv4:"),
        ("ipv4:", "at least one"),
        ("ipv4:127.0.0.1:50051,", "empty address"),
        ("ipv4:127.0.0.1", "no :PORT"),
        ("ipv4:vault:50051", "not an IPv4"),
        ("ipv4:999.0.0.1:50051", "not an IPv4"),
        ("ipv6:::1:50051", "[ADDRESS]:PORT"),
        ("ipv6:[127.0.0.1]:50051", "not an IPv6"),
        ("dns:///vault", "no :PORT"),
        ("dns://vault:50051", "resolver"),
        ("dns:///a:1,b:2", "one host"),
        ("::1:50051", "brackets"),
        ("[vault]:50051", "not an IPv6"),
        ("unix:", "path"),
        ("vault!:50051", "host name"),
    ],
)
def test_garbage_is_refused_naming_the_variable(target: str, why: str) -> None:
    with pytest.raises(ConfigError, match="GATEWAY_ADDR") as info:
        parse_target("GATEWAY_ADDR", target)
    assert why in str(info.value)


def test_an_unset_target_is_the_default() -> None:
    assert grpc_target({}, "VAULT_ADDR", "127.0.0.1:50051") == "127.0.0.1:50051"
    assert grpc_target({"VAULT_ADDR": " "}, "VAULT_ADDR", "127.0.0.1:50051") == "127.0.0.1:50051"


# -- calls over two replicas ----------------------------------------------------------------


@dataclass
class Replica:
    """A server like ours answering `Who` with its name, or failing the way `mode` says."""

    name: str
    mode: str = "ok"  # ok | unavailable (our RpcError) | bare (an UNAVAILABLE without pushback)
    calls: int = 0
    serving: Serving | None = field(default=None, repr=False)

    @unary_errors
    async def who(self, request: bytes, context: Context) -> bytes:
        self.calls += 1
        if self.mode == "unavailable":
            raise RpcError(grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNREACHABLE", "upstream down")
        if self.mode == "bare":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no pushback")
        return self.name.encode()

    def register(self, server: grpc.aio.Server) -> None:
        handler = grpc.method_handlers_generic_handler(
            SERVICE, {"Who": grpc.unary_unary_rpc_method_handler(self.who)}
        )
        server.add_generic_rpc_handlers((handler,))

    async def start(self) -> int:
        self.serving = bind_server("127.0.0.1:0", self.register, [SERVICE])
        await self.serving.start()
        return self.serving.port

    async def set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        assert self.serving is not None
        await self.serving.health.set(SERVICE, status)

    async def stop(self) -> None:
        if self.serving is not None:
            await self.serving.server.stop(None)


class BreakingProxy:
    """A TCP relay to a replica that, once `broken`, resets the connection as soon as the client
    sends anything: the replica looks up (the channel still has it ready) until a call is
    written, which then never reaches it. A host that vanished, or a process just killed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.broken = False
        self.resets = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
            await asyncio.gather(
                self._pump(reader, up_writer, (writer, up_writer)),
                self._pump(up_reader, writer, None),
            )
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        reset: tuple[asyncio.StreamWriter, asyncio.StreamWriter] | None,
    ) -> None:
        try:
            while data := await source.read(65536):
                if reset is not None and self.broken:
                    self.resets += 1
                    for writer in reset:  # RST, not FIN: the bytes are lost, not delivered
                        sock = writer.get_extra_info("socket")
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        writer.transport.abort()
                    return
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            sink.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()


@contextlib.asynccontextmanager
async def balanced(*ports: int) -> AsyncIterator[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]]:
    """`Who` over one channel to every port, built as the bridge and the gateway build theirs."""
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)
    channel = TlsSettings().aio_channel(target, health_service=SERVICE)
    try:
        yield channel.unary_unary(WHO)
    finally:
        await channel.close()


async def until_both_answer(who: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]) -> set[bytes]:
    """Call until both replicas have answered (both connected, healthy, in the rotation)."""
    seen: set[bytes] = set()
    for _ in range(40):
        seen.add(await who(b"", timeout=CALL_TIMEOUT, wait_for_ready=True))
        if len(seen) == 2:
            return seen
    raise AssertionError(f"only {seen} answered 40 calls: round_robin is not balancing")


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[Replica, Replica]]:
    pair = (Replica("a"), Replica("b"))
    try:
        yield pair
    finally:
        for replica in pair:
            await replica.stop()


async def test_calls_are_spread_over_both_replicas(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    async with balanced(await a.start(), await b.start()) as who:
        assert await until_both_answer(who) == {b"a", b"b"}
        a.calls = b.calls = 0
        for _ in range(20):
            await who(b"", timeout=CALL_TIMEOUT)
    assert (a.calls, b.calls) == (10, 10)


async def test_a_server_side_unavailable_carries_the_pushback_and_is_not_retried(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    async with balanced(await a.start(), await b.start()) as who:
        await until_both_answer(who)
        a.mode = b.mode = "unavailable"
        a.calls = b.calls = 0
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await who(b"", timeout=CALL_TIMEOUT)
        error = info.value
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert reason(error) == "UPSTREAM_UNREACHABLE"  # the rich status is intact
        assert NO_RETRY in tuple(error.trailing_metadata() or ())
        assert a.calls + b.calls == 1, "a status our server chose was retried"

        # The control: the same channel does retry an UNAVAILABLE without the pushback, so the
        # count of one above is the pushback's doing (and the retry policy is in force).
        a.mode = b.mode = "bare"
        a.calls = b.calls = 0
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await who(b"", timeout=CALL_TIMEOUT)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert NO_RETRY not in tuple(info.value.trailing_metadata() or ())
        assert a.calls + b.calls == MAX_ATTEMPTS


async def test_a_broken_connection_is_retried_on_the_other_replica(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    proxy = BreakingProxy(await a.start())
    try:
        async with balanced(await proxy.start(), await b.start()) as who:
            await until_both_answer(who)
            a.calls = b.calls = 0
            proxy.broken = True  # replica a "dies"; the channel does not know yet
            answers = await asyncio.gather(
                *(who(b"", timeout=CALL_TIMEOUT) for _ in range(10)), return_exceptions=True
            )
            assert proxy.resets >= 1, "no call was sent to the broken replica"
            assert answers == [b"b"] * 10, "a call lost with the connection was not retried"
            assert (a.calls, b.calls) == (0, 10)
    finally:
        await proxy.close()


async def test_a_replica_reporting_not_serving_leaves_the_rotation_and_comes_back(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    async with balanced(await a.start(), await b.start()) as who:
        await until_both_answer(who)
        await b.set_health(health_pb2.HealthCheckResponse.NOT_SERVING)  # b drains
        for _ in range(100):  # the Watch stream brings the news within milliseconds
            await asyncio.sleep(0.01)
            a.calls = b.calls = 0
            for _ in range(10):
                await who(b"", timeout=CALL_TIMEOUT)
            if b.calls == 0:
                break
        assert (a.calls, b.calls) == (10, 0)

        await b.set_health(health_pb2.HealthCheckResponse.SERVING)
        assert await until_both_answer(who) == {b"a", b"b"}
