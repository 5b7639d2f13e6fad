"""`GET /v1/usage`: the caller's admission state (SPEC §10), from `GatewayService.GetUsage`.

`?from=YYYY-MM-DD&to=YYYY-MM-DD` adds the caller's history from the gateway's usage ledger; the
gateway checks the dates (400 in the OpenAI envelope for a bad one, `from` after `to`, or more
than 366 days).
"""

from __future__ import annotations

from typing import Annotated, Any

import grpc
import orjson
from fastapi import APIRouter, Depends, Query
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
    summary="The caller's tier, limits, what remains of them, today's usage, and history",
    response_model=UsageReport,
    responses=error_responses(400, 401, 403, 500, 503, 504),
)
async def get_usage(
    request: Request,
    metadata: Annotated[Metadata, Depends(call_metadata)],
    first: Annotated[
        str | None, Query(alias="from", description="First UTC day of the history, YYYY-MM-DD.")
    ] = None,
    last: Annotated[
        str | None,
        Query(alias="to", description="Last UTC day, YYYY-MM-DD, inclusive (default: today)."),
    ] = None,
) -> Response:
    state = bridge_state(request)
    try:
        reply = await state.require_backends().gateway.GetUsage(
            gateway_service_pb2.GetUsageRequest(from_date=first, to_date=last),
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
    report: dict[str, Any] = {
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
    if reply.HasField("history"):
        report["history"] = history_to_json(reply.history)
    return report


def history_to_json(history: gateway_service_pb2.UsageHistory) -> dict[str, Any]:
    return {
        "from": history.from_date,
        "to": history.to_date,
        "days": [
            {
                "date": day.date,
                **_totals(day),
                "by_model": [
                    {"provider": entry.provider, "model": entry.model, **_totals(entry)}
                    | {"estimated_requests": entry.estimated_requests}
                    for entry in day.by_model
                ],
            }
            for day in history.days
        ],
    }


def _totals(
    message: gateway_service_pb2.UsageHistoryDay | gateway_service_pb2.UsageHistoryEntry,
) -> dict[str, Any]:
    return {
        "requests": message.requests,
        "prompt_tokens": message.prompt_tokens,
        "completion_tokens": message.completion_tokens,
        "total_tokens": message.total_tokens,
        "cost_usd": message.cost_usd if message.HasField("cost_usd") else None,
        "unpriced_requests": message.unpriced_requests,
    }


def _optional(message: Message, names: tuple[str, ...]) -> dict[str, Any]:
    """Each field's value, or None where it is unset (the tier has no such limit)."""
    return {name: getattr(message, name) if message.HasField(name) else None for name in names}
