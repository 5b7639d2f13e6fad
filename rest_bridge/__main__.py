"""`python -m rest_bridge`: serve the REST API with uvicorn until SIGTERM, then exit 0.

uvicorn's `auto` loop picks uvloop (a dependency); HTTP/1.1 is parsed by httptools through
`BridgeHttpProtocol`, which enforces the edge limits and answers unparseable or refused requests
with the OpenAI error envelope. `rest_bridge.uvicorn_config` builds the configuration (the tests
serve the bridge with the same one); Prometheus metrics have their own listener.
"""

from __future__ import annotations

import logging
import signal
import sys

import uvicorn

from rest_bridge.config import BridgeSettings
from rpc_common import tracing
from rpc_common.config import ConfigError
from rpc_common.logging import configure_logging

_LOGGER = logging.getLogger("rest_bridge")


def _ignore(signum: int, frame: object) -> None:
    """Stand-in handler: uvicorn re-raises the signal it caught once it has shut down."""


def main() -> int:
    try:
        settings = BridgeSettings.from_env()
    except ConfigError as exc:
        print(f"rest_bridge: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    configure_logging(settings.log_level, service="bridge")
    try:
        tracing.setup("rest_bridge")  # before the app: it decides whether the app is traced
    except ConfigError as exc:
        print(f"rest_bridge: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    from rest_bridge.app import create_app
    from rest_bridge.state import BridgeState
    from rest_bridge.tracing import install as install_tracing
    from rest_bridge.uvicorn_config import start_metrics_listener, uvicorn_config

    app = create_app(settings)
    install_tracing(app)  # the outermost middleware when tracing is on; nothing when off
    state: BridgeState = app.state.bridge
    server = uvicorn.Server(uvicorn_config(app, settings))
    # uvicorn drains on SIGTERM/SIGINT, restores the previous handlers and then re-raises the
    # signal; with the default handlers that would turn a clean drain into "killed by SIGTERM".
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _ignore)
    try:
        metrics = start_metrics_listener(settings, state.metrics)
    except OSError as exc:
        _LOGGER.error(
            "BRIDGE_METRICS_ADDR %s: cannot listen (%s)",
            settings.metrics_addr,
            exc.strerror or exc,
        )
        return 1
    _LOGGER.info(
        "REST bridge on %s -> gateway %s, vault %s; metrics %s",
        settings.listen_addr,
        settings.gateway_addr,
        settings.vault_addr,
        metrics.url if metrics else "off",
    )
    try:
        server.run()
    finally:
        if metrics is not None:
            metrics.stop()
        tracing.shutdown()  # the last spans, drained requests' included, go to the collector
    if not server.started:
        return 1  # e.g. the port was taken; uvicorn has logged why
    return 0


if __name__ == "__main__":
    sys.exit(main())
