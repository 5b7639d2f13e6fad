"""`POST /v1/chat/completions`: JSON in, `CreateChatCompletion` or `StreamChatCompletion` out."""

from __future__ import annotations

import time
from typing import Final

import grpc
import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from native1api.gateway.v1 import gateway_service_pb2
from rest_bridge import errors
from rest_bridge.auth import call_metadata
from rest_bridge.body import read_json
from rest_bridge.disconnect import ClientGone, unless_disconnected
from rest_bridge.middleware import CLIENT_CLOSED, started_at
from rest_bridge.providers import OVERHEAD_HEADER, PROVIDER_HEADER, gateway_provider_name
from rest_bridge.ratelimit import state_headers
from rest_bridge.schemas import CHAT_REQUEST_SCHEMA, CHAT_RESPONSE_CONTENT, error_responses
from rest_bridge.sse import ChatStream
from rest_bridge.state import bridge_state
from rpc_common.openai import completion_to_json, request_from_json
from rpc_common.status import RpcError

router = APIRouter()


@router.post(
    "/v1/chat/completions",
    summary="Create a chat completion (JSON, or SSE when `stream` is true)",
    response_class=Response,
    responses={
        200: {"description": "The completion or its stream.", "content": CHAT_RESPONSE_CONTENT},
        **error_responses(400, 401, 403, 404, 413, 415, 429, 500, 502, 503, 504),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": CHAT_REQUEST_SCHEMA}},
        }
    },
)
async def create_chat_completion(request: Request) -> Response:
    state = bridge_state(request)
    # Presence of a credential first: an anonymous caller learns nothing about the body rules.
    metadata = call_metadata(request)
    body = await read_json(request)
    try:
        parsed = request_from_json(body)
    except RpcError as error:
        raise errors.from_rpc_error(error) from None
    gateway = state.require_backends().gateway
    settings = state.settings
    if parsed.stream:
        stream = gateway.StreamChatCompletion(
            # Chunks the gateway has ready together come in one message (gateway batching.py).
            gateway_service_pb2.StreamChatCompletionRequest(
                request=parsed.request, allow_batches=True
            ),
            metadata=metadata,
        )
        return ChatStream(
            stream,
            include_usage=parsed.request.stream_options.include_usage,
            hold_seconds=settings.first_chunk_wait_seconds,
            keepalive_seconds=settings.keepalive_seconds,
            metrics=state.metrics,
            started=started_at(request.scope),
        )
    call = gateway.CreateChatCompletion(
        gateway_service_pb2.CreateChatCompletionRequest(request=parsed.request),
        metadata=metadata,
    )
    try:
        reply = await unless_disconnected(call, request.receive)
    except grpc.aio.AioRpcError as error:
        raise errors.from_grpc(error, backend="gateway") from None
    except ClientGone:
        # Nobody reads this; it makes the access log and metrics say what happened.
        return Response(status_code=CLIENT_CLOSED)
    provider = gateway_provider_name(reply.provider)
    completion = reply.completion
    if completion.HasField("usage"):
        state.metrics.record_usage(provider, completion.model, completion.usage)
    content = orjson.dumps(completion_to_json(completion))
    upstream = reply.upstream_duration.seconds + reply.upstream_duration.nanos / 1e9
    overhead_ms = max(0.0, (time.perf_counter() - started_at(request.scope) - upstream) * 1000)
    response = Response(content, media_type="application/json")
    response.raw_headers += [
        (PROVIDER_HEADER, provider.encode("ascii")),
        (OVERHEAD_HEADER, f"{overhead_ms:.2f}".encode("ascii")),
        # The call has ended, so its initial metadata is already here.
        *state_headers(await call.initial_metadata()),
    ]
    return response


ROUTE: Final = next(r for r in router.routes if getattr(r, "path", "") == "/v1/chat/completions")
"""The route, for the fast path that serves it ahead of the router (rest_bridge/fast_path.py)."""
