"""`/healthz` (the process is up) and `/readyz` (both backends serve).

Prometheus metrics are not served here: they have their own listener (`BRIDGE_METRICS_ADDR`,
`rest_bridge.uvicorn_config.start_metrics_listener`), so the public port does not expose them.
"""

from __future__ import annotations

from typing import Final

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from rest_bridge import errors
from rest_bridge.schemas import HealthStatus, ReadyStatus, error_responses
from rest_bridge.state import bridge_state

router = APIRouter()

_ALIVE: Final = orjson.dumps({"status": "ok"})


@router.get("/healthz", summary="Liveness: the process is up", response_model=HealthStatus)
async def healthz() -> Response:
    return Response(_ALIVE, media_type="application/json")


@router.get(
    "/readyz",
    summary="Readiness: both gRPC backends answer their health checks",
    response_model=ReadyStatus,
    responses=error_responses(503),
)
async def readyz(request: Request) -> Response:
    state = bridge_state(request)
    backends = state.backends
    if backends is None:
        raise errors.ApiError(
            503, "Not ready: starting up.", errors.UNAVAILABLE_ERROR, code="not_ready"
        )
    ready = await backends.ready(state.settings.ready_timeout_seconds)
    down = [name for name, ok in ready.items() if not ok]
    if down:
        raise errors.ApiError(
            503,
            f"Not ready: the {' and '.join(down)} service{'s are' if len(down) > 1 else ' is'} "
            "not serving.",
            errors.UNAVAILABLE_ERROR,
            code="not_ready",
        )
    return Response(
        orjson.dumps({"status": "ready", "backends": ready}),
        headers={"cache-control": "no-store"},
        media_type="application/json",
    )
