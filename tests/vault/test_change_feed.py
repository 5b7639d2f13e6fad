"""ChangeFeed as the store's ChangeListener: other replicas' changes, and losing track of them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from native1api.vault.v1 import vault_service_pb2
from rpc_common.status import RpcError
from vault_service.change_feed import ChangeFeed

Ack = vault_service_pb2.WatchApiKeyChangesRequest


Change = vault_service_pb2.WatchApiKeyChangesResponse


def gateway(feed: ChangeFeed) -> tuple[AsyncIterator[Change], asyncio.Queue[Ack]]:
    acks: asyncio.Queue[Ack] = asyncio.Queue()

    async def requests() -> AsyncIterator[Ack]:
        while True:
            yield await acks.get()

    return feed.serve(requests()), acks


async def next_message(stream: AsyncIterator[Change]) -> Change:
    return await anext(stream)


async def test_a_change_from_elsewhere_does_not_wait_but_a_silent_gateway_is_cut() -> None:
    feed = ChangeFeed(ack_timeout=0.1)
    stream, acks = gateway(feed)
    assert (await anext(stream)).seq == 0
    feed.on_change("ab" * 16)  # returns at once: nobody waits for this one
    change = await anext(stream)
    assert (change.seq, change.uid_hash, change.uid) == (1, "ab" * 16, "")
    acks.put_nowait(Ack(ack=1))
    feed.on_change("cd" * 16)
    assert (await anext(stream)).uid_hash == "cd" * 16
    # No ack for seq 2: cut after ack_timeout.
    with pytest.raises(RpcError, match="change feed"):
        await asyncio.wait_for(anext(stream), 1.0)
    assert len(feed) == 0


async def test_a_local_write_names_the_uid_too_for_older_gateways() -> None:
    feed = ChangeFeed(ack_timeout=1.0)
    stream, acks = gateway(feed)
    assert (await anext(stream)).seq == 0
    publish = asyncio.create_task(feed.publish("ef" * 16, uid="olga"))
    change = await anext(stream)
    assert (change.uid_hash, change.uid) == ("ef" * 16, "olga")
    acks.put_nowait(Ack(ack=change.seq))
    await asyncio.wait_for(publish, 1.0)
    await stream.aclose()  # type: ignore[attr-defined]


async def test_losing_track_ends_feeds_and_holds_new_ones_until_synced() -> None:
    feed = ChangeFeed()
    first, _ = gateway(feed)
    assert (await anext(first)).seq == 0
    feed.on_lost()
    assert not feed.live
    with pytest.raises(RpcError, match="change feed"):
        await anext(first)

    second, _ = gateway(feed)
    opening = asyncio.create_task(next_message(second))
    await asyncio.sleep(0.05)
    assert not opening.done()  # held: the gateway does not cache meanwhile
    assert len(feed) == 0
    await feed.publish("00" * 16)  # a local write now waits for nobody
    feed.on_synced()
    assert feed.live
    assert (await asyncio.wait_for(opening, 1.0)).seq == 0
    assert len(feed) == 1

    feed.close()
    with pytest.raises(RpcError, match="change feed"):
        await anext(second)


async def test_closing_ends_held_feeds() -> None:
    feed = ChangeFeed()
    feed.on_lost()
    stream, _ = gateway(feed)
    opening = asyncio.create_task(next_message(stream))
    await asyncio.sleep(0.02)
    feed.close()
    with pytest.raises(RpcError, match="change feed"):
        await asyncio.wait_for(opening, 1.0)
    feed.on_lost()  # after close: stays closed, nothing held forever
    assert not feed.live
