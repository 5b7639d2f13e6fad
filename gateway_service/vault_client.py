"""The gateway's one long-lived channel to the vault, asking for the caller's BYOK key.

The answer is cached per user for `cache_seconds` (default 2 s, at most 60; 0 turns the cache
off), and only while the vault's change feed (`WatchApiKeyChanges`) is connected:

- every save, delete or rewrap is pushed to the connected gateways by uid hash (`uid_hash`, the
  same digest as the vault's), whichever vault replica made it (replicas sharing PostgreSQL hear
  each other through LISTEN/NOTIFY); the gateway drops that user's entry and acknowledges. A
  vault's PutApiKey/DeleteApiKey returns only after the gateways following that vault did, so a
  client that saved or deleted a key never gets the old answer from their caches afterwards;
  gateways following another replica drop it a few milliseconds later;
- when the feed is down (vault restarting, unreachable, an older vault without the RPC, or a
  vault that cannot hear the other replicas and so ended or holds its feeds), the cache is
  emptied and not used: every request asks the vault, exactly as without a cache, and a vault
  that cannot answer still fails the request with UNAVAILABLE. A feed (re)connecting starts from
  an empty cache, so changes made while it was down cannot linger;
- errors are never cached; an answer fetched while any change arrived, or while the feed was
  (re)connecting, is not stored;
- the TTL is only a backstop for what no feed can see (a vault replica that predates NOTIFY).

The cache is bounded (`max_entries`, oldest dropped first). It holds the decrypted key of BYOK
users for at most `cache_seconds`, in the same process that uses it for every request anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from typing import Final

import grpc

from gateway_service import errors
from gateway_service.routing import ByokKey
from native1api.vault.v1 import api_key_pb2, vault_service_pb2, vault_service_pb2_grpc
from rpc_common import tracing
from rpc_common.auth import Caller
from rpc_common.status import RpcError
from rpc_common.tls import TlsSettings
from rpc_common.tracing import instant, span

VAULT_LOOKUP: Final = "gateway.vault_lookup"
"""The span of an AccessApiKey call (its child is the vault's own server span)."""
VAULT_CACHE_HIT: Final = "gateway.vault_cache_hit"
"""A zero-length span: the answer came from the cache, the vault was not asked."""

_LOGGER = logging.getLogger(__name__)

_PROVIDERS: Final = {
    api_key_pb2.PROVIDER_OPENROUTER: "openrouter",
    api_key_pb2.PROVIDER_TOGETHER: "together",
}
_REQUEST: Final = vault_service_pb2.AccessApiKeyRequest()
DEFAULT_CACHE_SECONDS: Final = 2.0
DEFAULT_CACHE_ENTRIES: Final = 10_000
_RECONNECT_MIN: Final = 0.2
_RECONNECT_MAX: Final = 5.0
_UID_HASH_CHARS: Final = 32


def uid_hash(uid: str) -> str:
    """How the change feed names a user (vault_service.proto `uid_hash`; the vault's
    `storage.base.uid_hash`): the first 32 hex characters of SHA-256 over the UTF-8 uid."""
    return hashlib.sha256(uid.encode("utf-8")).hexdigest()[:_UID_HASH_CHARS]


class VaultClient:
    """Calls `AccessApiKey` with the gateway's service token and the caller's own ID token.

    The vault is the source of truth for "does this user have a key": when it cannot answer,
    the request fails with UNAVAILABLE rather than silently using the platform account.
    """

    def __init__(
        self,
        address: str,
        service_token: str,
        *,
        timeout_seconds: float = 3.0,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        max_entries: int = DEFAULT_CACHE_ENTRIES,
        tls: TlsSettings | None = None,
    ) -> None:
        self._tls = tls or TlsSettings()
        self._channel = self._tls.aio_channel(
            address,
            options=(("grpc.keepalive_time_ms", 30_000), ("grpc.enable_retries", 1)),
            health_service=vault_service_pb2.DESCRIPTOR.services_by_name["VaultService"].full_name,
        )
        self._stub = vault_service_pb2_grpc.VaultServiceStub(self._channel)
        self._address = address
        self._service_token = service_token
        self._service_metadata = (("x-service-token", service_token),)
        self._timeout = timeout_seconds
        self._ttl = cache_seconds
        self._max_entries = max_entries
        self._cache: dict[str, tuple[float, ByokKey | None]] = {}  # by uid_hash
        self._live = False  # the change feed is connected: cached answers may be used
        self._generation = 0  # bumped by every change and every loss of the feed
        self._watch: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start following the vault's change feed (no-op when the cache is off)."""
        if self._ttl > 0 and self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._follow_changes())

    @property
    def cache_live(self) -> bool:
        """Whether cached answers are being used (for tests and diagnostics)."""
        return self._live

    async def byok_key(self, caller: Caller) -> ByokKey | None:
        key = uid_hash(caller.uid) if self._ttl > 0 else ""
        if self._live:
            entry = self._cache.get(key)
            if entry is not None:
                if entry[0] > time.monotonic():
                    instant(VAULT_CACHE_HIT)
                    return entry[1]
                del self._cache[key]
        generation = self._generation
        with span(VAULT_LOOKUP):
            answer = await self._fetch(caller)
        if self._live and generation == self._generation:
            if len(self._cache) >= self._max_entries:
                del self._cache[next(iter(self._cache))]  # the oldest entry
            self._cache[key] = (time.monotonic() + self._ttl, answer)
        return answer

    async def _fetch(self, caller: Caller) -> ByokKey | None:
        metadata: tuple[tuple[str, str], ...] = (
            ("authorization", f"Bearer {caller.token}"),
            ("x-service-token", self._service_token),
        )
        if tracing.enabled:
            metadata += tracing.outgoing_metadata()  # the vault's span joins this request's trace
        try:
            reply = await self._stub.AccessApiKey(
                _REQUEST, metadata=metadata, timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from None
        if not reply.exists:
            return None
        provider = _PROVIDERS.get(reply.provider)
        if provider is None:
            _LOGGER.error("vault returned an unknown provider %d", reply.provider)
            raise errors.vault_unavailable()
        return ByokKey(provider, reply.api_key)

    def _forget_all(self) -> None:
        self._live = False
        self._generation += 1
        self._cache.clear()

    async def _follow_changes(self) -> None:
        """Keep the change feed connected; the cache is used only while it is."""
        # A channel of its own (and its own subchannels): while the vault is down, this one's
        # reconnect backoff must not make AccessApiKey calls fail fast on the shared connection.
        channel = self._tls.aio_channel(
            self._address,
            options=(("grpc.use_local_subchannel_pool", 1),),
            health_service=vault_service_pb2.DESCRIPTOR.services_by_name["VaultService"].full_name,
        )
        stub = vault_service_pb2_grpc.VaultServiceStub(channel)
        delay = _RECONNECT_MIN
        try:
            while True:
                call = stub.WatchApiKeyChanges(metadata=self._service_metadata)
                try:
                    while True:
                        change = await call.read()
                        if not isinstance(change, vault_service_pb2.WatchApiKeyChangesResponse):
                            break  # EOF: the vault ended the feed
                        if change.seq == 0:
                            # Start from empty: nothing fetched before this point may be stored
                            # (it was read while no change could reach this cache).
                            self._generation += 1
                            self._cache.clear()
                            self._live = True
                            delay = _RECONNECT_MIN
                            _LOGGER.debug("vault change feed connected: caching vault answers")
                            continue
                        self._generation += 1
                        # uid: a vault older than uid_hash; neither: drop everything.
                        key = change.uid_hash or (uid_hash(change.uid) if change.uid else "")
                        if key:
                            self._cache.pop(key, None)
                        else:
                            self._cache.clear()
                        await call.write(
                            vault_service_pb2.WatchApiKeyChangesRequest(ack=change.seq)
                        )
                except grpc.aio.AioRpcError as exc:
                    _LOGGER.debug("vault change feed lost (%s): not caching", exc.code().name)
                finally:
                    self._forget_all()
                    call.cancel()
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECONNECT_MAX)
        finally:
            await channel.close()

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        self._forget_all()
        await self._channel.close()


def _translate(exc: grpc.aio.AioRpcError) -> RpcError:
    code = exc.code()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        # The gateway verified the same token a moment ago; report the vault's view as-is.
        return RpcError(code, "TOKEN_INVALID", exc.details() or "invalid ID token")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        _LOGGER.error(
            "the vault refused the gateway's SERVICE_TOKEN: the two services must share it"
        )
        return RpcError(
            grpc.StatusCode.INTERNAL,
            "GATEWAY_MISCONFIGURED",
            "The gateway is misconfigured (vault credential); the operator has been alerted.",
        )
    if code == grpc.StatusCode.DATA_LOSS:
        return RpcError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "BYOK_KEY_UNREADABLE",
            "Your stored provider key cannot be read; save it again with POST /v1/vault.",
            {"code": "invalid_api_key"},
        )
    _LOGGER.warning("vault unavailable: %s", code.name)
    return errors.vault_unavailable()
