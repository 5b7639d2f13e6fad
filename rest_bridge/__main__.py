"""`python -m rest_bridge`: serve the REST API with uvicorn until SIGTERM, then exit 0.

uvicorn's `auto` loop picks uvloop (a dependency); HTTP/1.1 is parsed by httptools through
`BridgeHttpProtocol`, which answers unparseable requests with the OpenAI error envelope.
"""

from __future__ import annotations

import logging
import signal
import sys

import uvicorn

from rest_bridge.config import BridgeSettings
from rest_bridge.http_protocol import BridgeHttpProtocol
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
    from rest_bridge.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=settings.listen_host,
        port=settings.listen_port,
        loop="auto",
        http=BridgeHttpProtocol,
        lifespan="on",
        log_config=None,  # keep configure_logging's redacting handler
        log_level=settings.log_level.lower(),
        access_log=False,  # the bridge writes its own access line (route template, request id)
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)
    # uvicorn drains on SIGTERM/SIGINT, restores the previous handlers and then re-raises the
    # signal; with the default handlers that would turn a clean drain into "killed by SIGTERM".
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _ignore)
    _LOGGER.info(
        "REST bridge on %s -> gateway %s, vault %s",
        settings.listen_addr,
        settings.gateway_addr,
        settings.vault_addr,
    )
    server.run()
    if not server.started:
        return 1  # e.g. the port was taken; uvicorn has logged why
    return 0


if __name__ == "__main__":
    sys.exit(main())
