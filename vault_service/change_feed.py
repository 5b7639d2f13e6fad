"""The key-change feed behind `WatchApiKeyChanges`: how gateways cache AccessApiKey safely.

A gateway keeps each user's AccessApiKey answer for a while (see `gateway_service.vault_client`).
So that a save, delete or rewrap is never hidden by such a cache, every connected gateway is told
whose key changed, by uid hash (`storage.base.uid_hash`; never a key):

- a write made through this vault (`publish`): PutApiKey/DeleteApiKey return only after each
  connected gateway has acknowledged, so by then none of them holds the old answer. A gateway that
  does not acknowledge within `ack_timeout` is disconnected (its cache goes off with its feed)
  and the write returns anyway;
- a write made by another process on the same database (another vault replica, the rewrap
  command), heard through the store (`on_change`, PostgreSQL LISTEN): passed on at once without
  waiting; the same `ack_timeout` applies, a silent gateway is disconnected;
- while the store cannot hear other processes (`on_lost`: its LISTEN connection is down) every
  feed is ended and new ones are held before their first message, so no gateway caches what it
  could not be told about; once it hears them again (`on_synced`) the held feeds start, and a
  gateway always starts from an empty cache (`seq = 0`), which drops whatever the gap hid.

A store that has nothing to hear (SQLite, one replica) never calls `on_lost`: the feed is live.
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

    def send(self, uid_hash: str, uid: str) -> asyncio.Future[None]:
        self.seq += 1
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending[self.seq] = acked
        self.outbox.put_nowait(_Change(seq=self.seq, uid_hash=uid_hash, uid=uid))
        return acked

    def ack(self, seq: int) -> None:
        acked = self.pending.pop(seq, None)
        if acked is not None and not acked.done():
            acked.set_result(None)

    def cut(self) -> None:
        self.outbox.put_nowait(None)


class ChangeFeed:
    """The set of watching gateways. `publish` tells all of them and waits for their acks.

    Also a `storage.base.ChangeListener`: the store reports other processes' writes to it.
    """

    def __init__(self, *, ack_timeout: float = DEFAULT_ACK_TIMEOUT) -> None:
        self._ack_timeout = ack_timeout
        self._watchers: set[_Watcher] = set()
        self._synced = asyncio.Event()  # changes made elsewhere are heard (or there are none)
        self._synced.set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._watchers)

    @property
    def live(self) -> bool:
        """Whether feeds are being served (false while other replicas' writes go unheard)."""
        return self._synced.is_set() and not self._closed

    async def publish(self, uid_hash: str, *, uid: str = "") -> None:
        """Tell every watching gateway that a key changed; return once all acknowledged.

        For writes made through this vault. `uid` is sent too, for gateways that predate
        `uid_hash` (the gateway knows every uid it caches; the uid never goes to the database).
        """
        waits = self._send(uid_hash, uid)
        if not waits:
            return
        await asyncio.wait(waits.values(), timeout=self._ack_timeout)
        self._cut_laggards(waits)

    def on_change(self, uid_hash: str) -> None:
        """A write made by another process: tell every gateway now; do not wait for the acks."""
        waits = self._send(uid_hash, "")
        if waits:
            asyncio.get_running_loop().call_later(self._ack_timeout, self._cut_laggards, waits)

    def on_lost(self) -> None:
        """Other processes' writes may go unheard: end every feed (gateways stop caching) and
        hold new ones until `on_synced`."""
        if self._closed:
            return
        if self._synced.is_set():
            _LOGGER.warning(
                "not hearing key changes from other vault replicas: ending every change feed, "
                "gateways stop caching vault answers until this vault hears them again"
            )
        self._synced.clear()
        self._cut_all()

    def on_synced(self) -> None:
        """Other processes' writes are heard again: serve the feeds (each starts from seq 0)."""
        if not self._synced.is_set():
            _LOGGER.info("hearing key changes from other vault replicas: serving change feeds")
        self._synced.set()

    def close(self) -> None:
        """End every feed (the vault is shutting down): gateways turn their caches off."""
        self._closed = True
        self._synced.set()  # wake the held feeds so that they end too
        self._cut_all()

    def _send(self, uid_hash: str, uid: str) -> dict[_Watcher, asyncio.Future[None]]:
        return {watcher: watcher.send(uid_hash, uid) for watcher in list(self._watchers)}

    def _cut_laggards(self, waits: dict[_Watcher, asyncio.Future[None]]) -> None:
        for watcher, acked in waits.items():
            if not acked.done() and watcher in self._watchers:
                _LOGGER.warning(
                    "a gateway did not acknowledge a key change within %.1f s; disconnecting its "
                    "change feed (its cache stays off until it reconnects)",
                    self._ack_timeout,
                )
                self._watchers.discard(watcher)
                watcher.cut()

    def _cut_all(self) -> None:
        watchers, self._watchers = self._watchers, set()
        for watcher in watchers:
            watcher.cut()

    async def serve(
        self, requests: AsyncIterator[vault_service_pb2.WatchApiKeyChangesRequest]
    ) -> AsyncIterator[_Change]:
        """One gateway's feed, until it goes away or is cut (then UNAVAILABLE).

        Held before its first message while other replicas' writes go unheard (`on_lost`).
        """
        watcher = _Watcher()
        reader = asyncio.get_running_loop().create_task(_read_acks(requests, watcher))
        try:
            while not self._synced.is_set():
                await self._synced.wait()
            if self._closed:
                raise _closed()
            # Registered before seq 0 goes out: every change after it reaches this gateway.
            self._watchers.add(watcher)
            yield _Change(seq=0)
            while True:
                change = await watcher.outbox.get()
                if change is None:
                    raise _closed()
                yield change
        finally:
            self._watchers.discard(watcher)
            reader.cancel()
            for acked in watcher.pending.values():
                acked.cancel()


def _closed() -> RpcError:
    return RpcError(
        grpc.StatusCode.UNAVAILABLE,
        "CHANGE_FEED_CLOSED",
        "the vault closed this change feed; reconnect",
    )


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
