"""`GET /v1/usage`: the caller's admission state (SPEC §10), from `GatewayService.GetUsage`."""

from __future__ import annotations

from typing import Annotated, Any

import grpc
import orjson
from fastapi import APIRouter, Depends
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import Response

from native1api.gateway.v1 import gateway_service_pb2
from rest_bridge import errors
from rest_bridge.auth import Metadata, call_metadata
from rest_bridge.schemas import UsageReport, error_responses
from rest_bridge.state import bridge_state

router = APIRouter()

_LIMITS = ("requests_per_minute", "tokens_per_day", "max_concurrent_requests")
_RESETS = ("requests_per_minute", "tokens_per_day")


@router.get(
    "/v1/usage",
    summary="The caller's tier, limits, what remains of them, and today's usage",
    response_model=UsageReport,
    responses=error_responses(401, 403, 500, 503, 504),
)
async def get_usage(
    request: Request, metadata: Annotated[Metadata, Depends(call_metadata)]
) -> Response:
    state = bridge_state(request)
    try:
        reply = await state.require_backends().gateway.GetUsage(
            gateway_service_pb2.GetUsageRequest(),
            metadata=metadata,
            timeout=state.settings.rpc_timeout_seconds,
        )
    except grpc.aio.AioRpcError as error:
        raise errors.from_grpc(error, backend="gateway") from None
    return Response(
        orjson.dumps(usage_to_json(reply)),
        headers={"cache-control": "no-store"},
        media_type="application/json",
    )


def usage_to_json(reply: gateway_service_pb2.GetUsageResponse) -> dict[str, Any]:
    today = reply.today
    return {
        "object": "usage",
        "tier": reply.tier,
        "limits": _optional(reply.limits, _LIMITS),
        "remaining": _optional(reply.remaining, _LIMITS),
        "reset_seconds": _optional(reply.reset_seconds, _RESETS),
        "in_flight": reply.in_flight,
        "today": {
            "date": today.date,
            "requests": today.requests,
            "prompt_tokens": today.prompt_tokens,
            "completion_tokens": today.completion_tokens,
            "total_tokens": today.prompt_tokens + today.completion_tokens,
            "by_provider": {
                name: {
                    "requests": entry.requests,
                    "prompt_tokens": entry.prompt_tokens,
                    "completion_tokens": entry.completion_tokens,
                }
                for name, entry in sorted(today.by_provider.items())
            },
        },
    }


def _optional(message: Message, names: tuple[str, ...]) -> dict[str, Any]:
    """Each field's value, or None where it is unset (the tier has no such limit)."""
    return {name: getattr(message, name) if message.HasField(name) else None for name in names}
