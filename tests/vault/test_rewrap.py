"""Rotation end to end: old rows readable, rewrap_all moves them, concurrent writes are never lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.vault.conftest import Rings
from vault_service.errors import DecryptionError
from vault_service.rewrap import RewrapReport, rewrap_all
from vault_service.storage import KeyStore, StoredKey
from vault_service.storage.base import DEFAULT_BATCH_SIZE, ChangeListener

PROVIDER = "openrouter"


def key_for(uid: str, tag: str = "v1") -> str:
    return f"sk-or-{uid}-{tag}-" + "c0ffee" * 6


async def seed(store: KeyStore, rings: Rings, uids: list[str]) -> None:
    for uid in uids:
        await store.put(uid, PROVIDER, rings.old.seal(uid, PROVIDER, key_for(uid)))


async def test_full_rotation(
    store: KeyStore, rings: Rings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    uids = [f"user-{i:02d}" for i in range(12)]
    await seed(store, rings, uids)
    # During rotation the old rows are readable through the previous key, and flagged.
    for uid in uids:
        stored = await store.get(uid)
        assert stored is not None
        assert rings.rotated.open(uid, PROVIDER, stored.blob) == key_for(uid)
        assert rings.rotated.needs_rewrap(stored.blob)

    report = await rewrap_all(store, rings.rotated, batch_size=5)
    assert report == RewrapReport(total=12, rewrapped=12, already_current=0, failed=0)

    # After dropping the old passphrase every key still decrypts; the old ring no longer can.
    for uid in uids:
        stored = await store.get(uid)
        assert stored is not None
        assert not rings.rotated.needs_rewrap(stored.blob)
        assert rings.new_only.open(uid, PROVIDER, stored.blob) == key_for(uid)
        with pytest.raises(DecryptionError):
            rings.old.open(uid, PROVIDER, stored.blob)

    again = await rewrap_all(store, rings.rotated)
    assert again == RewrapReport(total=12, rewrapped=0, already_current=12, failed=0)
    assert not any(key_for(uid) in caplog.text for uid in uids)


async def test_mixed_and_unreadable_rows(store: KeyStore, rings: Rings) -> None:
    await seed(store, rings, ["old-1", "old-2"])
    await store.put("new-1", PROVIDER, rings.rotated.seal("new-1", PROVIDER, key_for("new-1")))
    foreign = rings.other.seal("foreign", PROVIDER, key_for("foreign"))
    await store.put("foreign", PROVIDER, foreign)

    report = await rewrap_all(store, rings.rotated)
    assert report == RewrapReport(total=4, rewrapped=2, already_current=1, failed=1)
    stored = await store.get("foreign")
    assert stored is not None
    assert stored.blob == foreign  # left untouched, not destroyed


class RacingStore:
    """Delegates to a real store, running `before_swap` just ahead of each compare_and_swap."""

    def __init__(self, inner: KeyStore, before_swap: Callable[[str], Awaitable[None]]) -> None:
        self.inner = inner
        self.before_swap = before_swap
        self.swaps = 0

    async def put(self, uid: str, provider: str, blob: bytes) -> StoredKey:
        return await self.inner.put(uid, provider, blob)

    async def get(self, uid: str) -> StoredKey | None:
        return await self.inner.get(uid)

    async def delete(self, uid: str) -> bool:
        return await self.inner.delete(uid)

    async def compare_and_swap(self, uid: str, old_blob: bytes, new_blob: bytes) -> bool:
        self.swaps += 1
        await self.before_swap(uid)
        return await self.inner.compare_and_swap(uid, old_blob, new_blob)

    async def list_uids(self) -> list[str]:
        return await self.inner.list_uids()

    async def iter_all(self, batch_size: int = DEFAULT_BATCH_SIZE) -> AsyncIterator[StoredKey]:
        async for row in self.inner.iter_all(batch_size):
            yield row

    async def get_or_create_salt(self) -> bytes:
        return await self.inner.get_or_create_salt()

    async def follow_changes(self, listener: ChangeListener) -> None:
        await self.inner.follow_changes(listener)

    async def close(self) -> None:
        await self.inner.close()


async def test_concurrent_put_with_current_key_is_not_overwritten(
    store: KeyStore, rings: Rings
) -> None:
    await seed(store, rings, ["alice", "bob"])
    fresh = rings.rotated.seal("alice", "together", key_for("alice", "fresh"))
    raced = False

    async def user_saves_new_key(uid: str) -> None:
        nonlocal raced
        if uid == "alice" and not raced:
            raced = True
            await store.put("alice", "together", fresh)

    report = await rewrap_all(RacingStore(store, user_saves_new_key), rings.rotated)
    assert report == RewrapReport(total=2, rewrapped=1, already_current=1, failed=0)
    stored = await store.get("alice")
    assert stored is not None
    assert (stored.provider, stored.blob) == ("together", fresh)
    assert rings.new_only.open("alice", "together", stored.blob) == key_for("alice", "fresh")


async def test_concurrent_put_from_a_stale_replica_is_rewrapped_not_lost(
    store: KeyStore, rings: Rings
) -> None:
    """A replica still on the old master key writes mid-rewrap: its value is kept and moved."""
    await seed(store, rings, ["alice"])
    racing = RacingStore(store, lambda uid: asyncio.sleep(0))

    async def stale_replica_saves(uid: str) -> None:
        if racing.swaps == 1:
            await store.put(uid, PROVIDER, rings.old.seal(uid, PROVIDER, key_for(uid, "stale")))

    racing.before_swap = stale_replica_saves
    report = await rewrap_all(racing, rings.rotated)
    assert report == RewrapReport(total=1, rewrapped=1, already_current=0, failed=0)
    assert racing.swaps == 2
    stored = await store.get("alice")
    assert stored is not None
    assert rings.new_only.open("alice", PROVIDER, stored.blob) == key_for("alice", "stale")


async def test_concurrent_delete_is_not_undone(store: KeyStore, rings: Rings) -> None:
    await seed(store, rings, ["alice", "bob"])

    async def user_deletes(uid: str) -> None:
        if uid == "alice":
            await store.delete("alice")

    report = await rewrap_all(RacingStore(store, user_deletes), rings.rotated)
    assert report == RewrapReport(total=2, rewrapped=1, already_current=0, failed=0, vanished=1)
    assert await store.get("alice") is None


async def test_rewrap_under_live_traffic_loses_no_write(store: KeyStore, rings: Rings) -> None:
    """Writers (some on the old key, some on the new) race a rewrap; the last write always wins."""
    uids = [f"user-{i:02d}" for i in range(20)]
    await seed(store, rings, uids)
    last: dict[str, str] = {}

    async def writer(uid: str, index: int) -> None:
        for round_ in range(4):
            ring = rings.old if (index + round_) % 2 else rings.rotated
            value = key_for(uid, f"r{round_}")
            await store.put(uid, PROVIDER, ring.seal(uid, PROVIDER, value))
            last[uid] = value
            await asyncio.sleep(0)

    results = await asyncio.gather(
        rewrap_all(store, rings.rotated, batch_size=3),
        *(writer(uid, i) for i, uid in enumerate(uids)),
    )
    report = results[0]
    assert isinstance(report, RewrapReport)
    assert report.failed == 0
    for uid in uids:
        stored = await store.get(uid)
        assert stored is not None
        assert rings.rotated.open(uid, PROVIDER, stored.blob) == last[uid]
    # A second pass finishes whatever the stale writers left behind.
    await rewrap_all(store, rings.rotated)
    for uid in uids:
        stored = await store.get(uid)
        assert stored is not None
        assert rings.new_only.open(uid, PROVIDER, stored.blob) == last[uid]
