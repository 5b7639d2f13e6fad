"""The gateway's one long-lived channel to the vault, asking for the caller's BYOK key."""

from __future__ import annotations

import logging
from typing import Final

import grpc

from gateway_service import errors
from gateway_service.routing import ByokKey
from native1api.vault.v1 import api_key_pb2, vault_service_pb2, vault_service_pb2_grpc
from rpc_common.auth import Caller
from rpc_common.status import RpcError

_LOGGER = logging.getLogger(__name__)

_PROVIDERS: Final = {
    api_key_pb2.PROVIDER_OPENROUTER: "openrouter",
    api_key_pb2.PROVIDER_TOGETHER: "together",
}
_REQUEST: Final = vault_service_pb2.AccessApiKeyRequest()


class VaultClient:
    """Calls `AccessApiKey` with the gateway's service token and the caller's own ID token.

    The vault is the source of truth for "does this user have a key": when it cannot answer,
    the request fails with UNAVAILABLE rather than silently using the platform account.
    """

    def __init__(self, address: str, service_token: str, *, timeout_seconds: float = 3.0) -> None:
        self._channel = grpc.aio.insecure_channel(
            address,
            options=(("grpc.keepalive_time_ms", 30_000), ("grpc.enable_retries", 1)),
        )
        self._stub = vault_service_pb2_grpc.VaultServiceStub(self._channel)
        self._service_token = service_token
        self._timeout = timeout_seconds

    async def byok_key(self, caller: Caller) -> ByokKey | None:
        metadata = (
            ("authorization", f"Bearer {caller.token}"),
            ("x-service-token", self._service_token),
        )
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

    async def close(self) -> None:
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
