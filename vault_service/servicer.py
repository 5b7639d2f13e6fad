"""VaultService: the gRPC edge of the vault. Thin: auth, convert, call crypto/storage, convert."""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from native1api.vault.v1 import api_key_pb2, vault_service_pb2, vault_service_pb2_grpc
from rpc_common.auth import AppCheck, TokenVerifier, authenticate, require_app_check
from rpc_common.status import RpcError, stream_errors, unary_errors
from vault_service.api_keys import PROVIDER_ENUMS, check_key_format, resolve_provider
from vault_service.change_feed import ChangeFeed
from vault_service.crypto import KeyRing
from vault_service.errors import DecryptionError, StorageUnavailableError
from vault_service.provider_check import ProviderKeyChecker
from vault_service.storage import KeyStore, StoredKey
from vault_service.storage.base import uid_hash

_LOGGER = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
SERVICE_TOKEN_HEADER = "x-service-token"  # noqa: S105 (a header name, not a secret)
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


def _storage_errors(
    method: Callable[[VaultServicer, _Req, Context], Awaitable[_Resp]],
) -> Callable[[VaultServicer, _Req, Context], Awaitable[_Resp]]:
    """A database outage is UNAVAILABLE (retryable), not INTERNAL."""

    @functools.wraps(method)
    async def wrapper(self: VaultServicer, request: _Req, context: Context) -> _Resp:
        try:
            return await method(self, request, context)
        except StorageUnavailableError:
            _LOGGER.warning("vault database unavailable during %s", method.__name__)
            raise RpcError(
                grpc.StatusCode.UNAVAILABLE,
                "VAULT_STORAGE_UNAVAILABLE",
                "the vault database is unavailable; retry shortly",
            ) from None

    return wrapper


def _status(row: StoredKey | None) -> api_key_pb2.ApiKeyStatus:
    if row is None:
        return api_key_pb2.ApiKeyStatus(exists=False)
    updated = Timestamp()
    updated.FromDatetime(row.updated_at)
    return api_key_pb2.ApiKeyStatus(
        exists=True, provider=PROVIDER_ENUMS[row.provider], update_time=updated
    )


class VaultServicer(vault_service_pb2_grpc.VaultServiceServicer):
    """Implements VaultService for the user named by each call's ID token."""

    def __init__(
        self,
        *,
        verifier: TokenVerifier,
        store: KeyStore,
        keyring: KeyRing,
        service_token: str,
        checker: ProviderKeyChecker,
        feed: ChangeFeed | None = None,
        app_check: AppCheck | None = None,
    ) -> None:
        self._verifier = verifier
        self._app_check = app_check
        self._store = store
        self._keyring = keyring
        self._service_token = service_token.encode("utf-8")
        self._checker = checker
        self.feed = feed or ChangeFeed()

    @unary_errors
    @_storage_errors
    async def PutApiKey(
        self, request: vault_service_pb2.PutApiKeyRequest, context: Context
    ) -> vault_service_pb2.PutApiKeyResponse:
        caller = await authenticate(context, self._verifier)
        await require_app_check(context, self._app_check)
        check_key_format(request.api_key)
        provider = resolve_provider(request.api_key, request.provider)
        if request.validate:
            await self._checker.check(provider, request.api_key)
        blob = self._keyring.seal(caller.uid, provider, request.api_key)
        row = await self._store.put(caller.uid, provider, blob)
        # No gateway following this vault holds the old answer after this; gateways following
        # other replicas hear of it through the store (PostgreSQL NOTIFY), see change_feed.
        await self.feed.publish(uid_hash(caller.uid), uid=caller.uid)
        return vault_service_pb2.PutApiKeyResponse(status=_status(row))

    @unary_errors
    @_storage_errors
    async def GetApiKeyStatus(
        self, request: vault_service_pb2.GetApiKeyStatusRequest, context: Context
    ) -> vault_service_pb2.GetApiKeyStatusResponse:
        caller = await authenticate(context, self._verifier)
        await require_app_check(context, self._app_check)
        return vault_service_pb2.GetApiKeyStatusResponse(
            status=_status(await self._store.get(caller.uid))
        )

    @unary_errors
    @_storage_errors
    async def DeleteApiKey(
        self, request: vault_service_pb2.DeleteApiKeyRequest, context: Context
    ) -> vault_service_pb2.DeleteApiKeyResponse:
        caller = await authenticate(context, self._verifier)
        await require_app_check(context, self._app_check)
        deleted = await self._store.delete(caller.uid)
        if deleted:
            await self.feed.publish(uid_hash(caller.uid), uid=caller.uid)
        return vault_service_pb2.DeleteApiKeyResponse(deleted=deleted)

    @unary_errors
    @_storage_errors
    async def AccessApiKey(
        self, request: vault_service_pb2.AccessApiKeyRequest, context: Context
    ) -> vault_service_pb2.AccessApiKeyResponse:
        self._require_service_token(context)
        caller = await authenticate(context, self._verifier)
        row = await self._store.get(caller.uid)
        if row is None:
            return vault_service_pb2.AccessApiKeyResponse(exists=False)
        try:
            api_key = self._keyring.open(caller.uid, row.provider, row.blob)
        except DecryptionError:
            # One generic error whatever failed (tag, owner, version); the row id is not secret.
            _LOGGER.error(
                "stored key for a user failed to decrypt (row tampered or wrong master key)"
            )
            raise RpcError(
                grpc.StatusCode.DATA_LOSS,
                "API_KEY_UNREADABLE",
                "the stored key cannot be decrypted; save it again",
            ) from None
        return vault_service_pb2.AccessApiKeyResponse(
            exists=True, provider=PROVIDER_ENUMS[row.provider], api_key=api_key
        )

    @stream_errors
    async def WatchApiKeyChanges(
        self,
        request_iterator: AsyncIterator[vault_service_pb2.WatchApiKeyChangesRequest],
        context: Context,
    ) -> AsyncIterator[vault_service_pb2.WatchApiKeyChangesResponse]:
        self._require_service_token(context)
        async for change in self.feed.serve(request_iterator):
            yield change

    def _require_service_token(self, context: Context) -> None:
        presented = b""
        for key, value in context.invocation_metadata() or ():
            if key == SERVICE_TOKEN_HEADER:
                presented = value.encode("utf-8") if isinstance(value, str) else value
                break
        # Constant-time compare, so response timing does not reveal a matching prefix.
        if not hmac.compare_digest(presented, self._service_token):
            raise RpcError(
                grpc.StatusCode.PERMISSION_DENIED,
                "SERVICE_TOKEN_REQUIRED",
                "AccessApiKey is reserved for the gateway's service credential",
            )
