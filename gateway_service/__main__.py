"""`python -m gateway_service`: serve GatewayService until SIGTERM."""

from __future__ import annotations

import logging
import sys

from gateway_service.config import GatewaySettings
from rpc_common import aio
from rpc_common.config import ConfigError
from rpc_common.logging import configure_logging

_LOGGER = logging.getLogger("gateway_service")


def main() -> int:
    try:
        settings = GatewaySettings.from_env()
    except ConfigError as exc:
        print(f"gateway_service: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    configure_logging(settings.log_level, service="gateway")
    _LOGGER.info(
        "Workers AI at %s (account %s); vault at %s",
        settings.workers_ai_base_url,
        settings.cloudflare_account_id,
        settings.vault_addr,
    )
    from gateway_service.server import serve

    aio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
