"""What every route needs, kept on `app.state.bridge`: settings, metrics and the gRPC backends."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from rest_bridge.config import BridgeSettings
from rest_bridge.grpc_clients import Backends
from rest_bridge.metrics import BridgeMetrics


@dataclass(slots=True)
class BridgeState:
    settings: BridgeSettings
    metrics: BridgeMetrics
    backends: Backends | None = None  # opened by the lifespan, inside the running loop

    def require_backends(self) -> Backends:
        if self.backends is None:
            raise RuntimeError("the app's lifespan has not run: no gRPC channels")
        return self.backends


def bridge_state(request: Request) -> BridgeState:
    state: BridgeState = request.app.state.bridge
    return state
