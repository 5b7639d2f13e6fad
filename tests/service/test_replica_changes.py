"""Vault replicas on one PostgreSQL database tell each other's gateways about key changes (SPEC §12).

Two real vault servers share one schema; a gateway's vault client follows vault B's change feed
with a 60 s cache. Writes go through vault A, so only PostgreSQL NOTIFY → B's LISTEN → B's feed can
make the gateway drop a cached answer within a second (the TTL alone would take a minute).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import grpc
import psycopg
import pytest

from gateway_service.request_log import hash_uid
from gateway_service.routing import ByokKey
from gateway_service.vault_client import VaultClient
from gateway_service.vault_client import uid_hash as gateway_uid_hash
from native1api.vault.v1 import vault_service_pb2, vault_service_pb2_grpc
from rpc_common.auth import Caller
from tests.service.test_vault_service import (
    OPENROUTER_KEY,
    SERVICE_TOKEN,
    TOGETHER_KEY,
    settings,
)
from tests.support.tokens import TokenFactory, bearer
from vault_service.crypto import KeyRing
from vault_service.server import VaultApp, build_vault
from vault_service.storage.base import uid_hash
from vault_service.storage.postgres import (
    LISTENER_APPLICATION_NAME,
    ChangeFollower,
    PostgresKeyStore,
)

pytestmark = pytest.mark.postgres

PROPAGATION_LIMIT = 1.0  # seconds; the gateway's cache TTL in these tests is 60


@dataclass
class Replicas:
    a: VaultApp
    b: VaultApp
    a_stub: vault_service_pb2_grpc.VaultServiceAsyncStub
    gateway: VaultClient  # follows vault B's feed
    tokens: TokenFactory
    url: str

    def caller(self, uid: str) -> Caller:
        return Caller(uid=uid, claims=MappingProxyType({}), token=self.tokens.mint(uid))

    async def save_through_a(self, uid: str, api_key: str) -> None:
        await self.a_stub.PutApiKey(
            vault_service_pb2.PutApiKeyRequest(api_key=api_key),
            metadata=bearer(self.tokens.mint(uid)),
        )

    async def delete_through_a(self, uid: str) -> None:
        await self.a_stub.DeleteApiKey(
            vault_service_pb2.DeleteApiKeyRequest(), metadata=bearer(self.tokens.mint(uid))
        )

    def follower_b(self) -> ChangeFollower:
        store = self.b.store
        assert isinstance(store, PostgresKeyStore)
        assert store.follower is not None
        return store.follower


async def _vault(url: str, keyring: KeyRing, tokens: TokenFactory) -> VaultApp:
    app = await build_vault(settings(url), keyring=keyring, verifier=tokens.verifier())
    await app.serving.start()
    return app


@pytest.fixture
async def replicas(
    postgres_url: str, keyring: KeyRing, tokens: TokenFactory
) -> AsyncIterator[Replicas]:
    a = await _vault(postgres_url, keyring, tokens)
    b = await _vault(postgres_url, keyring, tokens)
    gateway = VaultClient(f"127.0.0.1:{b.serving.port}", SERVICE_TOKEN, cache_seconds=60)
    gateway.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{a.serving.port}") as channel:
            running = Replicas(
                a,
                b,
                vault_service_pb2_grpc.VaultServiceStub(channel),
                gateway,
                tokens,
                postgres_url,
            )
            await wait_until(lambda: gateway.cache_live)
            yield running
    finally:
        await gateway.close()
        for app in (a, b):
            await app.serving.stop(None)
            await app.aclose()


async def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def answer_within(
    replicas: Replicas, uid: str, wanted: Callable[[ByokKey | None], bool], seconds: float
) -> float:
    """Poll the gateway's answer for `uid` until `wanted`; the seconds it took (fails past)."""
    caller = replicas.caller(uid)
    started = time.monotonic()
    while not wanted(await replicas.gateway.byok_key(caller)):
        if time.monotonic() - started > seconds:
            raise AssertionError(f"the gateway still gives the old answer after {seconds} s")
        await asyncio.sleep(0.001)
    return time.monotonic() - started


def count_reads(app: VaultApp, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every uid that vault's store is asked for (one per AccessApiKey that reaches it)."""
    store = app.store
    original: Callable[[str], Awaitable[Any]] = store.get
    reads: list[str] = []

    async def get(uid: str) -> Any:
        reads.append(uid)
        return await original(uid)

    monkeypatch.setattr(store, "get", get)
    return reads


async def cached(replicas: Replicas, caller: Caller, reads: list[str]) -> None:
    """The gateway answers `caller` from its cache (no read reaches vault B)."""
    # The poll that saw the new answer may have fetched it while the change was still on its
    # way: such an answer is not stored, so one more lookup may still ask the vault.
    await replicas.gateway.byok_key(caller)
    before = len(reads)
    await replicas.gateway.byok_key(caller)
    await replicas.gateway.byok_key(caller)
    assert len(reads) == before


def provider(wanted: str | None) -> Callable[[ByokKey | None], bool]:
    return lambda key: (key.provider if key is not None else None) == wanted


async def test_writes_through_one_replica_reach_the_gateway_following_another(
    replicas: Replicas, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = count_reads(replicas.b, monkeypatch)
    caller = replicas.caller("kim")
    assert await replicas.gateway.byok_key(caller) is None
    assert await replicas.gateway.byok_key(caller) is None
    assert reads == ["kim"]  # the second answer came from the 60 s cache

    for _ in range(3):  # repeated, so an ordering race would show
        await replicas.save_through_a("kim", OPENROUTER_KEY)
        await answer_within(replicas, "kim", provider("openrouter"), PROPAGATION_LIMIT)
        await replicas.save_through_a("kim", TOGETHER_KEY)
        await answer_within(replicas, "kim", provider("together"), PROPAGATION_LIMIT)
        await replicas.delete_through_a("kim")
        await answer_within(replicas, "kim", provider(None), PROPAGATION_LIMIT)

    # Still caching all along: invalidations, not a cache that had quietly turned off.
    assert replicas.gateway.cache_live
    await cached(replicas, caller, reads)


async def test_a_rewrap_through_another_process_drops_the_cached_answer(
    replicas: Replicas, monkeypatch: pytest.MonkeyPatch, keyring: KeyRing
) -> None:
    await replicas.save_through_a("lou", OPENROUTER_KEY)
    await answer_within(replicas, "lou", provider("openrouter"), PROPAGATION_LIMIT)
    reads = count_reads(replicas.b, monkeypatch)
    # What `python -m vault_service rewrap` does, from a store of its own (another origin).
    rewrapper = await PostgresKeyStore.open(replicas.url)
    try:
        stored = await rewrapper.get("lou")
        assert stored is not None
        fresh = keyring.seal("lou", stored.provider, OPENROUTER_KEY)
        assert await rewrapper.compare_and_swap("lou", stored.blob, fresh)
    finally:
        await rewrapper.close()
    # The re-sealed key reads the same, so the drop shows as the gateway asking vault B again.
    caller = replicas.caller("lou")
    started = time.monotonic()
    while not reads:
        assert time.monotonic() - started < PROPAGATION_LIMIT, "the cached answer was not dropped"
        assert await replicas.gateway.byok_key(caller) == ByokKey("openrouter", OPENROUTER_KEY)
        await asyncio.sleep(0.001)
    assert reads == ["lou"]


async def listener_backend(url: str, pid: int) -> tuple[str, str] | None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT application_name, query FROM pg_stat_activity WHERE pid = %s", (pid,)
        )
        found = await cur.fetchone()
    return None if found is None else (str(found[0]), str(found[1]))


async def test_a_killed_listener_turns_caches_off_until_it_listens_again(
    replicas: Replicas, monkeypatch: pytest.MonkeyPatch
) -> None:
    follower = replicas.follower_b()
    old_pid = follower.backend_pid
    assert old_pid is not None
    application, query = await listener_backend(replicas.url, old_pid) or ("", "")
    assert application == LISTENER_APPLICATION_NAME
    assert query.upper().startswith("LISTEN")

    await replicas.save_through_a("max", OPENROUTER_KEY)
    await answer_within(replicas, "max", provider("openrouter"), PROPAGATION_LIMIT)
    reads = count_reads(replicas.b, monkeypatch)

    follower.retry_min = 1.0  # keep the gap open long enough to look at it
    async with await psycopg.AsyncConnection.connect(replicas.url, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (old_pid,))
    await wait_until(lambda: not replicas.gateway.cache_live, seconds=1.0)

    # During the gap a change through A reaches nobody, and the gateway asks the vault every time.
    await replicas.delete_through_a("max")
    caller = replicas.caller("max")
    assert await replicas.gateway.byok_key(caller) is None
    assert await replicas.gateway.byok_key(caller) is None
    assert reads == ["max", "max"]
    assert follower.backend_pid is None  # all of that happened while B was not listening

    await wait_until(lambda: replicas.gateway.cache_live, seconds=5.0)
    new_pid = follower.backend_pid
    assert new_pid is not None
    assert new_pid != old_pid
    assert (await listener_backend(replicas.url, new_pid) or ("",))[0] == LISTENER_APPLICATION_NAME

    # Listening again: changes through A propagate, and the gateway caches again.
    await replicas.save_through_a("max", TOGETHER_KEY)
    await answer_within(replicas, "max", provider("together"), PROPAGATION_LIMIT)
    await cached(replicas, caller, reads)


async def test_a_feed_opened_while_the_vault_is_not_listening_is_held(
    replicas: Replicas,
) -> None:
    feed = replicas.b.feed
    assert feed is not None
    feed.on_lost()
    await wait_until(lambda: not replicas.gateway.cache_live, seconds=1.0)
    await asyncio.sleep(0.5)  # the gateway has reconnected meanwhile; its feed is held
    assert not replicas.gateway.cache_live
    feed.on_synced()
    await wait_until(lambda: replicas.gateway.cache_live, seconds=1.0)


async def test_propagation_delay_of_100_changes(replicas: Replicas) -> None:
    """From the start of PutApiKey on vault A to the gateway following B giving the new answer.

    Prints p50/p99 (run with -s to see them); the bound asserted is the SPEC's one second.
    """
    uid = "nia"
    keys = [(OPENROUTER_KEY, "openrouter"), (TOGETHER_KEY, "together")]
    delays: list[float] = []
    writes: list[float] = []
    for n in range(100):
        api_key, wanted = keys[n % 2]
        started = time.monotonic()
        await replicas.save_through_a(uid, api_key)
        writes.append(time.monotonic() - started)
        await answer_within(replicas, uid, provider(wanted), PROPAGATION_LIMIT)
        delays.append(time.monotonic() - started)
    assert replicas.gateway.cache_live
    p50, p99 = _p50_p99(delays)
    w50, w99 = _p50_p99(writes)
    print(  # noqa: T201
        f"\npropagation of 100 changes, vault A -> PostgreSQL NOTIFY -> vault B -> gateway: "
        f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms "
        f"(PutApiKey alone: p50 {w50 * 1000:.1f} ms, p99 {w99 * 1000:.1f} ms)"
    )
    assert p99 < PROPAGATION_LIMIT


def _p50_p99(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[98]


def test_the_gateway_and_the_vault_hash_uids_alike() -> None:
    for uid in ("alice", "ü-ß", "x" * 128):
        assert gateway_uid_hash(uid) == uid_hash(uid)
        assert len(uid_hash(uid)) == 32
        assert uid_hash(uid).startswith(hash_uid(uid))  # matches the request log's uid_hash
