"""`python -m gateway_service`: serve GatewayService until SIGTERM."""

from __future__ import annotations

import logging
import sys

from gateway_service.config import GatewaySettings
from gateway_service.limits.tiers import missing_default
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
    _announce_limits(settings)
    from gateway_service.server import serve

    aio.run(serve(settings))
    return 0


def _announce_limits(settings: GatewaySettings) -> None:
    limits = settings.limits
    if not limits.tiers.source:
        _LOGGER.warning(
            "LIMITS_FILE is not set: there are no limits, so any signed-in user (anonymous "
            "sign-ins included) can spend the platform account without bound; set LIMITS_FILE "
            "(see the README's Limits section)"
        )
        return
    if missing_default(limits.tiers):
        _LOGGER.warning(
            "%s has no [tiers.default]: callers without a tier have no limits",
            limits.tiers.source,
        )
    _LOGGER.info(
        "limits: tiers %s from %s (tier claim %r), store %s, on store error: %s",
        ", ".join(sorted(limits.tiers.tiers)),
        limits.tiers.source,
        limits.tiers.claim,
        "Redis" if limits.redis_url else "in process (one replica)",
        limits.on_store_error,
    )


if __name__ == "__main__":
    sys.exit(main())
