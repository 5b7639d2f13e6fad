"""How the bridge is served: one `uvicorn.Config` for `python -m rest_bridge` and the tests alike.

Both run the same protocol class (`BridgeHttpProtocol`: httptools, the OpenAI error envelope for
refusals) with the same edge limits from `BridgeSettings`, so a test of a limit tests what
production runs. The Prometheus registry is served on its own listener (`BRIDGE_METRICS_ADDR`),
never on the public port.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import uvicorn
from fastapi import FastAPI
from prometheus_client import start_http_server

from rest_bridge.config import BridgeSettings, parse_listen_addr
from rest_bridge.http_protocol import EdgeLimits, protocol_class
from rest_bridge.metrics import BridgeMetrics
from rest_bridge.state import BridgeState

# How long an idle kept-alive connection stays open between requests (uvicorn closes it after).
KEEP_ALIVE_SECONDS: Final = 30


def uvicorn_config(
    app: FastAPI,
    settings: BridgeSettings,
    *,
    log_level: str | None = None,
    graceful_shutdown_seconds: float | None = None,
) -> uvicorn.Config:
    """The uvicorn configuration for `app` (built by `create_app(settings)`).

    `log_level` and `graceful_shutdown_seconds` default to the settings' own; tests shorten them.
    """
    state = app.state.bridge
    assert isinstance(state, BridgeState), "app must come from rest_bridge.app.create_app"
    grace = settings.shutdown_grace_seconds
    if graceful_shutdown_seconds is not None:
        grace = graceful_shutdown_seconds
    return uvicorn.Config(
        app,
        host=settings.listen_host,
        port=settings.listen_port,
        loop="auto",  # uvloop (a dependency)
        http=protocol_class(EdgeLimits.from_settings(settings), state.metrics),
        ws="none",  # no WebSocket routes; an upgrade would leave the connection count
        lifespan="on",
        log_config=None,  # keep configure_logging's redacting handler
        log_level=(log_level or settings.log_level).lower(),
        access_log=False,  # the bridge writes its own access line (route template, request id)
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=max(1, math.ceil(grace)),
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )


@dataclass(frozen=True, slots=True)
class MetricsListener:
    """The running Prometheus listener: where it listens and how to stop it."""

    host: str
    port: int
    stop: Callable[[], None]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"


def start_metrics_listener(
    settings: BridgeSettings, metrics: BridgeMetrics
) -> MetricsListener | None:
    """Serve `metrics` on `settings.metrics_addr` in a daemon thread; None when it is off.

    Raises OSError when the address cannot be bound (taken, not local).
    """
    if not settings.metrics_addr:
        return None
    host, port = parse_listen_addr("BRIDGE_METRICS_ADDR", settings.metrics_addr)
    server, thread = start_http_server(port, host, registry=metrics.registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return MetricsListener(host, int(server.server_address[1]), stop)
