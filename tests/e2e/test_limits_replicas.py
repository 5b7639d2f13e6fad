"""Two gateway processes on one Redis share one budget per user (admission control, SPEC §10).

One vault, the fake Workers AI and TWO `python -m gateway_service` processes, both with the same
`LIMITS_FILE` and `LIMITS_REDIS_URL` (the machine's Redis), called directly over gRPC. Each test
picks its tier with the `tier` claim of an emulator-mode token and uses a user id of its own
(the machine's Redis is shared and never flushed). Each limit test here fails if each gateway
kept its own count (e.g. with `LIMITS_REDIS_URL` unset, the in-process store); the crash test
also fails if the surviving gateway stopped renewing its own leases.

The processes are shared by the module; the test that SIGKILLs gateway A runs after the tests
that need it, and the log check runs last.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from native1api.gateway.v1 import chat_pb2, gateway_service_pb2, gateway_service_pb2_grpc
from tests.support.procs import Service, free_port, start_fake
from tests.support.rpc import error_details
from tests.support.tokens import TokenFactory, bearer

pytestmark = pytest.mark.e2e

PROJECT = "demo-native1api"
CF_TOKEN = "replicas-cf-token-0123456789"
MASTER_KEY = "replicas-master-passphrase-0123456789-abcdef"
SERVICE_TOKEN = "replicas-service-token-0123456789"
MODEL = "@cf/meta/llama-3.2-3b-instruct"

RPM = 10
CONCURRENT = 3
CRASH_CONCURRENT = 2
LIMITS_TOML = f"""
[tiers.default]
requests_per_minute = 600

[tiers.rpm]
requests_per_minute = {RPM}

[tiers.concurrent]
max_concurrent_requests = {CONCURRENT}

[tiers.crash]
max_concurrent_requests = {CRASH_CONCURRENT}
"""

CALL_TIMEOUT = 10.0
"""Seconds any unary call, or the first message of a stream, may take."""
SLOW_STREAM_TIMEOUT = 120.0
"""The deadline of the long streams (they are cancelled, or their gateway killed, long before)."""
LONG_STREAM = "[[fake:chunks=1200,chunk_delay=0.1]]"
"""A stream of two minutes: still running whenever a test looks at it."""

StreamCall: TypeAlias = grpc.aio.UnaryStreamCall[
    gateway_service_pb2.StreamChatCompletionRequest,
    gateway_service_pb2.StreamChatCompletionResponse,
]


@dataclass
class Replicas:
    tmp: Path
    env: dict[str, str]
    addresses: dict[str, str]
    """Gateway name ("a", "b") -> host:port."""
    services: dict[str, Service]
    """By name: vault, gateway-a, gateway-b."""
    fakes: list[Service]
    token_factory: TokenFactory
    tokens: list[str] = field(default_factory=list)
    """Every ID token handed out, to check none reached a log."""

    def token(self, uid: str, tier: str) -> str:
        """An emulator-mode ID token whose `tier` claim selects `tier`."""
        token = self.token_factory.mint_emulator(uid, tier=tier)
        self.tokens.append(token)
        return token

    def secrets(self) -> list[str]:
        return [SERVICE_TOKEN, MASTER_KEY, CF_TOKEN, *self.tokens]

    def stop_all(self) -> dict[str, int]:
        """Stop every process still running; their exit statuses."""
        codes: dict[str, int] = {}
        for name, service in [*reversed(self.services.items()), *(("fake", f) for f in self.fakes)]:
            if service.process is not None and service.process.poll() is None:
                codes[name] = service.terminate()
        return codes

    def leaked(self) -> list[str]:
        """The log files that hold a secret."""
        secrets = self.secrets()
        return sorted(
            path.name
            for path in self.tmp.glob("*.log")
            if any(secret in path.read_text(errors="replace") for secret in secrets)
        )


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Replicas]:
    tmp = tmp_path_factory.mktemp("replicas")
    limits = tmp / "limits.toml"
    limits.write_text(LIMITS_TOML, encoding="utf-8")
    workers, workers_url = start_fake(
        "workers-ai", [CF_TOKEN], tmp / "workers-ai.log", "--account-id=acct"
    )
    vault_address = f"127.0.0.1:{free_port()}"
    env = {
        "FIREBASE_PROJECT_ID": PROJECT,
        "FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:9099",
        "VAULT_MASTER_KEY": MASTER_KEY,
        "SERVICE_TOKEN": SERVICE_TOKEN,
        "VAULT_DATABASE_URL": f"sqlite:///{tmp}/vault.db",
        "USAGE_DATABASE_URL": f"sqlite:///{tmp}/usage.db",  # not the repo's data/usage.db
        "VAULT_LISTEN_ADDR": vault_address,
        "VAULT_ADDR": vault_address,
        "CLOUDFLARE_ACCOUNT_ID": "acct",
        "CLOUDFLARE_API_TOKEN": CF_TOKEN,
        "WORKERS_AI_BASE_URL": workers_url,
        "LIMITS_FILE": str(limits),
        "LIMITS_REDIS_URL": redis_url,
        "LOG_LEVEL": "DEBUG",
    }
    running = Replicas(
        tmp=tmp,
        env=env,
        addresses={},
        services={},
        fakes=[workers],
        token_factory=TokenFactory(project_id=PROJECT),
    )
    try:
        vault = Service("vault_service", env, tmp / "vault.log").start()
        running.services["vault"] = vault
        vault.wait_grpc_healthy(vault_address)
        for name in ("a", "b"):
            address = f"127.0.0.1:{free_port()}"
            gateway_env = {
                **env,
                "GATEWAY_LISTEN_ADDR": address,
                "GATEWAY_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            }
            gateway = Service("gateway_service", gateway_env, tmp / f"gateway-{name}.log")
            running.services[f"gateway-{name}"] = gateway.start()
            running.addresses[name] = address
        for name, address in running.addresses.items():
            running.services[f"gateway-{name}"].wait_grpc_healthy(address)
        yield running
    finally:
        running.stop_all()
    # Whatever the tests did (and whichever of them ran), no secret reached a log.
    assert running.leaked() == []


# -- helpers ---------------------------------------------------------------------------------


def uid(test: str) -> str:
    return f"replica-{test}-{uuid.uuid4().hex[:8]}"


def chat(prompt: str) -> chat_pb2.ChatCompletionRequest:
    return chat_pb2.ChatCompletionRequest(
        model=MODEL, messages=[chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, text=prompt)]
    )


def refused_limit(error: grpc.aio.AioRpcError) -> str:
    """The `limit` of an admission refusal; asserts it is one, with its RetryInfo."""
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (error.code(), error.details())
    info = error_details(error)
    assert info.reason == "RATE_LIMITED"
    assert float(info.metadata["retry_after"]) > 0
    status = rpc_status.from_call(error)
    assert status is not None
    retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert len(retry) == 1, "a refusal carries a google.rpc.RetryInfo"
    return str(info.metadata["limit"])


class Gateways:
    """Async stubs on both gateways, for one test's event loop."""

    def __init__(self, replicas: Replicas) -> None:
        self._channels = {
            name: grpc.aio.insecure_channel(address) for name, address in replicas.addresses.items()
        }
        self.stubs = {
            name: gateway_service_pb2_grpc.GatewayServiceStub(channel)
            for name, channel in self._channels.items()
        }

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    async def complete(self, name: str, token: str, prompt: str) -> str | None:
        """One CreateChatCompletion on gateway `name`: None if it succeeded, else the limit."""
        try:
            reply = await self.stubs[name].CreateChatCompletion(
                gateway_service_pb2.CreateChatCompletionRequest(request=chat(prompt)),
                metadata=bearer(token),
                timeout=CALL_TIMEOUT,
            )
        except grpc.aio.AioRpcError as error:
            return refused_limit(error)
        assert reply.completion.choices, "an admitted completion has an answer"
        return None

    async def open_stream(
        self, name: str, token: str, prompt: str
    ) -> tuple[StreamCall, str | None]:
        """Start a stream on gateway `name` and read its first message: (call, None) once it
        was admitted, (call, limit) when it was refused before any message."""
        call = self.stubs[name].StreamChatCompletion(
            gateway_service_pb2.StreamChatCompletionRequest(request=chat(prompt)),
            metadata=bearer(token),
            timeout=SLOW_STREAM_TIMEOUT,
        )
        try:
            first = await asyncio.wait_for(call.read(), CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            return call, refused_limit(error)
        except TimeoutError:
            call.cancel()
            raise AssertionError(
                f"no first message from gateway {name} in {CALL_TIMEOUT} s"
            ) from None
        assert first is not grpc.aio.EOF, "an admitted stream sends a first message"
        return call, None

    async def wave(self, token: str, prompt: str, count: int) -> tuple[list[StreamCall], list[str]]:
        """`count` streams at once, alternating between the gateways: (admitted, refusal limits)."""
        outcomes = await asyncio.gather(
            *(self.open_stream("ab"[i % 2], token, prompt) for i in range(count))
        )
        admitted = [call for call, limit in outcomes if limit is None]
        refused = [limit for _, limit in outcomes if limit is not None]
        return admitted, refused

    async def in_flight(self, name: str, token: str) -> int:
        usage = await self.stubs[name].GetUsage(
            gateway_service_pb2.GetUsageRequest(), metadata=bearer(token), timeout=CALL_TIMEOUT
        )
        return usage.in_flight


async def drain(call: StreamCall) -> None:
    """Read a stream to its end; it must end OK."""
    while await asyncio.wait_for(call.read(), CALL_TIMEOUT) is not grpc.aio.EOF:
        pass
    assert await call.code() == grpc.StatusCode.OK


async def wait_in_flight(gateways: Gateways, name: str, token: str, expected: int) -> None:
    deadline = time.monotonic() + CALL_TIMEOUT
    while (seen := await gateways.in_flight(name, token)) != expected:
        assert time.monotonic() < deadline, f"in flight stayed {seen}, expected {expected}"
        await asyncio.sleep(0.1)


# -- tests -----------------------------------------------------------------------------------


async def test_requests_per_minute_is_one_bucket_for_both_gateways(replicas: Replicas) -> None:
    token = replicas.token(uid("rpm"), "rpm")
    gateways = Gateways(replicas)
    try:
        started = time.monotonic()
        outcomes = [
            await gateways.complete("ab"[i % 2], token, f"call {i}") for i in range(RPM + 1)
        ]
        # Both gateways see the bucket empty, not only the one that refused.
        after = await gateways.complete("b", token, "one more")
        elapsed = time.monotonic() - started
    finally:
        await gateways.close()
    # The bucket refills one request every 60/RPM s: the calls must all fall inside that.
    assert elapsed < 60 / RPM, f"the calls took {elapsed:.1f} s, the bucket refilled meanwhile"
    assert outcomes == [None] * RPM + ["requests"]
    assert after == "requests"


async def test_concurrent_streams_share_one_set_of_slots(replicas: Replicas) -> None:
    token = replicas.token(uid("conc"), "concurrent")
    gateways = Gateways(replicas)
    try:
        # Ten at once over both gateways: three admitted in all, not three on each.
        admitted, refused = await gateways.wave(
            token, "wave one [[fake:chunks=20,chunk_delay=0.1]]", 10
        )
        assert (len(admitted), refused) == (CONCURRENT, ["concurrency"] * 7)
        assert await gateways.in_flight("a", token) == CONCURRENT
        assert await gateways.in_flight("b", token) == CONCURRENT

        # The admitted streams run to their last byte, which frees their slots: three more.
        await asyncio.gather(*(drain(call) for call in admitted))
        admitted, refused = await gateways.wave(token, f"wave two {LONG_STREAM}", 10)
        assert (len(admitted), refused) == (CONCURRENT, ["concurrency"] * 7)

        # Cancelled streams free their slots too (settled by their gateway, not by expiry).
        for call in admitted:
            call.cancel()
        await wait_in_flight(gateways, "a", token, 0)
        admitted, refused = await gateways.wave(token, f"wave three {LONG_STREAM}", 10)
        assert (len(admitted), refused) == (CONCURRENT, ["concurrency"] * 7)
        for call in admitted:
            call.cancel()
    finally:
        await gateways.close()


async def test_a_killed_gateways_slots_come_back_within_a_minute(replicas: Replicas) -> None:
    """Runs after the tests that need gateway A: it SIGKILLs it."""
    token = replicas.token(uid("crash"), "crash")
    gateways = Gateways(replicas)
    try:
        # A witness on gateway B, admitted first: unless B renews its lease, it expires before
        # the killed gateway's leases do.
        witness_token = replicas.token(uid("renewed"), "crash")
        witness, limit = await gateways.open_stream("b", witness_token, f"witness {LONG_STREAM}")
        assert limit is None

        held = [
            await gateways.open_stream("a", token, f"held {i} {LONG_STREAM}")
            for i in range(CRASH_CONCURRENT)
        ]
        assert [limit for _, limit in held] == [None] * CRASH_CONCURRENT

        replicas.services["gateway-a"].kill()  # SIGKILL: nothing settles the two leases
        killed = time.monotonic()
        for call, _ in held:
            call.cancel()

        # Gateway B sees the dead gateway's slots still held...
        call, limit = await gateways.open_stream("b", token, f"at once {LONG_STREAM}")
        assert limit == "concurrency", "the killed gateway's slots were freed at once"
        assert await gateways.in_flight("b", token) == CRASH_CONCURRENT

        # ...until their leases expire (45 s without renewal).
        while True:
            call, limit = await gateways.open_stream("b", token, f"retry {LONG_STREAM}")
            elapsed = time.monotonic() - killed
            if limit is None:
                call.cancel()
                break
            assert limit == "concurrency"
            assert elapsed < 60, "the killed gateway's slots were still held after 60 s"
            await asyncio.sleep(1.0)

        # The live gateway renewed its own lease all along: the witness still holds its slot.
        assert await gateways.in_flight("b", witness_token) == 1
        witness.cancel()
    finally:
        await gateways.close()
    assert elapsed < 60


def test_no_secret_in_any_log(replicas: Replicas) -> None:
    """Runs last: stops every process, then reads every log."""
    codes = replicas.stop_all()
    assert all(code == 0 for code in codes.values()), codes
    logs = {path.name: path.read_text(errors="replace") for path in replicas.tmp.glob("*.log")}
    assert {"vault.log", "gateway-a.log", "gateway-b.log"} <= logs.keys()
    assert replicas.leaked() == []
