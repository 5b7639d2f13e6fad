"""The gateway's cache of vault answers: reused while the change feed is live, never stale.

See gateway_service/vault_client.py and vault_service/change_feed.py for the contract.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import MappingProxyType
from typing import Any

import grpc
import pytest

from gateway_service.config import GatewaySettings
from gateway_service.vault_client import VaultClient
from native1api.gateway.v1 import gateway_service_pb2
from native1api.vault.v1 import vault_service_pb2, vault_service_pb2_grpc
from rpc_common.auth import Caller
from rpc_common.config import ConfigError
from tests.gateway.test_gateway_service import chat
from tests.support.rpc import reason
from tests.support.stack import OPENROUTER_KEY, SERVICE_TOKEN, Stack
from vault_service.change_feed import ChangeFeed


def vault_client(stack: Stack) -> VaultClient:
    client = stack.gateway_app.vault
    assert client is not None
    return client


async def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds * 100)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def count_vault_reads(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every uid the vault's store is asked for (one per AccessApiKey that reaches it)."""
    store = stack.vault_app.store
    original: Callable[[str], Awaitable[Any]] = store.get
    reads: list[str] = []

    async def get(uid: str) -> Any:
        reads.append(uid)
        return await original(uid)

    monkeypatch.setattr(store, "get", get)
    return reads


async def complete(stack: Stack, uid: str) -> gateway_service_pb2.CreateChatCompletionResponse:
    return await stack.gateway.CreateChatCompletion(
        gateway_service_pb2.CreateChatCompletionRequest(request=chat("cache me")),
        metadata=stack.user(uid),
    )


async def test_answers_are_reused_while_the_feed_is_live(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    await wait_until(lambda: vault_client(stack).cache_live)
    reads = count_vault_reads(stack, monkeypatch)
    for _ in range(3):
        reply = await complete(stack, "dora")
        assert reply.provider == gateway_service_pb2.PROVIDER_WORKERS_AI
    assert reads == ["dora"]


async def test_a_save_or_delete_is_seen_by_the_very_next_request(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    await wait_until(lambda: vault_client(stack).cache_live)
    assert (await complete(stack, "eve")).provider == gateway_service_pb2.PROVIDER_WORKERS_AI
    for _ in range(5):  # repeated, so an ordering race would show
        await stack.save_key("eve", OPENROUTER_KEY)
        assert (await complete(stack, "eve")).provider == gateway_service_pb2.PROVIDER_OPENROUTER
        await stack.delete_key("eve")
        assert (await complete(stack, "eve")).provider == gateway_service_pb2.PROVIDER_WORKERS_AI


async def test_entries_expire(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    client = vault_client(stack)
    await wait_until(lambda: client.cache_live)
    monkeypatch.setattr(client, "_ttl", 0.05)
    reads = count_vault_reads(stack, monkeypatch)
    await complete(stack, "fay")
    await asyncio.sleep(0.1)
    await complete(stack, "fay")
    assert reads == ["fay", "fay"]


async def test_vault_down_turns_the_cache_off(stack: Stack) -> None:
    client = vault_client(stack)
    await wait_until(lambda: client.cache_live)
    await complete(stack, "gil")  # cached now
    await stack.vault_app.serving.stop(None)
    await wait_until(lambda: not client.cache_live)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await complete(stack, "gil")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert reason(info.value) == "VAULT_UNAVAILABLE"


async def test_no_cache_when_turned_off(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    client = VaultClient(stack.vault_address, SERVICE_TOKEN, cache_seconds=0)
    client.start()
    reads = count_vault_reads(stack, monkeypatch)
    caller = Caller(uid="ines", claims=MappingProxyType({}), token=stack.tokens.mint("ines"))
    try:
        assert await client.byok_key(caller) is None
        assert await client.byok_key(caller) is None
        assert not client.cache_live
    finally:
        await client.close()
    assert reads == ["ines", "ines"]


async def test_feed_needs_the_service_token(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.vault_address) as channel:
        stub = vault_service_pb2_grpc.VaultServiceStub(channel)
        call = stub.WatchApiKeyChanges(iter(()), metadata=stack.user("mallory"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_feed_waits_for_acks_and_cuts_a_silent_watcher() -> None:
    feed = ChangeFeed(ack_timeout=0.2)
    acks: asyncio.Queue[vault_service_pb2.WatchApiKeyChangesRequest] = asyncio.Queue()

    async def requests() -> AsyncIterator[vault_service_pb2.WatchApiKeyChangesRequest]:
        while True:
            yield await acks.get()

    stream = feed.serve(requests())
    assert (await anext(stream)).seq == 0
    assert len(feed) == 1

    publish = asyncio.create_task(feed.publish("hana"))
    change = await anext(stream)
    assert (change.seq, change.uid_hash) == (1, "hana")
    await asyncio.sleep(0.05)
    assert not publish.done()  # waiting for the ack
    acks.put_nowait(vault_service_pb2.WatchApiKeyChangesRequest(ack=1))
    await asyncio.wait_for(publish, 1)

    # No ack: the write returns after the timeout and the watcher is cut off.
    started = asyncio.get_running_loop().time()
    publish = asyncio.create_task(feed.publish("ivan"))
    assert (await anext(stream)).uid_hash == "ivan"
    await asyncio.wait_for(publish, 1)
    assert asyncio.get_running_loop().time() - started >= 0.2
    with pytest.raises(Exception, match="change feed"):
        await anext(stream)
    assert len(feed) == 0
    await feed.publish("nobody-listens")  # returns at once


@pytest.mark.parametrize(
    ("raw", "expected"), [("", 2.0), ("0", 0.0), ("0.5", 0.5), ("10", 10.0), ("60", 60.0)]
)
def test_cache_seconds_setting(raw: str, expected: float) -> None:
    env = {**_GATEWAY_ENV, "GATEWAY_VAULT_CACHE_SECONDS": raw}
    assert GatewaySettings.from_env(env).vault_cache_seconds == expected


@pytest.mark.parametrize("raw", ["-1", "61", "soon"])
def test_cache_seconds_setting_refuses_nonsense(raw: str) -> None:
    env = {**_GATEWAY_ENV, "GATEWAY_VAULT_CACHE_SECONDS": raw}
    with pytest.raises(ConfigError, match="GATEWAY_VAULT_CACHE_SECONDS"):
        GatewaySettings.from_env(env)


_GATEWAY_ENV = {
    "FIREBASE_PROJECT_ID": "demo-x",
    "SERVICE_TOKEN": "service-token-value",
    "CLOUDFLARE_ACCOUNT_ID": "acct",
    "CLOUDFLARE_API_TOKEN": "cf-token",
}
