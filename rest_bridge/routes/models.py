"""`GET /v1/models`: the models this caller can use, as an OpenAI list object."""

from __future__ import annotations

from typing import Annotated

import grpc
import orjson
from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from native1api.gateway.v1 import gateway_service_pb2
from rest_bridge import errors
from rest_bridge.auth import Metadata, call_metadata
from rest_bridge.providers import gateway_provider_name
from rest_bridge.schemas import ModelList, error_responses
from rest_bridge.state import bridge_state

router = APIRouter()


@router.get(
    "/v1/models",
    summary="List the models the caller can use",
    response_model=ModelList,
    responses=error_responses(401, 403, 429, 500, 502, 503, 504),
)
async def list_models(
    request: Request, metadata: Annotated[Metadata, Depends(call_metadata)]
) -> Response:
    state = bridge_state(request)
    try:
        reply = await state.require_backends().gateway.ListModels(
            gateway_service_pb2.ListModelsRequest(),
            metadata=metadata,
            timeout=state.settings.rpc_timeout_seconds,
        )
    except grpc.aio.AioRpcError as error:
        raise errors.from_grpc(error, backend="gateway") from None
    data = [
        {"id": model.id, "object": "model", "created": model.created, "owned_by": model.owned_by}
        for model in reply.models
    ]
    return Response(
        orjson.dumps({"object": "list", "data": data}),
        headers={"x-native1api-provider": gateway_provider_name(reply.provider)},
        media_type="application/json",
    )
