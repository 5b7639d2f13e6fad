"""The key-change feed behind `WatchApiKeyChanges`: how gateways cache AccessApiKey safely.

A gateway keeps each user's AccessApiKey answer for a few seconds (see
`gateway_service.vault_client`). So that a save or delete is never hidden by such a cache, every
connected gateway is told which user's key changed, and the PutApiKey/DeleteApiKey that caused it
returns only after each gateway has acknowledged: by then no gateway holds the old answer. A
gateway that does not acknowledge within `ack_timeout` is disconnected (its cache goes off with
its feed) and the write returns anyway.

Only the user id travels on the feed, never a key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Final

import grpc

from native1api.vault.v1 import vault_service_pb2
from rpc_common.status import RpcError

_LOGGER = logging.getLogger(__name__)

DEFAULT_ACK_TIMEOUT: Final = 1.0
_Change = vault_service_pb2.WatchApiKeyChangesResponse


class _Watcher:
    """One connected gateway: its outgoing changes and the acknowledgements it owes."""

    __slots__ = ("outbox", "pending", "seq")

    def __init__(self) -> None:
        self.outbox: asyncio.Queue[_Change | None] = asyncio.Queue()  # None: disconnect it
        self.pending: dict[int, asyncio.Future[None]] = {}
        self.seq = 0

    def send(self, uid: str) -> asyncio.Future[None]:
        self.seq += 1
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending[self.seq] = acked
        self.outbox.put_nowait(_Change(seq=self.seq, uid=uid))
        return acked

    def ack(self, seq: int) -> None:
        acked = self.pending.pop(seq, None)
        if acked is not None and not acked.done():
            acked.set_result(None)

    def cut(self) -> None:
        self.outbox.put_nowait(None)


class ChangeFeed:
    """The set of watching gateways; `publish` tells all of them and waits for their acks."""

    def __init__(self, *, ack_timeout: float = DEFAULT_ACK_TIMEOUT) -> None:
        self._ack_timeout = ack_timeout
        self._watchers: set[_Watcher] = set()

    def __len__(self) -> int:
        return len(self._watchers)

    async def publish(self, uid: str) -> None:
        """Tell every watching gateway that `uid`'s key changed; return once all acknowledged."""
        if not self._watchers:
            return
        waits = {watcher: watcher.send(uid) for watcher in list(self._watchers)}
        await asyncio.wait(waits.values(), timeout=self._ack_timeout)
        for watcher, acked in waits.items():
            if not acked.done():
                _LOGGER.warning(
                    "a gateway did not acknowledge a key change within %.1f s; disconnecting its "
                    "change feed (its cache stays off until it reconnects)",
                    self._ack_timeout,
                )
                watcher.cut()

    def close(self) -> None:
        """End every feed (the vault is shutting down): gateways turn their caches off."""
        for watcher in list(self._watchers):
            watcher.cut()

    async def serve(
        self, requests: AsyncIterator[vault_service_pb2.WatchApiKeyChangesRequest]
    ) -> AsyncIterator[_Change]:
        """One gateway's feed, until it goes away or is cut (then UNAVAILABLE)."""
        watcher = _Watcher()
        self._watchers.add(watcher)
        reader = asyncio.get_running_loop().create_task(_read_acks(requests, watcher))
        try:
            yield _Change(seq=0)
            while True:
                change = await watcher.outbox.get()
                if change is None:
                    raise RpcError(
                        grpc.StatusCode.UNAVAILABLE,
                        "CHANGE_FEED_CLOSED",
                        "the vault closed this change feed; reconnect",
                    )
                yield change
        finally:
            self._watchers.discard(watcher)
            reader.cancel()
            for acked in watcher.pending.values():
                acked.cancel()


async def _read_acks(
    requests: AsyncIterator[vault_service_pb2.WatchApiKeyChangesRequest], watcher: _Watcher
) -> None:
    try:
        async for request in requests:
            watcher.ack(request.ack)
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        pass
    # The gateway closed its side: it can acknowledge nothing more.
    watcher.cut()
