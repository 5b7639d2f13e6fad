"""`POST/GET/DELETE /v1/vault`: the caller's BYOK key, over VaultService.

The key travels only in the request body and only to the vault: it is never echoed, logged or
put in an error (validation errors are rendered without their input). Every vault response,
success or error, carries `Cache-Control: no-store`.
"""

from __future__ import annotations

from typing import Annotated, Final

import grpc
import orjson
from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from native1api.vault.v1 import api_key_pb2, vault_service_pb2
from rest_bridge import errors
from rest_bridge.auth import Metadata, call_metadata
from rest_bridge.providers import VAULT_ENUMS, VAULT_NAMES
from rest_bridge.schemas import PutKeyBody, VaultStatus, error_responses
from rest_bridge.state import bridge_state

router = APIRouter()

_NO_KEY: Final = orjson.dumps({"exists": False})
_VAULT_ERRORS: Final = error_responses(400, 401, 403, 413, 429, 500, 502, 503, 504)


def _status_response(status: api_key_pb2.ApiKeyStatus) -> Response:
    if not status.exists:
        body = _NO_KEY
    else:
        provider = VAULT_NAMES.get(status.provider)
        body = orjson.dumps(
            {"exists": True, "provider": provider} if provider else {"exists": True}
        )
    return Response(body, headers={"cache-control": "no-store"}, media_type="application/json")


@router.post(
    "/v1/vault",
    summary="Save or replace the caller's provider key",
    response_model=VaultStatus,
    responses=_VAULT_ERRORS,
)
async def put_api_key(
    body: PutKeyBody, request: Request, metadata: Annotated[Metadata, Depends(call_metadata)]
) -> Response:
    state = bridge_state(request)
    message = vault_service_pb2.PutApiKeyRequest(
        api_key=body.api_key,
        provider=VAULT_ENUMS[body.provider] if body.provider else api_key_pb2.PROVIDER_UNSPECIFIED,
        validate=body.validate_key,
    )
    try:
        reply = await state.require_backends().vault.PutApiKey(
            message, metadata=metadata, timeout=state.settings.rpc_timeout_seconds
        )
    except grpc.aio.AioRpcError as error:
        raise errors.from_grpc(error, backend="vault") from None
    return _status_response(reply.status)


@router.get(
    "/v1/vault",
    summary="Whether the caller has a stored key, and its provider",
    response_model=VaultStatus,
    responses=_VAULT_ERRORS,
)
async def get_api_key_status(
    request: Request, metadata: Annotated[Metadata, Depends(call_metadata)]
) -> Response:
    state = bridge_state(request)
    try:
        reply = await state.require_backends().vault.GetApiKeyStatus(
            vault_service_pb2.GetApiKeyStatusRequest(),
            metadata=metadata,
            timeout=state.settings.rpc_timeout_seconds,
        )
    except grpc.aio.AioRpcError as error:
        raise errors.from_grpc(error, backend="vault") from None
    return _status_response(reply.status)


@router.delete(
    "/v1/vault",
    summary="Delete the caller's key (idempotent)",
    response_model=VaultStatus,
    responses=_VAULT_ERRORS,
)
async def delete_api_key(
    request: Request, metadata: Annotated[Metadata, Depends(call_metadata)]
) -> Response:
    state = bridge_state(request)
    try:
        await state.require_backends().vault.DeleteApiKey(
            vault_service_pb2.DeleteApiKeyRequest(),
            metadata=metadata,
            timeout=state.settings.rpc_timeout_seconds,
        )
    except grpc.aio.AioRpcError as error:
        raise errors.from_grpc(error, backend="vault") from None
    return Response(_NO_KEY, headers={"cache-control": "no-store"}, media_type="application/json")
